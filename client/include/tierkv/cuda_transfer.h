// The engine-side GPU path: chunks move between tierkv's shared-memory host pool and an engine's
// KV cache on a GPU without a host-side copy.
//
//   auto pool = PinnedHostPool::pin(client);                  // once per process
//   auto xfer = GpuTransfer::create_paged(*pool, ns, cache_view, device);   // once per cache
//   auto lease = client->load(ns, tokens);                    // lease cached chunks
//   xfer->load(*lease, 0, lease->chunks(), block_table, stream);   // enqueue, returns at once
//   for (layer ...) { xfer->wait_layer(layer, stream); attention(layer); }
//   xfer->synchronize(); lease->release();
//
// Loads: the copy engine DMAs each chunk's rows straight from its pinned shm slot into a device
// staging buffer, and a scatter kernel moves them into the paged (or flat) cache, layer by layer:
// layer l of every chunk is copied and scattered before layer l + 1 (in groups of layers where
// one layer of a chunk is small: GpuTransferOptions::min_copy_bytes), and an event per layer fires
// when layer l has arrived, so attention of layer l can start while later layers are in flight.
// Copies and kernels overlap through a ring of staging slots (copy of piece i + 1 while piece i
// is scattered). Stores go the other way: a gather kernel packs the cache's rows into staging and
// the copy engine writes them into the PutLease's slots.
//
// Streams and events: every operation starts after the work already enqueued on the caller's
// `stream` at the time of the call (it records an event there), and then runs on two streams the
// GpuTransfer owns (one for copies, one for kernels). The caller's stream is never blocked by the
// transfer unless the caller asks: wait_layer()/wait_all() enqueue waits on it. Events are owned
// by the GpuTransfer and refer to its latest operation.
//
// Submission: a large load is thousands of copies and launches, more than a CUDA stream queues
// without blocking the submitting thread, so a worker thread owned by the GpuTransfer submits
// them and load()/store() return at once. wait_layer() blocks the caller only until layer l's
// work has been submitted (normally long done), never until it has run. An operation called while
// the previous one is still being submitted waits for that submission to finish.
//
// Lifetimes: a lease's slots must stay leased until the copies that read or write them are done:
// call synchronize() (or poll done()) before LoadLease::release() or PutLease::commit(). The
// engine's cache must outlive the GpuTransfer. Staging memory and events are allocated once, at
// create(); an operation allocates nothing on the device or in pinned memory.
//
// Thread safety: PinnedHostPool is immutable and may be shared. A GpuTransfer is used by one
// thread at a time (an engine keeps one per device or per worker).
//
// This header needs no CUDA headers: GpuStream is CUstream_st*, the type cudaStream_t names (a
// torch stream's .cuda_stream is one, as an integer). In a libtierkv built without CUDA,
// PinnedHostPool::pin() and every create() return FailedPrecondition saying so.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "tierkv/client.h"
#include "tierkv/kernels/flat_kv.h"
#include "tierkv/kernels/paged_kv.h"
#include "tierkv/status.h"

struct CUstream_st;
struct CUevent_st;

namespace tierkv {

class DaemonGpuPool;  // tierkv/gpu_pool.h

using GpuStream = CUstream_st*;  // = cudaStream_t; nullptr is the legacy default stream
using GpuEvent = CUevent_st*;    // = cudaEvent_t

// True if this libtierkv was built with CUDA. Says nothing about whether a GPU is present.
bool gpu_transfer_built();

// The Client's host pool, registered with the CUDA driver (cudaHostRegister, portable to every
// device), so that copies between it and a GPU go by DMA at full PCIe speed. Registration pins
// the pool's pages; it costs about as long as touching the memory once, at pin time. Keeps the
// Client (and so the mapping) alive; unregisters when destroyed.
class PinnedHostPool {
 public:
  static Result<std::shared_ptr<PinnedHostPool>> pin(std::shared_ptr<Client> client);
  ~PinnedHostPool();
  PinnedHostPool(const PinnedHostPool&) = delete;
  PinnedHostPool& operator=(const PinnedHostPool&) = delete;

  [[nodiscard]] const std::shared_ptr<Client>& client() const { return client_; }
  [[nodiscard]] std::span<std::byte> region() const { return region_; }
  // True if [p, p + bytes) lies inside the pinned region.
  [[nodiscard]] bool contains(const std::byte* p, uint64_t bytes) const;
  // Wall-clock seconds the registration took.
  [[nodiscard]] double pin_seconds() const { return pin_seconds_; }

