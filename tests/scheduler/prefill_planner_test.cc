// The co-scheduling cost model: compute profiles, online fits, tier costs, and the planner's
// choice of split against a brute-force search over every split.
#include "tierkv/scheduler/prefill_planner.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>

namespace tierkv::scheduler {
namespace {

using proto::Tier;

TEST(ComputeProfileTest, SpanOfTheModelIsTheSumOfItsChunks) {
  ComputeProfile p;  // the H100 8B default
  double sum = 0;
  for (int i = 0; i < 64; ++i) sum += p.chunk_ms(512ull * i, 512);
  EXPECT_NEAR(p.span_ms(0, 64 * 512, 512), sum, 1e-9 * sum);
  // The profile's own check: 4k tokens take about 127 ms, 32k about 1392 ms.
  EXPECT_NEAR(p.span_ms(0, 4096, 512), 127.0, 1.0);
  EXPECT_NEAR(p.span_ms(0, 32768, 512), 1392.0, 2.0);
  EXPECT_NEAR(p.chunk_ms(0, 512), 15.2, 0.1);
  EXPECT_NEAR(p.chunk_ms(32768, 512), 28.6, 0.1);
}

TEST(ComputeProfileTest, TableInterpolatesAndScalesToTheChunkSize) {
  ComputeProfile p;
  p.table = {{0, 10}, {1000, 20}, {2000, 40}};
  p.table_chunk_tokens = 100;
  ASSERT_TRUE(p.validate().ok());
  EXPECT_DOUBLE_EQ(p.chunk_ms(0, 100), 10);
  EXPECT_DOUBLE_EQ(p.chunk_ms(500, 100), 15);
  EXPECT_DOUBLE_EQ(p.chunk_ms(1500, 100), 30);
  EXPECT_DOUBLE_EQ(p.chunk_ms(3000, 100), 60);  // along the last segment
  EXPECT_DOUBLE_EQ(p.chunk_ms(500, 200), 30);   // twice the tokens, twice the time
  EXPECT_DOUBLE_EQ(p.span_ms(0, 250, 100), 10 + 11 + 0.5 * 12);

  ComputeProfile bad = p;
  bad.table[2].prefix_tokens = 1000;
  EXPECT_FALSE(bad.validate().ok());
  bad = p;
  bad.table_chunk_tokens = 0;
  EXPECT_FALSE(bad.validate().ok());
  bad = ComputeProfile{};
  bad.a_ms_per_token = -1;
  EXPECT_NE(bad.validate().message().find("a_ms_per_token"), std::string::npos);
}

TEST(ComputeProfileFitterTest, RecoversTheModelFromChunkTimes) {
  ComputeProfile truth;
  truth.a_ms_per_token = 0.03;
  truth.b_ms_per_token2 = 1e-6;
  ComputeProfileFitter f;
  ComputeProfile fitted;
  EXPECT_FALSE(f.fit(fitted));
  for (int i = 0; i < 64; ++i) f.add(256ull * i, 256, truth.chunk_ms(256ull * i, 256));
  ASSERT_TRUE(f.fit(fitted));
  EXPECT_NEAR(fitted.a_ms_per_token, truth.a_ms_per_token, 1e-9);
  EXPECT_NEAR(fitted.b_ms_per_token2, truth.b_ms_per_token2, 1e-12);

  // Times that fall with the prefix (noise) never give a negative slope.
  ComputeProfileFitter g;
  for (int i = 0; i < 16; ++i) g.add(256ull * i, 256, 20.0 - i * 0.1);
  ASSERT_TRUE(g.fit(fitted));
  EXPECT_EQ(fitted.b_ms_per_token2, 0);
  EXPECT_GT(fitted.a_ms_per_token, 0);
}

TEST(TierCostModelTest, BusyReadsMeasureBandwidthIdleReadsMeasureLatency) {
  TierCostOptions o;
  o.nvme = TierCost{false, 2.0, 100};
  o.ema_weight = 0.5;
  TierCostModel m(o);
  EXPECT_EQ(m.samples(Tier::kNvme), 0u);
  // 1 MB in 1 ms of stream time is 1 GB/s; the first sample replaces the prior.
  m.record_read(Tier::kNvme, 1000000, 5.0, 1.0);
  EXPECT_NEAR(m.cost(Tier::kNvme).read_GBps, 1.0, 1e-12);
  m.record_read(Tier::kNvme, 1000000, 5.0, 0.5);  // 2 GB/s, averaged in with weight 0.5
  EXPECT_NEAR(m.cost(Tier::kNvme).read_GBps, 1.5, 1e-12);
  // An idle read of 1.5 MB that took 1.3 ms: 1 ms of transfer at 1.5 GB/s, 0.3 ms fixed.
  m.record_read(Tier::kNvme, 1500000, 1.3, -1);
  EXPECT_NEAR(m.cost(Tier::kNvme).latency_us, 300, 1e-9);
  EXPECT_EQ(m.samples(Tier::kNvme), 3u);
  EXPECT_TRUE(m.cost(Tier::kHost).resident);
  EXPECT_FALSE(m.cost(Tier::kNvme).resident);
}

TEST(LoadStreamTest, LatencyOverlapsTransfersDoNot) {
  LoadStream deep(4);
  EXPECT_DOUBLE_EQ(deep.add(0, 1.0, 2.0), 3.0);
  EXPECT_DOUBLE_EQ(deep.add(0, 1.0, 2.0), 5.0);
  EXPECT_DOUBLE_EQ(deep.add(0, 1.0, 2.0), 7.0);
  LoadStream one(1);  // one at a time: every read pays its latency
  EXPECT_DOUBLE_EQ(one.add(0, 1.0, 2.0), 3.0);
  EXPECT_DOUBLE_EQ(one.add(0, 1.0, 2.0), 6.0);
}

// --- brute force ---------------------------------------------------------------------------------

struct Read {
  double latency_ms, transfer_ms;
};

// Reads in order, `depth` lanes: a read goes out on the lane that frees first, waits its latency,
// then has the tier's bus to itself for its transfer. Returns when the last one is done.
double simulate_reads(const std::vector<Read>& reads, uint32_t depth) {
  std::vector<double> lane_free(depth, 0.0);
  double bus_free = 0;
  for (const Read& r : reads) {
    auto lane = std::min_element(lane_free.begin(), lane_free.end());
    const double start = std::max(*lane + r.latency_ms, bus_free);
    bus_free = start + r.transfer_ms;
    *lane = bus_free;
  }
  return bus_free;
}

struct Scenario {
  std::vector<Tier> tiers;
  ComputeProfile profile;
  TierCostOptions costs;
  uint64_t chunk_bytes = 0;
  uint32_t chunk_tokens = 0;
  uint64_t suffix_tokens = 0;
  uint32_t depth = 1;
  double scale = 1;
};

Scenario random_scenario(std::mt19937_64& rng) {
  auto uni = [&](double lo, double hi) {
    return std::uniform_real_distribution<double>(lo, hi)(rng);
  };
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  Scenario s;
  const int n = pick(0, 80);
  const double p_host = uni(0, 0.5), p_remote = uni(0, 0.4);
  for (int i = 0; i < n; ++i) {
    const double u = uni(0, 1);
    s.tiers.push_back(u < p_host              ? Tier::kHost
                      : u < p_host + p_remote ? Tier::kRemote
                                              : Tier::kNvme);
  }
  s.chunk_tokens = std::array<uint32_t, 3>{64, 256, 512}[pick(0, 2)];
  s.chunk_bytes = uint64_t{s.chunk_tokens} * static_cast<uint64_t>(pick(16, 256)) * 1024;
  s.profile.a_ms_per_token = uni(0.002, 0.06);
  s.profile.b_ms_per_token2 = uni(0, 3e-6);
  s.costs.nvme = TierCost{false, uni(0.2, 8.0), uni(0, 500)};
  s.costs.remote = TierCost{false, uni(0.05, 3.0), uni(0, 5000)};
  s.suffix_tokens = static_cast<uint64_t>(pick(0, 4096));
  s.depth = static_cast<uint32_t>(pick(1, 8));
  s.scale = uni(0.5, 3.0);
  return s;
}

PlannerInput input_of(const Scenario& s) {
  PlannerInput in;
  in.tiers = s.tiers;
  in.chunk_bytes = s.chunk_bytes;
  in.chunk_tokens = s.chunk_tokens;
  in.suffix_tokens = s.suffix_tokens;
  in.queue_depth = s.depth;
  in.compute_scale = s.scale;
  return in;
}

// TTFT of split m by direct simulation: compute the non-resident chunks of [0, m) one after
// another, read the non-resident chunks of [m, n) from n-1 down, then the suffix.
double brute_ttft(const Scenario& s, const TierCostModel& costs, size_t m) {
  double compute = 0;
  for (size_t i = 0; i < m; ++i) {
    if (!costs.cost(s.tiers[i]).resident) {
      compute += s.profile.chunk_ms(uint64_t{s.chunk_tokens} * i, s.chunk_tokens) * s.scale;
    }
  }
  std::vector<Read> reads;
  for (size_t i = s.tiers.size(); i-- > m;) {
    const TierCost& c = costs.cost(s.tiers[i]);
    if (!c.resident) reads.push_back(Read{c.latency_ms(), c.transfer_ms(s.chunk_bytes)});
  }
  double suffix = 0;
  const size_t n = s.tiers.size();
  for (uint64_t done = 0; done < s.suffix_tokens; done += s.chunk_tokens) {
    const uint64_t c = std::min<uint64_t>(s.chunk_tokens, s.suffix_tokens - done);
    suffix +=
        s.profile.chunk_ms(uint64_t{s.chunk_tokens} * n + done, static_cast<uint32_t>(c)) * s.scale;
  }
  return std::max(compute, simulate_reads(reads, s.depth)) + suffix;
}

TEST(PrefillPlannerTest, ChoiceEqualsTheBruteForceOptimumOnRandomProfiles) {
  std::mt19937_64 rng(20261122);
  int loading_helped = 0, loading_did_not = 0, mixed_tiers = 0;
  for (int trial = 0; trial < 400; ++trial) {
    SCOPED_TRACE("trial " + std::to_string(trial));
    const Scenario s = random_scenario(rng);
    const TierCostModel costs(s.costs);
    const PrefillPlan plan = plan_prefill(input_of(s), s.profile, costs);
    const size_t n = s.tiers.size();

    double best = 1e300;
    size_t best_m = n;
    for (size_t m = n + 1; m-- > 0;) {
      const double t = brute_ttft(s, costs, m);
      if (t < best * (1 - 1e-12)) {
        best = t;
        best_m = m;
      }
    }
    EXPECT_NEAR(plan.bidir_ms, best, 1e-9 * std::max(1.0, best));
    EXPECT_NEAR(brute_ttft(s, costs, plan.meeting_point), best, 1e-9 * std::max(1.0, best));
    EXPECT_NEAR(plan.load_only_ms, brute_ttft(s, costs, 0), 1e-9 * std::max(1.0, best));
    size_t reads_at_best = 0;
    for (size_t i = best_m; i < n; ++i) reads_at_best += costs.cost(s.tiers[i]).resident ? 0 : 1;
    EXPECT_EQ(plan.loading_helps, reads_at_best > 0);
    EXPECT_EQ(plan.load_chunks, reads_at_best);
    EXPECT_LE(plan.bidir_ms, plan.load_only_ms + 1e-9);
    EXPECT_LE(plan.bidir_ms, plan.compute_only_ms + 1e-9);

    std::vector<double> ttft;
    predict_splits(input_of(s), s.profile, costs, ttft);
    ASSERT_EQ(ttft.size(), n + 1);
    for (size_t m = 0; m <= n; ++m) {
      EXPECT_NEAR(ttft[m], brute_ttft(s, costs, m), 1e-9 * std::max(1.0, ttft[m])) << "m = " << m;
    }
    (plan.loading_helps ? loading_helped : loading_did_not)++;
    if (std::count(s.tiers.begin(), s.tiers.end(), Tier::kHost) > 0 && plan.load_chunks > 0) {
      ++mixed_tiers;
    }
  }
  // The random profiles cover both answers and prefixes split across tiers.
  EXPECT_GT(loading_helped, 50);
  EXPECT_GT(loading_did_not, 20);
  EXPECT_GT(mixed_tiers, 50);
}

TEST(PrefillPlannerTest, SlowTierLoadsNothingFastTierLoadsEverything) {
  std::vector<Tier> tiers(64, Tier::kNvme);
  ComputeProfile profile;
  PlannerInput in;
  in.tiers = tiers;
  in.chunk_tokens = 512;
  in.chunk_bytes = 512ull * 131072;  // 64 MiB per chunk (8B model)
  in.queue_depth = 8;

  TierCostOptions slow;
  slow.nvme = TierCost{false, 0.001, 100};  // 1 MB/s: a chunk takes a minute
  PrefillPlan p = plan_prefill(in, profile, TierCostModel(slow));
  EXPECT_FALSE(p.loading_helps);
  EXPECT_EQ(p.meeting_point, 64u);
  EXPECT_EQ(p.load_chunks, 0u);
  EXPECT_DOUBLE_EQ(p.bidir_ms, p.compute_only_ms);

  TierCostOptions fast;
  fast.nvme = TierCost{false, 1000.0, 1};  // far faster than any compute
  p = plan_prefill(in, profile, TierCostModel(fast));
  EXPECT_TRUE(p.loading_helps);
  EXPECT_EQ(p.meeting_point, 0u);
  EXPECT_EQ(p.load_chunks, 64u);
  EXPECT_LT(p.bidir_ms, p.compute_only_ms / 10);

  // The example: 1 GB/s, 32k tokens: both halves at once beat either alone.
  TierCostOptions disk;
  disk.nvme = TierCost{false, 1.0, 100};
  p = plan_prefill(in, profile, TierCostModel(disk));
  EXPECT_TRUE(p.loading_helps);
  EXPECT_GT(p.meeting_point, 0u);
  EXPECT_LT(p.meeting_point, 64u);
  EXPECT_LT(p.bidir_ms, std::min(p.compute_only_ms, p.load_only_ms));
  EXPECT_GE(p.queue_depth, 1u);
  EXPECT_LE(p.queue_depth, 8u);
}

TEST(PrefillPlannerTest, ResidentChunksAreFreeAndHandedOver) {
  // All in host RAM: nothing to read, nothing to compute.
  std::vector<Tier> tiers(16, Tier::kHost);
  PlannerInput in;
  in.tiers = tiers;
  in.chunk_tokens = 256;
  in.chunk_bytes = 256ull * 131072;
  in.suffix_tokens = 100;
  ComputeProfile profile;
  PrefillPlan p = plan_prefill(in, profile, TierCostModel());
  EXPECT_EQ(p.resident_chunks, 16u);
  EXPECT_EQ(p.load_chunks, 0u);
  EXPECT_FALSE(p.loading_helps);
  EXPECT_NEAR(p.bidir_ms, p.suffix_ms, 1e-12);
  EXPECT_GT(p.compute_only_ms, p.bidir_ms);

  // Host head, NVMe tail: the head costs nothing, the planner weighs only the tail.
  for (size_t i = 8; i < 16; ++i) tiers[i] = Tier::kNvme;
  TierCostOptions disk;
  disk.nvme = TierCost{false, 1.0, 100};
  p = plan_prefill(in, profile, TierCostModel(disk));
  EXPECT_EQ(p.resident_chunks, 8u);
  EXPECT_GE(p.meeting_point, 8u);
}

}  // namespace
}  // namespace tierkv::scheduler
