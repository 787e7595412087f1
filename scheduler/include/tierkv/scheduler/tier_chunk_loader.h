// TierChunkLoader: the ChunkLoader of every prefill session the daemon runs. It brings a chunk of
// the session's cached prefix into a leased host slot from whichever tier holds it.
//
//  - hand_over(i): a chunk in host RAM is leased where it lies (CacheEngine::lease_chunk). Nothing
//    is copied.
//  - submit(i): the chunk is loaded through CacheEngine::load under the session's lease session:
//    from host RAM it is leased at once; from NVMe it is read (io_uring, O_DIRECT) into a new host
//    slot and checked against its checksum, then leased. A read that fails (I/O error, checksum
//    mismatch, no host slot, chunk gone) is delivered as an error Status, so the engine computes
//    that chunk instead. Completions are delivered on a turn of the Clock, never inside submit(),
//    with the Clock time at which the engine's completion ran (the reap time).
//  - cancel_all(): drops what has not been delivered. Reads already handed to the engine cannot be
//    taken back: their completions still arrive (until the read ends or the lease session is
//    closed) and then release what they carry. They hold a shared liveness token, not the loader,
//    so one may even arrive after the loader is gone.
//
// Read throttles (benchmarks and tests of the schedule): with ReadThrottle set for a tier, reads
// of that tier's chunks are paced to its bandwidth, as a slower device of that bandwidth would
// deliver them: each read is held for a fixed latency and for its transfer time at the throttled
// bandwidth, one transfer at a time, and only then issued — for NVMe a real read of the disk
// still, for host RAM a lease that completes at once. Host chunks that are throttled are not
// "resident" for the planner (PrefillService sets that up), so they come through submit().
//
// Threads: the daemon's server thread, which owns the CacheEngine (and runs its poll_io()) and the
// Clock. No locks. Destroying the loader cancels what is in flight. Allocation: the queues are
// sized for the prefix at construction; per read, only CacheEngine::load's own record and its
// completion callback.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "tierkv/chunk_key.h"
#include "tierkv/scheduler/cache_engine.h"
#include "tierkv/scheduler/chunk_loader.h"
#include "tierkv/scheduler/clock.h"

namespace tierkv::scheduler {

// Emulates a slower tier by pacing reads; see TierChunkLoader.
struct ReadThrottle {
  double read_GBps = 0;   // 0: no throttle
  double latency_us = 0;  // fixed latency per read, before its transfer
  bool enabled() const { return read_GBps > 0; }
};

struct TierLoaderOptions {
  ReadThrottle host;  // host chunks read through an emulated tier instead of handed over
  ReadThrottle nvme;  // NVMe reads paced to this bandwidth
};

class TierChunkLoader final : public ChunkLoader {
 public:
  // `keys` and `tiers` describe the cached prefix (chunk i = keys[i], found in tiers[i] at
  // lookup); leases are taken for `lease_session`, which must stay open while the loader lives.
  TierChunkLoader(CacheEngine& engine, Clock& clock, SessionId lease_session, NamespaceId ns,
                  uint64_t chunk_bytes, std::span<const ChunkKey> keys,
                  std::span<const proto::Tier> tiers, const TierLoaderOptions& options);
  ~TierChunkLoader() override;
  TierChunkLoader(const TierChunkLoader&) = delete;
  TierChunkLoader& operator=(const TierChunkLoader&) = delete;

  void bind(LoadSink* sink) override { sink_ = sink; }
  void submit(uint32_t chunk) override;
  Result<proto::SlotRef> hand_over(uint32_t chunk) override;
  void release(uint32_t chunk, const proto::SlotRef& slot) override;
  void cancel_all() override;

  // Reads handed to the engine whose completion has not come back yet (cancelled ones included).
  uint32_t engine_reads() const { return shared_->outstanding; }

 private:
  // What the engine's completion callbacks share with the loader; outlives it while they live.
  struct Shared {
    TierChunkLoader* loader = nullptr;  // null once the loader is destroyed
    CacheEngine* engine = nullptr;
    SessionId lease_session = 0;
    uint64_t epoch = 0;  // bumped by cancel_all(): older completions are stale
    uint32_t outstanding = 0;
  };
  struct Paced {
    uint32_t chunk = 0;
    int64_t issue_ns = 0;
  };
  struct Completion {
    uint32_t chunk = 0;
    int64_t at_ns = 0;
    Status status;        // not ok: the read failed
    proto::SlotRef slot;  // ok: leased, delivered with the completion
  };

  void issue(uint32_t chunk);
  static void on_engine_done(const std::shared_ptr<Shared>& shared, uint64_t epoch, uint32_t chunk,
                             const Status& status, const proto::LoadReply& reply);
  void complete(Completion c);
  void arm_issue();
  void on_issue_timer();
  void arm_delivery();
  void on_delivery_timer();
  const ReadThrottle* throttle_of(uint32_t chunk) const;

  CacheEngine& engine_;
  Clock& clock_;
  SessionId lease_session_;
  NamespaceId ns_;
  uint64_t chunk_bytes_;
  std::vector<ChunkKey> keys_;
  std::vector<proto::Tier> tiers_;
  TierLoaderOptions options_;
  LoadSink* sink_ = nullptr;
  std::shared_ptr<Shared> shared_;
  proto::KeysRequest request_;  // one key, reused for every load

  std::vector<Paced> paced_;  // throttled reads waiting to be issued, in issue order
  size_t paced_head_ = 0;
  int64_t host_bus_free_ns_ = 0;
  int64_t nvme_bus_free_ns_ = 0;
  Clock::TimerId issue_timer_ = 0;

  std::vector<Completion> done_;  // completions not yet delivered, in order
  size_t done_head_ = 0;
  Clock::TimerId delivery_timer_ = 0;
  bool delivering_ = false;
  uint32_t slot_scratch_[1] = {};
};

}  // namespace tierkv::scheduler
