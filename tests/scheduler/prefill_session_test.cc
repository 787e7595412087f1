// The co-scheduled prefill session on a fake clock, a fake tier and a fake engine: exactly-once
// coverage, no read of a computed chunk, failures turned into compute, cancellation, adaptation.
#include "tierkv/scheduler/prefill_session.h"

#include <gtest/gtest.h>

#include <memory>
#include <random>

#include "scheduler/prefill_fakes.h"

namespace tierkv::scheduler {
namespace {

using proto::Tier;
using testing::FakeEngine;
using testing::FakeTier;
using testing::ms_to_ns;
using ChunkState = PrefillSession::ChunkState;

constexpr uint32_t kChunkTokens = 256;
constexpr uint64_t kChunkBytes = 256ull * 131072;  // 32 MiB: an 8B model's 256 tokens

// One run: clock, tier, session and engine wired together.
struct World {
  World(std::vector<Tier> tiers_in, const TierCostOptions& cost_options,
        const ComputeProfile& profile, PrefillSessionOptions options,
        std::function<double(uint32_t, double)> compute_ms = nullptr)
      : tiers(std::move(tiers_in)), costs(cost_options) {
    options.chunk_bytes = kChunkBytes;
    options.chunk_tokens = kChunkTokens;
    // The fake tier behaves exactly as the cost model says (the model's own prediction).
    std::vector<double> transfer, latency;
    for (Tier t : tiers) {
      transfer.push_back(costs.cost(t).transfer_ms(kChunkBytes));
      latency.push_back(costs.cost(t).latency_ms());
    }
    tier = std::make_unique<FakeTier>(clock, transfer, latency, options.queue_depth, kChunkBytes);
    session =
        std::make_unique<PrefillSession>(options, clock, *tier, costs, profile, tiers, &fitter);
    if (!compute_ms) {
      compute_ms = [profile](uint32_t i, double) {
        return profile.chunk_ms(uint64_t{kChunkTokens} * i, kChunkTokens);
      };
    }
    engine = std::make_unique<FakeEngine>(clock, *session, compute_ms);
    tier->engine_touched = [this](uint32_t i) { return engine->touched(i); };
  }

  // Runs until nothing is left to happen.
  void run_to_end() {
    session->start();
    engine->start();
    while (clock.run_next()) {
    }
  }

  // Every chunk computed or delivered, exactly once, and the session agrees.
  void expect_exactly_once() const {
    const uint32_t n = session->chunks();
    for (uint32_t i = 0; i < n; ++i) {
      EXPECT_EQ(engine->loaded()[i] + engine->computed()[i], 1)
          << "chunk " << i << ": loaded " << engine->loaded()[i] << " times, computed "
          << engine->computed()[i] << " times";
      const ChunkState s = session->state(i);
      EXPECT_TRUE(s == ChunkState::kComputed || s == ChunkState::kLoaded) << "chunk " << i;
    }
    EXPECT_EQ(session->wasted_loads(), 0u);
  }

