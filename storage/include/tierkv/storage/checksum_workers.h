// ChecksumWorkers: a small pool of threads that computes chunk checksums (NvmeStore::checksum,
// xxh3-64) off the owner's thread and hands the results back the way IoBackend hands back I/O
// completions: the owner submits jobs, later reaps results, and watches one eventfd that becomes
// readable when results are waiting. The eventfd may be the owner's own I/O completion fd, so one
// fd in the event loop covers both.
//
// Why: a 2 MiB chunk takes the one server thread of the daemon ~100 µs or more to hash. Done
// inline, every chunk read from NVMe holds up the next request and the refill of the I/O queue;
// done here, the server thread only submits and reaps.
//
// Ownership: a job names memory the caller owns; it must stay mapped and unchanged from submit()
// until its result is reaped (the cache engine keeps the slot leased and in its loading state).
// The pool allocates nothing after start(): jobs and results live in rings of `capacity` entries.
//
// Threads: submit(), reap(), outstanding(), counters and the destructor belong to one owner thread.
// The workers share only the rings, under one mutex that is never held while hashing. The
// destructor finishes the jobs being hashed, drops those not started, and joins the workers, so
// the memory jobs name may be unmapped after it returns.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <thread>
#include <vector>

#include "tierkv/status.h"

namespace tierkv::storage {

struct ChecksumJob {
  const std::byte* data = nullptr;
  uint64_t bytes = 0;
  uint64_t token = 0;  // the caller's; returned with the result
};

struct ChecksumDone {
  uint64_t token = 0;
  uint64_t checksum = 0;
};

class ChecksumWorkers {
 public:
  // `threads` in [1, 64]; `capacity` >= 1 is the most jobs submitted and not yet reaped.
  // `notify_fd`: an eventfd the workers add 1 to whenever a result is ready (not owned; it must
  // outlive the pool), or -1 for the pool's own.
  static Result<std::unique_ptr<ChecksumWorkers>> start(uint32_t threads, uint32_t capacity,
                                                        int notify_fd = -1);
  ~ChecksumWorkers();
  ChecksumWorkers(const ChecksumWorkers&) = delete;
  ChecksumWorkers& operator=(const ChecksumWorkers&) = delete;

  // Queues a job; false (nothing queued) when `capacity` jobs are outstanding.
  bool submit(const ChecksumJob& job);
  // Moves up to out.size() finished results into `out`, in the order they finished; never blocks.
  size_t reap(std::span<ChecksumDone> out);
  // Readable when results may be waiting: the owner drains it (read 8 bytes), then reaps.
  int completion_fd() const { return notify_fd_; }
  // Jobs submitted and not yet reaped.
  uint32_t outstanding() const { return outstanding_; }
  uint32_t threads() const { return static_cast<uint32_t>(threads_.size()); }
  // Time the workers spent hashing, summed over them, and bytes hashed, since start().
  uint64_t busy_ns() const;
  uint64_t bytes_hashed() const;
  // Tests only: while held, workers start no new job (one already being hashed finishes), so a
  // test can act while a job is outstanding. Any thread.
  void hold_for_test(bool hold);

 private:
  ChecksumWorkers(uint32_t capacity, int notify_fd, bool own_fd);
  void run();

  const uint32_t capacity_;
  const int notify_fd_;
  const bool own_fd_;
  uint32_t outstanding_ = 0;  // owner thread only

  mutable std::mutex mu_;
  std::condition_variable wake_;
  // Guarded by mu_: two rings of capacity_ entries each.
  std::vector<ChecksumJob> jobs_;
  size_t job_head_ = 0, job_count_ = 0;
  std::vector<ChecksumDone> done_;
  size_t done_head_ = 0, done_count_ = 0;
  bool stopping_ = false;
  bool held_ = false;
  uint64_t busy_ns_ = 0;
  uint64_t bytes_ = 0;

  std::vector<std::thread> threads_;
};

}  // namespace tierkv::storage
