#pragma once

#include <cstdint>

#include "tierkv/protocol.h"

namespace tierkv::scheduler {

// The counters every tier keeps for its entry of the stats reply (proto::TierStats, which says
// what each means). A plain value, owned by the tier's owner and touched only on its thread.
struct TierCounters {
  uint64_t chunks = 0;
  uint64_t hits = 0;
  uint64_t misses = 0;
  uint64_t evictions = 0;
  uint64_t bytes_in = 0;
  uint64_t bytes_out = 0;

  // Writes `tier`'s entry: enabled, the pool's capacity and use, and these counters.
  void fill(proto::Tier tier, uint64_t capacity_bytes, uint64_t used_bytes,
            proto::TierStats& out) const {
    out.tier = tier;
    out.enabled = 1;
    out.capacity_bytes = capacity_bytes;
    out.used_bytes = used_bytes;
    out.chunks = chunks;
    out.hits = hits;
    out.misses = misses;
    out.evictions = evictions;
    out.bytes_in = bytes_in;
    out.bytes_out = bytes_out;
  }
};

}  // namespace tierkv::scheduler
