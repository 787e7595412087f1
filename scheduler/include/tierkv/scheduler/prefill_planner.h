// The cost model of co-scheduled prefill ("Cake"): how long the engine takes to compute a chunk,
// how long a tier takes to load one, and, from both, where computing from the front and loading
// from the back should meet.
//
// The schedule it models: of a cached prefix of n chunks, the engine computes the chunks [0, m)
// forwards while tierkv loads the chunks [m, n) backwards, from n-1, as one ordered stream with at
// most `queue_depth` reads in flight; chunks already in host RAM ("resident") cost nothing on
// either side and are handed over before anything else. The prefix is ready at max(compute(m),
// load(m)); the time to first token adds the uncached suffix, computed after it. The planner
// predicts that time for compute-only (no cache), load-only (m = 0) and the best split, and says
// whether loading from a slow tier helps at all (if the best split loads nothing, load nothing).
//
// Inputs:
//  - ComputeProfile: time of a chunk of c tokens that starts at prefix length L, registered by the
//    engine as t(L, c) = a*c + b*c*(L + c/2) ms (the form an engine's chunked prefill sums to), or
//    as a measured table; ComputeProfileFitter learns one online from the engine's reports.
//  - TierCostModel: per tier, a read bandwidth and a fixed latency per read, measured online as
//    moving averages of recent reads (priors until then); host RAM is resident unless configured
//    otherwise.
//
// Thread safety: plain values and pure functions; a TierCostModel or fitter is owned by one thread.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <vector>

#include "tierkv/protocol.h"
#include "tierkv/status.h"

namespace tierkv::scheduler {

// Time of one chunk's prefill by its position. Milliseconds throughout.
struct ComputeProfile {
  struct Point {
    double prefix_tokens = 0;
    double chunk_ms = 0;  // time of a chunk of table_chunk_tokens tokens at that prefix
  };
  // Default: an 8B-class Llama (128 KiB of KV per token) on one H100, fitted to its full-prefill
  // times (tools/bench/data/h100-llama8b-profile.json, "engine_grade_model").
  double a_ms_per_token = 0.02942;
  double b_ms_per_token2 = 7.97e-07;
  // When non-empty, used instead of (a, b): interpolated linearly in the prefix length, extended
  // past the last point along the last segment's slope, scaled linearly to other chunk sizes.
  std::vector<Point> table;
  uint32_t table_chunk_tokens = 0;

  // A chunk of `chunk_tokens` tokens starting at `prefix_tokens`.
  double chunk_ms(uint64_t prefix_tokens, uint32_t chunk_tokens) const;
  // `tokens` tokens starting at `start_tokens`, computed in chunks of `chunk_tokens`.
  double span_ms(uint64_t start_tokens, uint64_t tokens, uint32_t chunk_tokens) const;
  // Non-negative finite coefficients; a table's prefixes strictly ascending; names the bad field.
  Status validate() const;
};

// Learns t(L) = alpha + beta*L for chunks of a fixed size from measured chunk times (least
// squares), and turns it into (a, b). Nothing is allocated per sample.
class ComputeProfileFitter {
 public:
  void add(uint64_t prefix_tokens, uint32_t chunk_tokens, double chunk_ms);
  size_t samples() const { return n_; }
  // The fitted profile once there are `min_samples` samples; b is clamped at 0 (time never falls
  // with the prefix length). False when there is too little data.
  bool fit(ComputeProfile& out, size_t min_samples = 8) const;
  void reset() { *this = ComputeProfileFitter(); }

 private:
  size_t n_ = 0;
  uint32_t chunk_tokens_ = 0;
  double sx_ = 0, sy_ = 0, sxx_ = 0, sxy_ = 0;
};

// What reading one chunk from a tier costs.
struct TierCost {
  bool resident = false;    // already in host RAM: handed over, no I/O, no cost
  double read_GBps = 2.0;   // bandwidth of the tier's read stream (1 GB = 1e9 bytes)
  double latency_us = 100;  // fixed latency of one read; overlaps with other reads in flight