 private:
  PinnedHostPool() = default;
  std::shared_ptr<Client> client_;
  std::span<std::byte> region_;
  bool registered_ = false;
  double pin_seconds_ = 0;
};

struct GpuTransferOptions {
  // Device memory the pipeline stages chunks in, split into `staging_slots` slots; each slot is
  // grown to hold at least one piece's rows of one chunk. More slots overlap copies and kernels
  // more finely; larger slots mean fewer launches. 256 MiB in 8 slots keeps 32-MiB pieces in
  // flight on each side, enough to keep PCIe busy.
  uint64_t staging_bytes = 256ull << 20;
  uint32_t staging_slots = 8;
  // A load moves layers in groups of the fewest layers whose rows of one chunk make at least
  // this many contiguous bytes (one copy per chunk per group): very small copies cost PCIe
  // bandwidth, while smaller groups make the first layers ready sooner. 0 = one layer at a time.
  // Layer events fire per group. With batched copies, 1 MiB (one layer of an 8B-class chunk)
  // already reaches ~99% of a single large copy on an H100; without them, raise it (4 MiB).
  uint64_t min_copy_bytes = 1ull << 20;
  // Submit each piece's copies with one cudaMemcpyBatchAsync (CUDA 12.8+) rather than one
  // cudaMemcpyAsync per chunk; falls back to the latter if the driver refuses the batch or the
  // toolkit predates it. (On an H100, per-chunk calls of 1 MiB reach ~85% of PCIe; batched ~99%.)
  bool batch_copies = true;
  // The most tokens one operation may move (sizes the block-table buffers, allocated once).
  uint64_t max_tokens = 1ull << 20;
};

// Moves chunks of one namespace between the pinned host pool and one engine KV cache on one GPU.
// See the file comment for streams, events, lifetimes and thread safety.
class GpuTransfer {
 public:
  // `cache` holds device pointers (of `device`) to the engine's per-layer K and V tensors; its
  // shape must match the namespace's layout (layers, kv heads, head dim, dtype size).
  static Result<std::unique_ptr<GpuTransfer>> create_paged(std::shared_ptr<PinnedHostPool> pool,
                                                           const Namespace& ns,
                                                           const kernels::PagedKvView& cache,
                                                           int device,
                                                           const GpuTransferOptions& options = {});
  static Result<std::unique_ptr<GpuTransfer>> create_flat(std::shared_ptr<PinnedHostPool> pool,
                                                          const Namespace& ns,
                                                          const kernels::FlatKvView& cache,
                                                          int device,
                                                          const GpuTransferOptions& options = {});
  ~GpuTransfer();
  GpuTransfer(const GpuTransfer&) = delete;
  GpuTransfer& operator=(const GpuTransfer&) = delete;

  // Lets load() take leases from DaemonGpuPool::load, whose chunks in the daemon's GPU tier are
  // scattered straight from its pool (device to device, one launch per layer group for all of
  // them) while the rest come from host RAM as ever. The pool must be on this transfer's device;
  // the transfer keeps it open. Allocates the offset table (max_tokens / chunk_tokens entries).
  Status use_gpu_tier(std::shared_ptr<DaemonGpuPool> pool);

  // Loads chunks [first_chunk, first_chunk + count) of `lease` (the prompt's chunks from its
  // start) into the sequence's tokens [first_chunk * chunk_tokens, ...), whose blocks
  // `block_table` lists from token 0 (a flat cache ignores it; pass {}). Enqueues and returns.
  // Chunks of the lease that lie in the daemon's GPU pool need use_gpu_tier() first.
  Status load(const LoadLease& lease, size_t first_chunk, size_t count,
              std::span<const int32_t> block_table, GpuStream stream);
  // The general form: chunk i (a whole chunk inside the pinned pool) goes to tokens
  // [first_token + i * chunk_tokens, ...).
  Status load_chunks(std::span<const std::byte* const> chunks, std::span<const int32_t> block_table,
                     uint64_t first_token, GpuStream stream);

  // Stores the sequence's tokens into every slot of `lease` that needs_write(i) (chunk i =
  // tokens [i * chunk_tokens, ...)). Enqueues and returns; synchronize() before lease.commit().
  Status store(const PutLease& lease, std::span<const int32_t> block_table, GpuStream stream);
  // The general form: tokens [first_token + i * chunk_tokens, ...) into chunk i (a whole chunk's
  // slot inside the pinned pool).
  Status store_chunks(std::span<std::byte* const> chunks, std::span<const int32_t> block_table,
                      uint64_t first_token, GpuStream stream);

  // Makes `stream`'s later work wait until layer `layer` of the latest load is in the cache.
  // (Layers arrive in groups, GpuTransferOptions::min_copy_bytes; this waits for the group.)
  Status wait_layer(uint32_t layer, GpuStream stream) const;
  // Makes `stream`'s later work wait until every operation so far is complete.
  Status wait_all(GpuStream stream) const;
  // Whether layer `layer` of the latest load is in the cache (polls; never blocks).
  [[nodiscard]] bool layer_ready(uint32_t layer) const;
  // The event that fires when layer `layer` of the latest load is in the cache; owned here.
  // Waits (like wait_layer) until that layer's work has been submitted.
  [[nodiscard]] GpuEvent layer_event(uint32_t layer) const;
  // Blocks the calling thread until every operation so far is complete (copies and kernels);
  // then leases may be released or committed. Reports any error the kernels hit (a block id out
  // of range that slipped past validation, a CUDA fault).
  Status synchronize();
  // Whether every operation so far is complete (polls; never blocks).
  [[nodiscard]] bool done() const;

  [[nodiscard]] uint32_t num_layers() const;
  [[nodiscard]] int device() const;

 private:
  struct Impl;
  explicit GpuTransfer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tierkv