  FakeClock clock;
  std::vector<Tier> tiers;
  TierCostModel costs;
  ComputeProfileFitter fitter;
  std::unique_ptr<FakeTier> tier;
  std::unique_ptr<PrefillSession> session;
  std::unique_ptr<FakeEngine> engine;
};

TierCostOptions disk(double gbps = 1.0, double latency_us = 100) {
  TierCostOptions o;
  o.nvme = TierCost{false, gbps, latency_us};
  o.remote = TierCost{false, gbps / 4, latency_us * 10};
  return o;
}

PrefillSessionOptions forced(uint32_t m, uint32_t depth = 4) {
  PrefillSessionOptions o;
  o.meeting_point = m;
  o.queue_depth = depth;
  return o;
}

TEST(PrefillSessionTest, ExactlyOnceCoverageForEveryMeetingPoint) {
  const ComputeProfile profile;
  for (bool with_host_chunks : {false, true}) {
    std::vector<Tier> tiers(12, Tier::kNvme);
    if (with_host_chunks) tiers[0] = tiers[5] = tiers[6] = tiers[11] = Tier::kHost;
    for (uint32_t m = 0; m <= 12; ++m) {
      SCOPED_TRACE("host chunks " + std::to_string(with_host_chunks) + ", meeting point " +
                   std::to_string(m));
      World r(tiers, disk(), profile, forced(m));
      r.run_to_end();
      ASSERT_TRUE(r.engine->done());
      ASSERT_TRUE(r.session->met());
      r.expect_exactly_once();
      for (uint32_t i = 0; i < 12; ++i) {
        const bool host = tiers[i] == Tier::kHost;
        // Host chunks are handed over; the rest split exactly at m.
        EXPECT_EQ(r.engine->loaded()[i], host || i >= m ? 1 : 0) << "chunk " << i;
      }
      const auto s = r.session->summary();
      EXPECT_EQ(s.loaded + s.handed_over + s.computed, 12u);
      uint32_t expect_actual = 12;
      for (uint32_t i = m; i < 12; ++i) {
        if (tiers[i] != Tier::kHost) {
          expect_actual = i;
          break;
        }
      }
      EXPECT_EQ(s.actual_meeting_point, expect_actual);
      // Reads go from the back: submission order descends.
      EXPECT_TRUE(std::is_sorted(r.tier->order.rbegin(), r.tier->order.rend()));
      r.session->end(false);
      EXPECT_EQ(r.tier->leases, 0) << "slots leaked";
      EXPECT_FALSE(r.session->summary().cancelled);
    }
  }
}

// The live session against the brute-force best split of what the fake world does.
double best_split_ms(const World& r, const ComputeProfile& profile, uint32_t depth) {
  PlannerInput in;
  in.tiers = r.tiers;
  in.chunk_bytes = kChunkBytes;
  in.chunk_tokens = kChunkTokens;
  in.queue_depth = depth;
  std::vector<double> ttft;
  predict_splits(in, profile, r.costs, ttft);
  return *std::min_element(ttft.begin(), ttft.end());
}

TEST(PrefillSessionTest, AutoSessionsMeetNearTheOptimumWithNoWaste) {
  std::mt19937_64 rng(4242);
  auto uni = [&](double lo, double hi) {
    return std::uniform_real_distribution<double>(lo, hi)(rng);
  };
  double worst = 0;
  for (int trial = 0; trial < 60; ++trial) {
    SCOPED_TRACE("trial " + std::to_string(trial));
    const auto n = static_cast<size_t>(uni(1, 96));
    std::vector<Tier> tiers(n, Tier::kNvme);
    for (auto& t : tiers) {
      const double u = uni(0, 1);
      if (u < 0.15)
        t = Tier::kHost;
      else if (u < 0.3)
        t = Tier::kRemote;
    }
    ComputeProfile profile;
    profile.a_ms_per_token = uni(0.005, 0.06);
    profile.b_ms_per_token2 = uni(0, 2e-6);
    const TierCostOptions costs = disk(uni(0.3, 8), uni(0, 400));
    PrefillSessionOptions o;
    o.queue_depth = static_cast<uint32_t>(uni(1, 9));
    World r(tiers, costs, profile, o);
    // The costs the session learns from the fake tier stay exact: it behaves as modelled.
    const double best = best_split_ms(r, profile, o.queue_depth);
    r.run_to_end();
    ASSERT_TRUE(r.engine->done());
    r.expect_exactly_once();
    const double took = r.engine->met_ms();
    // In a world that behaves as modelled, deciding chunk by chunk from live progress reaches the
    // best split itself (up to the fake clock's nanosecond rounding).
    EXPECT_LE(took, best * 1.001 + 0.01) << "best " << best;
    worst = std::max(worst, took / std::max(best, 1e-9));
    r.session->end(false);
    EXPECT_EQ(r.tier->leases, 0);
  }
  RecordProperty("worst_live_over_best", std::to_string(worst));
}

TEST(PrefillSessionTest, MeetsWhereThePlannerSaid) {
  // A uniform prefix on a 1 GB/s disk, the engine exactly as profiled: the live meeting point is
  // the planned one, and the prefix is ready when the plan said.
  const ComputeProfile profile;
  PrefillSessionOptions o;
  o.queue_depth = 4;
  World r(std::vector<Tier>(64, Tier::kNvme), disk(1.0, 100), profile, o);
  r.run_to_end();
  ASSERT_TRUE(r.engine->done());
  r.expect_exactly_once();
  const PrefillPlan& plan = r.session->plan();
  EXPECT_TRUE(plan.loading_helps);
  const auto s = r.session->summary();
  EXPECT_NEAR(static_cast<double>(s.actual_meeting_point), plan.meeting_point, 1.0);
  EXPECT_LE(r.engine->met_ms(), plan.bidir_ms * 1.02);
  EXPECT_LT(r.engine->met_ms(), std::min(plan.compute_only_ms, plan.load_only_ms));
}

TEST(PrefillSessionTest, LoadsNothingWhenLoadingCannotHelp) {
  const ComputeProfile profile;
  PrefillSessionOptions o;
  World r(std::vector<Tier>(32, Tier::kNvme), disk(0.001, 100), profile, o);
  r.run_to_end();
  ASSERT_TRUE(r.engine->done());
  r.expect_exactly_once();
  EXPECT_FALSE(r.session->plan().loading_helps);
  EXPECT_TRUE(r.tier->order.empty()) << "read " << r.tier->order.size() << " chunks";
  EXPECT_EQ(r.engine->computed_count(), 32u);
}

TEST(PrefillSessionTest, AllResidentIsHandedOverAtOnce) {
  const ComputeProfile profile;
  World r(std::vector<Tier>(10, Tier::kHost), disk(), profile, PrefillSessionOptions{});
  r.session->start();
  EXPECT_TRUE(r.session->met());
  r.engine->start();
  while (r.clock.run_next()) {
  }
  EXPECT_TRUE(r.engine->done());
  EXPECT_EQ(r.engine->met_ms(), 0);
  EXPECT_EQ(r.tier->handed_over, 10u);
  EXPECT_EQ(r.engine->computed_count(), 0u);
  r.session->end(false);
  EXPECT_EQ(r.tier->leases, 0);
}

TEST(PrefillSessionTest, FailedLoadsBecomeComputeAndCoverageStaysExact) {
  const ComputeProfile profile;
  for (uint32_t m : {0u, 5u, 10u}) {
    SCOPED_TRACE("meeting point " + std::to_string(m));
    World r(std::vector<Tier>(16, Tier::kNvme), disk(), profile, forced(m));
    r.tier->fail = {15, 11, 10};  // the first read, one in the middle, one at the front
    r.run_to_end();
    ASSERT_TRUE(r.engine->done());
    r.expect_exactly_once();
    for (uint32_t f : {15u, 11u, 10u}) {
      if (f < m) continue;
      EXPECT_EQ(r.engine->computed()[f], 1) << "failed chunk " << f << " not computed";
      EXPECT_TRUE(r.engine->failed().count(f)) << "failure of " << f << " not reported";
    }
    EXPECT_EQ(r.session->summary().failed, m <= 10 ? 3u : 0u);
    r.session->end(false);
    EXPECT_EQ(r.tier->leases, 0);
  }
  // Auto mode, where the failed chunk lies past the loads still in flight.
  World r(std::vector<Tier>(40, Tier::kNvme), disk(2.0, 100), profile, PrefillSessionOptions{});
  r.tier->fail = {39, 30};
  r.run_to_end();
  ASSERT_TRUE(r.engine->done());
  r.expect_exactly_once();
  EXPECT_EQ(r.engine->computed()[39], 1);
  r.session->end(false);
  EXPECT_EQ(r.tier->leases, 0);
}

TEST(PrefillSessionTest, ResidentChunkGoneBeforeHandOverIsStillCovered) {
  const ComputeProfile profile;
  std::vector<Tier> tiers(8, Tier::kHost);
  World r(tiers, disk(), profile, PrefillSessionOptions{});
  r.tier->gone = {3};
  r.run_to_end();
  ASSERT_TRUE(r.engine->done());
  r.expect_exactly_once();
  EXPECT_EQ(r.tier->handed_over, 7u);
  r.session->end(false);
  EXPECT_EQ(r.tier->leases, 0);
}

TEST(PrefillSessionTest, CancelMidSessionReleasesEverything) {
  const ComputeProfile profile;
  std::vector<Tier> tiers(32, Tier::kNvme);
  tiers[0] = Tier::kHost;
  World r(tiers, disk(), profile, forced(8, 6));
  r.session->start();
  r.engine->start();
  // Run until some chunks are delivered and reads are in flight, then cancel.
  while (r.session->summary().loaded < 3 && r.clock.run_next()) {
  }
  ASSERT_GT(r.session->in_flight(), 0u);
  ASSERT_GT(r.tier->leases, 0);
  r.session->end(/*cancel=*/true);
  EXPECT_EQ(r.tier->leases, 0) << "slots leaked";
  EXPECT_GT(r.tier->cancelled, 0u);
  EXPECT_TRUE(r.session->summary().cancelled);
  EXPECT_FALSE(r.session->computed(1).ok());
  // Nothing of the session's runs any more: only the engine's own timer may be left.
  EXPECT_LE(r.clock.pending_timers(), 1u);
}

TEST(PrefillSessionTest, DestroyingALiveSessionReleasesEverything) {
  // What an engine's death does: its sessions are destroyed with reads in flight.
  const ComputeProfile profile;
  FakeClock clock;
  TierCostModel costs(disk());
  std::vector<Tier> tiers(20, Tier::kNvme);
  tiers[2] = Tier::kHost;
  FakeTier tier(clock, std::vector<double>(20, 5.0), std::vector<double>(20, 0.1), 4, kChunkBytes);
  {
    PrefillSessionOptions o = forced(0);
    o.chunk_bytes = kChunkBytes;
    o.chunk_tokens = kChunkTokens;
    PrefillSession s(o, clock, tier, costs, profile, tiers);
    s.start();
    clock.advance_by(ms_to_ns(12));
    EXPECT_GT(tier.leases, 1);
    // As deep as the plan asks (enough to hide 0.1 ms latency behind 5 ms transfers), within 4.
    EXPECT_EQ(s.plan().queue_depth, 3u);
    EXPECT_EQ(s.in_flight(), 3u);
  }
  EXPECT_EQ(tier.leases, 0);
  EXPECT_FALSE(clock.has_timers());
}

TEST(PrefillSessionTest, EngineReportsThatBreakTheRulesAreRejected) {
  const ComputeProfile profile;
  World r(std::vector<Tier>(8, Tier::kNvme), disk(), profile, forced(4));
  r.session->start();
  // Chunks 4..7 are the loader's, 0..3 the engine's.
  EXPECT_EQ(r.session->state(7), ChunkState::kLoading);
  const Status loaded = r.session->computed(7);
  EXPECT_EQ(loaded.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(loaded.message().find("loader's"), std::string::npos) << loaded.message();
  EXPECT_EQ(r.session->wasted_loads(), 1u);
  EXPECT_EQ(r.session->computed(8).code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(r.session->computed(0).ok());
  EXPECT_EQ(r.session->computed(0).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(r.session->release(0).code(), StatusCode::kFailedPrecondition);  // computed, not loaded

  // In auto mode a chunk beyond the grant is neither side's yet: also refused.
  World a(std::vector<Tier>(32, Tier::kNvme), disk(0.001), profile, PrefillSessionOptions{});
  a.session->start();
  EXPECT_EQ(a.session->grant_end(), 1u);
  EXPECT_EQ(a.session->computed(5).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(a.session->wasted_loads(), 0u);
}

TEST(PrefillSessionTest, ReleasedChunksGiveTheirSlotBackEarly) {
  const ComputeProfile profile;
  World r(std::vector<Tier>(6, Tier::kHost), disk(), profile, PrefillSessionOptions{});
  r.session->start();
  EXPECT_EQ(r.tier->leases, 6);
  EXPECT_EQ(r.session->release(2).code(), StatusCode::kFailedPrecondition);  // not yet delivered
  proto::PrefillProgress p;
  r.session->take_progress(p);
  ASSERT_EQ(p.ready.size(), 6u);
  EXPECT_TRUE(r.session->release(2).ok());
  EXPECT_EQ(r.tier->leases, 5);
  EXPECT_FALSE(r.session->release(2).ok());  // only once
  r.session->end(false);
  EXPECT_EQ(r.tier->leases, 0);
}

TEST(PrefillSessionTest, LookaheadGrantsSeveralChunksAndTheLoaderStaysClear) {
  const ComputeProfile profile;
  PrefillSessionOptions o;
  o.compute_lookahead = 4;
  World r(std::vector<Tier>(48, Tier::kNvme), disk(1.0), profile, o);
  r.session->start();
  EXPECT_EQ(r.session->grant_end(), 4u);
  r.engine->start();
  while (r.clock.run_next()) {
  }
  ASSERT_TRUE(r.engine->done());
  r.expect_exactly_once();
}

TEST(PrefillSessionTest, AdaptsWhenTheEngineSlowsDownMidSession) {
  // The same prompt twice: an engine as fast as its profile, and one that becomes 3x slower a
  // quarter of the way in. The slowed session must see it and load more, and still finish close
  // to the best split of what actually happened.
  const ComputeProfile profile;
  const std::vector<Tier> tiers(96, Tier::kNvme);
  const TierCostOptions costs = disk(1.0, 100);

  World steady(tiers, costs, profile, PrefillSessionOptions{});
  steady.run_to_end();
  ASSERT_TRUE(steady.engine->done());

  const double slow_after = steady.engine->met_ms() / 4;
  auto slowing = [&](uint32_t i, double now) {
    const double t = profile.chunk_ms(uint64_t{kChunkTokens} * i, kChunkTokens);
    return now >= slow_after ? 3 * t : t;
  };
  World slowed(tiers, costs, profile, PrefillSessionOptions{}, slowing);
  slowed.run_to_end();
  ASSERT_TRUE(slowed.engine->done());
  slowed.expect_exactly_once();
  EXPECT_GT(slowed.session->compute_scale(), 2.0);
  EXPECT_GT(slowed.session->summary().loaded, steady.session->summary().loaded + 5)
      << "the session did not shift work to the loader";

  // The oracle on what happened: compute times as the slowed engine would have had them.
  double best = 1e300;
  const double read_ms = slowed.costs.cost(Tier::kNvme).transfer_ms(kChunkBytes);
  for (size_t m = 0; m <= tiers.size(); ++m) {
    double compute = 0;
    for (size_t i = 0; i < m; ++i) compute += slowing(static_cast<uint32_t>(i), compute);
    const double load =
        m == tiers.size() ? 0 : 0.1 + read_ms * static_cast<double>(tiers.size() - m);
    best = std::min(best, std::max(compute, load));
  }
  EXPECT_LE(slowed.engine->met_ms(), best * 1.10) << "oracle " << best;
}

TEST(PrefillSessionTest, OneStalledChunkDoesNotSwingTheSpeedEstimate) {
  // Chunk 10 takes ten times its profile (the host stalled the engine once); the speed estimate
  // the next decisions use stays near the truth, while a steady 3x slowdown is followed.
  const ComputeProfile profile;
  PrefillSession* session = nullptr;
  double scale_after_stall = 0;
  auto stalled = [&](uint32_t i, double) {
    if (i == 11) scale_after_stall = session->compute_scale();
    const double t = profile.chunk_ms(uint64_t{kChunkTokens} * i, kChunkTokens);
    return i == 10 ? 10 * t : t;
  };
  World r(std::vector<Tier>(48, Tier::kNvme), disk(0.001), profile, PrefillSessionOptions{}, stalled);
  session = r.session.get();
  r.run_to_end();
  ASSERT_TRUE(r.engine->done());
  r.expect_exactly_once();
  EXPECT_GT(scale_after_stall, 0.9);
  EXPECT_LT(scale_after_stall, 1.1);
}

TEST(PrefillSessionTest, LearnsTheProfileFromReports) {
  // The session was told the default profile, but the engine runs a different one: the fitter
  // recovers the engine's.
  ComputeProfile actual;
  actual.a_ms_per_token = 0.05;
  actual.b_ms_per_token2 = 2e-6;
  auto compute = [&](uint32_t i, double) {
    return actual.chunk_ms(uint64_t{kChunkTokens} * i, kChunkTokens);
  };
  World r(std::vector<Tier>(40, Tier::kNvme), disk(0.001), ComputeProfile{},
          PrefillSessionOptions{}, compute);
  r.run_to_end();
  ASSERT_TRUE(r.engine->done());
  ComputeProfile fitted;
  ASSERT_TRUE(r.fitter.fit(fitted));
  EXPECT_NEAR(fitted.a_ms_per_token, actual.a_ms_per_token, 1e-4);
  EXPECT_NEAR(fitted.b_ms_per_token2, actual.b_ms_per_token2, 1e-8);
}

}  // namespace
}  // namespace tierkv::scheduler
