// GpuTier: the bookkeeping of the GPU tier — which host chunks have a copy in the daemon's GPU
// pool, which are hot enough to get one, the copies on their way, the leases clients hold on GPU
// slots, and the order in which GPU copies are evicted.
//
// A GPU copy is an extra copy of a chunk in host RAM: it is made from the host slot (promotion,
// once the chunk has been read `promote_after_loads` times) and goes when the host chunk goes, so
// dropping it never loses anything. Chunks are named by their host slot; the GPU pool is carved
// into slots like the host tier (storage::SlabSlotPool, tier "gpu") and evicts least recently
// used leaves first (LeafFirstLru: a chunk whose extension is also on the GPU stays). A leased
// GPU slot is neither evicted nor reused: when its host chunk goes meanwhile, it lingers (zombie)
// until the last lease is released. A copy in flight whose host chunk goes is discarded when it
// lands.
//
// The bytes move in storage::GpuMemory (CUDA, or a stand-in in tests). The owner (CacheEngine)
// holds a lease on a host slot while its copy is in flight and drops it when poll() reports the
// copy ended, so the source is never rewritten under the DMA.
//
// GPU life cycle of a slot:  free -> copying -> ready -> free, or ready -> zombie (host chunk gone
// while leased) -> free; copying -> free when the copy fails or its host chunk went meanwhile.
//
// Thread safety: none; one owner thread (the daemon's server thread), which calls everything.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <span>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "tierkv/protocol.h"
#include "tierkv/scheduler/leaf_first_lru.h"
#include "tierkv/scheduler/tier_counters.h"
#include "tierkv/status.h"
#include "tierkv/storage/gpu_memory.h"
#include "tierkv/storage/slab_slot_pool.h"

namespace tierkv::scheduler {

using SessionId = uint64_t;

struct GpuTierOptions {
  int device = 0;               // CUDA device index; -1 = the tier is off
  uint64_t capacity_bytes = 0;  // bytes of GPU memory for the tier; 0 = the tier is off
  uint64_t slab_bytes = 64ull << 20;
  uint64_t min_slot_bytes = 64ull << 10;
  uint32_t promote_after_loads = 2;  // a host chunk read this many times is copied up
  uint32_t copies_in_flight = 16;    // promotion copies at once, at most
  uint32_t max_queued = 4096;        // hot chunks waiting for a copy, at most
  // The pool's slot options; validate() names the bad [gpu] option.
  [[nodiscard]] storage::SlotPoolOptions pool_options() const {
    return {"gpu", capacity_bytes, slab_bytes, min_slot_bytes};
  }
  Status validate() const;
};

class GpuTier {
 public:
  using SlotId = storage::SlotId;
  static constexpr SlotId kNoSlot = storage::kNoSlot;

  // `memory` is the pool (its bytes() rounded down to whole slabs are used); `host_slots` is the
  // host pool's max_slot_ids(). options must validate().
  GpuTier(const GpuTierOptions& options, std::unique_ptr<storage::GpuMemory> memory,
          uint32_t host_slots);
  ~GpuTier();
  GpuTier(const GpuTier&) = delete;
  GpuTier& operator=(const GpuTier&) = delete;

  [[nodiscard]] const storage::GpuMemory& memory() const { return *memory_; }
  [[nodiscard]] int completion_fd() const { return memory_->completion_fd(); }
  [[nodiscard]] const storage::SlabSlotPool& pool() const { return pool_; }

  // --- what the host tier reports ----------------------------------------------------------------
  // Host chunk `host` was read (a load, or a hand-over to a prefill session). Once it has been
  // read promote_after_loads times and has no GPU copy (nor one on its way), it is queued for
  // promotion; next_queued() hands it out.
  void count_read(SlotId host);
  // Host chunk `host` leaves host RAM: its reads are forgotten, it leaves the queue, and its GPU
  // copy goes (now, or when its last lease is released; a copy in flight is discarded when it
  // lands).
  void drop_host(SlotId host);
  // The ready GPU slot holding host chunk `host`, or kNoSlot.
  [[nodiscard]] SlotId resident(SlotId host) const;

