// IoBackend: the one interface every NVMe-tier read and write goes through.
//
// Like LevelDB's Env, it is what makes the tier testable: the real backend is io_uring with
// O_DIRECT files and the host pool registered as fixed buffers (a read lands straight in the
// shared-memory slot a client will read), and a fault-injecting decorator (selected by config,
// for tests) produces EIO, short reads, ENOSPC and slow completions beneath the same calls.
//
// Submission is batched: queue() any number of requests, then submit() once. Completions are
// reaped in one place (reap()), never delivered by callback, so their owner decides when to run
// them. completion_fd() becomes readable when completions may be waiting: the daemon's event loop
// watches it. Buffer ownership: from queue() until its completion is reaped, a request's buffer
// belongs to the kernel; the caller must neither reuse nor free it.
//
// Thread safety: none; one owner thread (the daemon's server thread).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "tierkv/status.h"

namespace tierkv::storage {

enum class IoOp : uint8_t {
  kRead = 0,
  kWrite = 1,
  kDelay = 2,  // touches no file: completes with result 0 after `delay_ns` (slow-disk faults)
};

struct IoRequest {
  IoOp op = IoOp::kRead;
  uint32_t file = 0;      // index into the files given to register_files()
  uint64_t offset = 0;    // multiple of 4096 (O_DIRECT)
  std::byte* buf = nullptr;  // 4096-aligned
  uint32_t length = 0;    // multiple of 4096
  uint64_t user_data = 0;
  uint64_t delay_ns = 0;  // kDelay only
};

struct IoCompletion {
  uint64_t user_data = 0;
  int32_t result = 0;  // bytes transferred, or -errno
};

// How well the queue is kept busy, counted since the backend was made (stats and tierkv-bench
// nvme read them to tell a starved queue from a slow disk). A request counts from queue() until
// its completion is reaped, so a reaper that comes late shows as depth, not as idle time.
struct IoCounters {
  uint64_t submits = 0;    // submit() calls that entered the kernel
  uint64_t submit_ns = 0;  // time the owner thread spent in them
  uint64_t busy_ns = 0;    // time with at least one request queued or in flight
  uint64_t depth_ns = 0;   // requests queued or in flight, integrated over time: depth_ns / busy_ns
                           // is the mean queue depth while busy
};

struct IoBackendOptions {
  uint32_t queue_depth = 64;  // submission queue entries; also the most requests in flight
  // Reads and writes of at least this many bytes go to the kernel's I/O workers (IOSQE_ASYNC)
  // instead of being issued inside submit(), which blocks while the device's request queue is
  // full: many large requests at once (32 of 32 MiB) otherwise hold the submitting thread for
  // hundreds of milliseconds. 0 = none.
  uint64_t async_min_bytes = 0;
};

class IoBackend {
 public:
  virtual ~IoBackend() = default;

  // The files requests name by index, opened by the caller (O_DIRECT) and kept open by it.
  virtual Status register_files(std::span<const int> fds) = 0;
  // Memory requests read into or write from. Registered as fixed buffers where the kernel allows
  // (it pins the pages); where it does not (RLIMIT_MEMLOCK), requests still go straight to and
  // from this memory, only without the pinning shortcut. Returns whether it was registered.
  virtual Result<bool> register_memory(std::byte* base, uint64_t bytes) = 0;

  // False when in_flight() + queued requests reach the queue depth: reap, then try again.
  virtual bool queue(const IoRequest& request) = 0;
  virtual Status submit() = 0;
  // Moves up to out.size() finished requests into `out`; never blocks. Returns how many.
  virtual size_t reap(std::span<IoCompletion> out) = 0;
  // Blocks until at least one completion is ready or `timeout` passes.
  virtual Status wait(std::chrono::milliseconds timeout) = 0;
  // Readable when completions may be ready; the caller drains it (read 8 bytes) then reaps.
  virtual int completion_fd() const = 0;
  // Requests submitted (or queued) and not yet reaped.
  virtual uint32_t in_flight() const = 0;
  virtual uint32_t queue_depth() const = 0;
  virtual IoCounters counters() const = 0;
};

Result<std::unique_ptr<IoBackend>> make_uring_backend(const IoBackendOptions& options);

// Faults the decorator injects, each counted over the requests of its kind (0 = never).
struct FaultPlan {
  uint32_t read_eio_every = 0;     // every Nth read fails with EIO
  uint32_t write_eio_every = 0;    // every Nth write fails with EIO
  uint32_t short_read_every = 0;   // every Nth read returns half its bytes
  uint64_t enospc_after_bytes = 0; // writes fail with ENOSPC once this many bytes were written
  uint32_t slow_every = 0;         // every Nth request completes `slow_ms` late
  uint32_t slow_ms = 0;
  bool any() const {
    return read_eio_every || write_eio_every || short_read_every || enospc_after_bytes ||
           (slow_every && slow_ms);
  }
};

// Wraps `inner`: requests pass through, and the plan's faults replace or delay their results.
// Delays run inside `inner` (io_uring timeouts), so completion_fd() stays the one fd to watch.
std::unique_ptr<IoBackend> make_fault_injecting_backend(std::unique_ptr<IoBackend> inner,
                                                        const FaultPlan& plan);

}  // namespace tierkv::storage