  double transfer_ms(uint64_t bytes) const {
    return static_cast<double>(bytes) / (read_GBps * 1e6);
  }
  double latency_ms() const { return latency_us / 1000.0; }
};

struct TierCostOptions {
  TierCost gpu{true, 50.0, 0};
  TierCost host{true, 10.0, 0};
  TierCost nvme{false, 2.0, 100};
  TierCost remote{false, 1.0, 1000};
  double ema_weight = 0.2;  // weight of the newest sample in the moving averages
};

// Per-tier read costs: priors, then moving averages of measured reads. Owned by one thread.
class TierCostModel {
 public:
  explicit TierCostModel(const TierCostOptions& options = {});

  const TierCost& cost(proto::Tier tier) const { return costs_[index(tier)]; }
  void set_resident(proto::Tier tier, bool resident) { costs_[index(tier)].resident = resident; }
  // Finished reads of `bytes` (one, or several summed): `latency_ms` from submission to
  // completion; `service_ms` the stream time they took when other reads were ahead of them, or a
  // negative value for one read into an idle stream. Busy reads measure bandwidth, reads into an
  // idle stream measure the fixed latency.
  void record_read(proto::Tier tier, uint64_t bytes, double latency_ms, double service_ms);
  uint64_t samples(proto::Tier tier) const { return samples_[index(tier)]; }

 private:
  static size_t index(proto::Tier tier) {
    const auto i = static_cast<size_t>(tier);
    return i < kTiers ? i : 0;
  }
  static constexpr size_t kTiers = 5;
  std::array<TierCost, kTiers> costs_{};
  std::array<uint64_t, kTiers> samples_{};
  std::array<bool, kTiers> bw_measured_{};
  std::array<bool, kTiers> lat_measured_{};
  double weight_;
};

// When each read of an ordered stream completes: at most `depth` reads in flight (a read is
// submitted when the one `depth` places ahead of it completes), each waits its fixed latency
// (overlapping other reads), then transfers alone (the tier's bandwidth is shared).
class LoadStream {
 public:
  explicit LoadStream(uint32_t depth);
  // Adds the next read, submittable from `earliest_ms`; returns its completion.
  double add(double earliest_ms, double latency_ms, double transfer_ms);
  double end_ms() const { return end_; }

 private:
  std::vector<double> done_;  // completion of the last `depth` reads, ring
  size_t count_ = 0;
  double end_ = 0;
};

struct PlannerInput {
  std::span<const proto::Tier> tiers;  // tier of each cached prefix chunk, in prompt order
  uint64_t chunk_bytes = 0;
  uint32_t chunk_tokens = 0;
  uint64_t suffix_tokens = 0;  // computed after the prefix; counts in the TTFT
  uint32_t queue_depth = 8;    // reads in flight at most
  double compute_scale = 1.0;  // this engine's measured time over its profile's
};

struct PrefillPlan {
  uint32_t chunks = 0;           // n, the cached prefix
  uint32_t resident_chunks = 0;  // handed over at once
  uint32_t meeting_point = 0;    // m: compute [0, m), load [m, n) (resident chunks: handed over)
  uint32_t load_chunks = 0;      // non-resident chunks in [m, n): the reads to do
  uint32_t queue_depth = 1;      // reads in flight that keep the tier busy (<= the input's)
  bool loading_helps = false;    // load_chunks > 0
  // Predicted time to first token (prefix ready + suffix), ms.
  double compute_only_ms = 0;  // the engine computes the whole prefix (no cache)
  double load_only_ms = 0;     // everything loaded (m = 0)
  double bidir_ms = 0;         // the chosen split
  double suffix_ms = 0;
};

// The best split: least predicted TTFT; among equal ones, the one that reads least.
PrefillPlan plan_prefill(const PlannerInput& in, const ComputeProfile& profile,
                         const TierCostModel& costs);
// Predicted TTFT of every split m in [0, n]: ttft_ms[m]. The planner's choice is their minimum.
void predict_splits(const PlannerInput& in, const ComputeProfile& profile,
                    const TierCostModel& costs, std::vector<double>& ttft_ms);

}  // namespace tierkv::scheduler
