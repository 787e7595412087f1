// HostChunkLoader: the ChunkLoader of a prefill session whose chunks lie in the host tier.
//
// A chunk in host RAM is "loaded" by leasing the slot it already lies in (CacheEngine::lease_chunk)
// under the session's own engine session, so it cannot be evicted while the engine reads it;
// release() drops that lease. Nothing is copied.
//
// With a throttle (HostReadThrottle, for benchmarks and tests), host chunks are not handed over
// but read through an emulated tier: each read waits a fixed latency, then its transfer at the
// throttled bandwidth, one transfer at a time, and completes on the Clock. Without one, a submitted
// read completes on the next turn of the clock (never inside submit()).
//
// Threads: the daemon's server thread, which owns the CacheEngine and the Clock. Destroying the
// loader cancels what is in flight.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "tierkv/chunk_key.h"
#include "tierkv/scheduler/cache_engine.h"
#include "tierkv/scheduler/chunk_loader.h"
#include "tierkv/scheduler/clock.h"

namespace tierkv::scheduler {

struct HostReadThrottle {
  double read_GBps = 0;   // 0: no throttle
  double latency_us = 0;  // fixed latency per read
  bool enabled() const { return read_GBps > 0; }
};

class HostChunkLoader final : public ChunkLoader {
 public:
  // `keys` are the prefix's chunk keys (chunk i = keys[i]); leases are taken for `lease_session`.
  HostChunkLoader(CacheEngine& engine, Clock& clock, SessionId lease_session, NamespaceId ns,
                  uint64_t chunk_bytes, std::span<const ChunkKey> keys, HostReadThrottle throttle);
  ~HostChunkLoader() override;

  void bind(LoadSink* sink) override { sink_ = sink; }
  void submit(uint32_t chunk) override;
  Result<proto::SlotRef> hand_over(uint32_t chunk) override;
  void release(uint32_t chunk, const proto::SlotRef& slot) override;
  void cancel_all() override;

 private:
  struct Pending {
    uint32_t chunk = 0;
    int64_t done_ns = 0;
    Status status;        // why the lease failed, if it did
    proto::SlotRef slot;  // leased at submission, delivered at done_ns
  };
  void arm();
  void on_timer();

  CacheEngine& engine_;
  Clock& clock_;
  SessionId lease_session_;
  NamespaceId ns_;
  uint64_t chunk_bytes_;
  std::vector<ChunkKey> keys_;
  HostReadThrottle throttle_;
  LoadSink* sink_ = nullptr;
  std::vector<Pending> queue_;  // completions in order; queue_[head_..] are in flight
  size_t head_ = 0;
  Clock::TimerId timer_ = 0;
  int64_t bus_free_ns_ = 0;
  uint32_t slot_scratch_[1] = {};
};

}  // namespace tierkv::scheduler