  // --- promotion -------------------------------------------------------------------------------
  // Whether another copy may start now.
  [[nodiscard]] bool can_start() const;
  // The next queued host chunk (it leaves the queue), or kNoSlot.
  SlotId next_queued();
  // Copies `bytes` of host chunk `host` from `src` into a new GPU slot, evicting GPU copies
  // leaf-first to make room; `parent_host` is the host slot of the chunk it extends (kNoSlot for
  // none). Returns false when the chunk has a GPU copy (or one on its way) already, and — counting
  // a failure — when no GPU slot can be had (every one leased, copying, or holding a parent) or
  // the copy cannot be enqueued. On true, the caller keeps `src` leased until poll() reports
  // `host`.
  bool start_copy(SlotId host, SlotId parent_host, const std::byte* src, uint64_t bytes);
  // Reaps finished copies (their GPU slots become ready, or are freed when the copy failed or
  // the host chunk went meanwhile) and appends to `ended` the host slot of each: the caller
  // drops its lease on it.
  void poll(std::vector<SlotId>& ended);

  // --- sessions and leases -----------------------------------------------------------------------
  // The session opened the pool (gpu_attach).
  void attach(SessionId session) { attached_.insert(session); }
  [[nodiscard]] bool attached(SessionId session) const { return attached_.count(session) != 0; }
  // Leases ready GPU slot `gpu` for reading by `session`; `bytes` is the chunk's size.
  proto::SlotRef lease(SessionId session, SlotId gpu, uint64_t bytes);
  // Releases GPU leases the session holds; all or nothing, naming the first slot it does not hold.
  Status release(SessionId session, std::span<const uint32_t> slots, uint64_t* released);
  // Releases every GPU lease of the session and forgets it; returns how many leases it held.
  uint64_t close_session(SessionId session);
  [[nodiscard]] uint64_t leases() const { return leases_; }

  // --- stats -----------------------------------------------------------------------------------
  // A lookup or load found (or did not find) a cached chunk's copy on the GPU.
  void count_lookup(bool on_gpu) { ++(on_gpu ? counters_.hits : counters_.misses); }
  void fill_stats(proto::TierStats& tier, proto::GpuStats& gpu) const;
  [[nodiscard]] uint64_t ready_chunks() const { return counters_.chunks; }
  [[nodiscard]] uint64_t queued() const { return queued_; }

 private:
  enum class State : uint8_t { kFree, kCopying, kReady, kZombie };
  struct GpuSlot {
    SlotId host = kNoSlot;    // the host chunk it copies; kNoSlot once that chunk went
    SlotId source = kNoSlot;  // copying: the host slot read (leased by the owner)
    uint64_t bytes = 0;
    State state = State::kFree;
  };
  struct HostEntry {
    SlotId gpu = kNoSlot;  // copying or ready GPU slot
    uint32_t reads = 0;
    bool queued = false;
  };
  struct Session {
    std::vector<SlotId> leases;  // a slot may appear more than once
  };

  SlotId allocate(int cls);
  bool evict_one(int cls);
  void free_gpu(SlotId g);
  void unlease(SlotId g);
  void update_evictable(SlotId g);

  GpuTierOptions options_;
  std::unique_ptr<storage::GpuMemory> memory_;
  storage::SlabSlotPool pool_;
  LeafFirstLru lru_;
  std::vector<GpuSlot> slots_;
  std::vector<HostEntry> host_;
  std::deque<SlotId> queue_;  // host slots; an entry whose HostEntry is not queued is stale
  std::unordered_map<SessionId, Session> sessions_;
  std::unordered_set<SessionId> attached_;
  std::vector<storage::GpuCopyDone> done_scratch_;

  TierCounters counters_;  // chunks: ready GPU slots
  uint64_t queued_ = 0, leases_ = 0;
  uint64_t promotions_ = 0, failures_ = 0, dropped_with_host_ = 0;
};

}  // namespace tierkv::scheduler
