// The co-scheduling benchmark's emulated engine: its compute profile from the profile JSON, the
// oracle (the best split, computed afterwards from what happened), the read times it derives from
// a run, and one run against the real daemon.
#include "bench/emulated_engine.h"

#include <gtest/gtest.h>

#include <random>

#include "support/test_daemon.h"

namespace tierkv::bench {
namespace {

constexpr uint32_t kTokens = 64;

// An engine whose every chunk takes `ms` (b = 0), optionally slowing down.
EmulatedEngine flat_engine(double ms, double slowdown_at_ms = 1e300, double factor = 1.0,
                           uint64_t suffix_tokens = 0) {
  EngineOptions o;
  o.chunk_tokens = kTokens;
  o.slowdown_at_ms = slowdown_at_ms;
  o.slowdown_factor = factor;
  o.suffix_tokens = suffix_tokens;
  return EmulatedEngine(EngineModel{ms / kTokens, 0}, o);
}

ReadTimes uniform_reads(size_t n, double ms, double latency = 0) {
  ReadTimes r;
  r.read_ms.assign(n, ms);
  r.resident.assign(n, false);
  r.latency_ms = latency;
  return r;
}

TEST(EngineModelTest, ReadsTheProfileShippedWithTheBench) {
  auto m = load_engine_model(std::string(TIERKV_SOURCE_DIR) +
                             "/tools/bench/data/h100-llama8b-profile.json");
  ASSERT_TRUE(m.ok()) << m.status().to_string();
  EXPECT_DOUBLE_EQ(m->a_ms_per_token, 0.02942);
  EXPECT_DOUBLE_EQ(m->b_ms_per_token2, 7.97e-07);
  // The profile's own check: 32k tokens in about 1392 ms, a 512-token chunk 15 ms at L = 0.
  EXPECT_NEAR(m->span_ms(0, 32768), 1392, 2);
  EXPECT_NEAR(m->span_ms(0, 512), 15.2, 0.1);
}

TEST(EngineModelTest, BadProfilesSayWhatIsWrong) {
  auto missing = parse_engine_model(R"({"engine_grade_model": {"a_ms_per_token": 0.1}})", "p.json");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("b_ms_per_token2"), std::string::npos);
  auto text = parse_engine_model(
      R"({"engine_grade_model": {"a_ms_per_token": "x", "b_ms_per_token2": 0}})", "p.json");
  ASSERT_FALSE(text.ok());
  EXPECT_NE(text.status().message().find("not a number"), std::string::npos)
      << text.status().message();
  EXPECT_FALSE(parse_engine_model("not json", "p.json").ok());
  EXPECT_FALSE(
      parse_engine_model(R"({"engine_grade_model": {"a_ms_per_token": -1, "b_ms_per_token2": 0}})",
                         "p.json")
          .ok());
  // Other members, nested values and escapes before the model are skipped properly.
  auto ok = parse_engine_model(
      R"({"what": "a \"quoted\" {brace}", "list": [1, {"x": [true, null]}], "engine_grade_model": {"note": "n", "b_ms_per_token2": 2e-7, "a_ms_per_token": 0.5}})",
      "p.json");
  ASSERT_TRUE(ok.ok()) << ok.status().to_string();
  EXPECT_DOUBLE_EQ(ok->a_ms_per_token, 0.5);
  EXPECT_DOUBLE_EQ(ok->b_ms_per_token2, 2e-7);
}

TEST(OracleTest, BestSplitOfUniformChunks) {
  // 10 chunks of 10 ms against reads of 5 ms: m = 3 gives max(30, 35) = 35; m = 4 gives 40.
  const OracleResult r = oracle(flat_engine(10), uniform_reads(10, 5));
  EXPECT_EQ(r.meeting_point, 3u);
  EXPECT_NEAR(r.ttft_ms, 35, 1e-9);
  EXPECT_NEAR(r.compute_ms, 30, 1e-9);
  EXPECT_NEAR(r.read_ms, 35, 1e-9);
  // A fixed latency before the first transfer counts once.
  EXPECT_NEAR(oracle(flat_engine(10), uniform_reads(10, 5, 2)).ttft_ms, 37, 1e-9);
  // Reads slower than computing everything: compute everything.
  const OracleResult slow = oracle(flat_engine(1), uniform_reads(10, 50));
  EXPECT_EQ(slow.meeting_point, 10u);
  EXPECT_NEAR(slow.ttft_ms, 10, 1e-9);
  // Reads far faster: read everything.
  const OracleResult fast = oracle(flat_engine(100), uniform_reads(10, 1));
  EXPECT_EQ(fast.meeting_point, 0u);
  EXPECT_NEAR(fast.ttft_ms, 10, 1e-9);
}

TEST(OracleTest, ResidentChunksAndTheSuffix) {
  ReadTimes r = uniform_reads(6, 10);
  r.resident[0] = r.resident[1] = true;  // handed over: neither computed nor read
  // Compute 10 ms per chunk, read 10 ms: of the 4 others, 2 and 2: 20 ms.
  OracleResult o = oracle(flat_engine(10), r);
  EXPECT_NEAR(o.ttft_ms, 20, 1e-9);
  EXPECT_EQ(o.meeting_point, 4u);
  // A 128-token suffix at 10 ms per 64 tokens adds 20 ms after the prefix.
  o = oracle(flat_engine(10, 1e300, 1.0, 128), r);
  EXPECT_NEAR(o.ttft_ms, 40, 1e-9);
}

TEST(OracleTest, FollowsTheEngineAsItSlowedDown) {
  // 10 ms per chunk, twice that from 20 ms on: compute(1..4) = 10, 20, 40, 60. Reads of 10 ms over
  // 6 chunks: read(m) = 10 * (6 - m). m = 2: max(20, 40) = 40; m = 3: max(40, 30) = 40.
  const OracleResult o = oracle(flat_engine(10, 20, 2.0), uniform_reads(6, 10));
  EXPECT_NEAR(o.ttft_ms, 40, 1e-9);
  EXPECT_EQ(o.meeting_point, 2u);  // the first of equal splits
  // Without the slowdown it would have been m = 3: max(30, 30).
  EXPECT_NEAR(oracle(flat_engine(10), uniform_reads(6, 10)).ttft_ms, 30, 1e-9);
}

TEST(OracleTest, NeverWorseThanEitherBaselineAndEqualToAnExhaustiveSearch) {
  std::mt19937_64 rng(77);
  std::uniform_real_distribution<double> u(0.1, 20);
  for (int trial = 0; trial < 200; ++trial) {
    const size_t n = 1 + rng() % 60;
    ReadTimes r = uniform_reads(n, 0);
    for (size_t i = 0; i < n; ++i) {
      r.read_ms[i] = u(rng);
      r.resident[i] = rng() % 5 == 0;
    }
    r.latency_ms = u(rng) / 10;
    const EmulatedEngine e = flat_engine(u(rng), u(rng) * 10, 1 + u(rng) / 10);
    const OracleResult o = oracle(e, r);
    // Exhaustive: every split simulated from scratch.
    double best = 1e300;
    for (size_t m = 0; m <= n; ++m) {
      double t = 0, reads = 0;
      for (size_t i = 0; i < m; ++i) {
        if (!r.resident[i]) t += e.chunk_ms(static_cast<uint32_t>(i), t);
      }
      for (size_t i = m; i < n; ++i) reads += r.resident[i] ? 0 : r.read_ms[i];
      best = std::min(best, std::max(t, reads > 0 ? r.latency_ms + reads : 0));
    }
    EXPECT_NEAR(o.ttft_ms, best, 1e-9 * best) << "trial " << trial;
  }
}

TEST(ReadTimesTest, StreamTimesComeFromCompletionsInOrder) {
  EngineRun run;
  run.chunks.resize(10);
  run.chunks[0].source = ChunkRecord::Source::kHandedOver;
  for (size_t i = 1; i < 7; ++i) run.chunks[i].source = ChunkRecord::Source::kComputed;
  // Three reads from the back, queued together: 1 ms of latency, then 5 ms transfers.
  auto loaded = [&](size_t i, double submitted, double completed) {
    run.chunks[i].source = ChunkRecord::Source::kLoaded;
    run.chunks[i].submitted_ms = submitted;
    run.chunks[i].completed_ms = completed;
  };
  loaded(9, 0, 6);
  loaded(8, 0, 11);
  loaded(7, 0.5, 16);
  const ReadTimes t = read_times_of(run, 99);
  EXPECT_EQ(t.measured, 3u);
  EXPECT_NEAR(t.latency_ms, 1, 1e-9);
  for (size_t i : {7, 8, 9}) EXPECT_NEAR(t.read_ms[i], 5, 1e-9) << i;
  for (size_t i = 1; i < 7; ++i) EXPECT_NEAR(t.read_ms[i], 5, 1e-9) << "unread chunk " << i;
  EXPECT_TRUE(t.resident[0]);
  EXPECT_EQ(t.read_ms[0], 0);
  // Nothing read: the fallback.
  EngineRun none;
  none.chunks.resize(3);
  EXPECT_EQ(read_times_of(none, 7).read_ms[2], 7);
}

TEST(EmulatedEngineTest, DrivesARealSessionAndRecordsEveryChunk) {
  testing::TestDaemonOptions o;
  o.host_capacity = "32MiB";
  o.extra_toml =
      "slab_size = \"4MiB\"\nprefault = false\n[prefill]\nhost_read_throttle_GBps = 0.05\n";
  auto daemon = testing::TestDaemon::start(o);
  ASSERT_TRUE(daemon.ok()) << daemon.status().to_string();
  auto client = Client::connect({(*daemon)->socket_path(), "emulated-engine", true});
  ASSERT_TRUE(client.ok());
  auto ns = (*client)->register_layout(Layout{2, 2, 64, DType::kBFloat16, kTokens}, "bench");
  ASSERT_TRUE(ns.ok());
  std::vector<TokenId> tokens(24 * kTokens + 32);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<TokenId>(i * 3 + 1);
  std::vector<std::byte> kv(24 * ns->chunk_bytes(), std::byte{9});
  ASSERT_TRUE((*client)->put(*ns, tokens, kv).ok());

  const EmulatedEngine engine = flat_engine(1.0, 1e300, 1.0, 32);
  const auto begun = std::chrono::steady_clock::now();
  auto s = PrefillSession::begin(*client, *ns, std::span<const TokenId>(tokens));
  ASSERT_TRUE(s.ok()) << s.status().to_string();
  auto run = engine.run(**s, begun);
  ASSERT_TRUE(run.ok()) << run.status().to_string();
  EXPECT_EQ(run->computed + run->loaded + run->handed_over, 24u);
  for (size_t i = 0; i < 24; ++i) {
    EXPECT_NE(run->chunks[i].source, ChunkRecord::Source::kNone) << "chunk " << i;
    if (run->chunks[i].source == ChunkRecord::Source::kLoaded) {
      EXPECT_GE(run->chunks[i].completed_ms, run->chunks[i].submitted_ms);
    }
  }
  EXPECT_EQ(run->summary.met, 1);
  EXPECT_EQ(run->summary.computed, run->computed);
  EXPECT_EQ(run->summary.loaded, run->loaded);
  EXPECT_GE(run->ttft_ms, run->prefix_ms);
  const ReadTimes reads = read_times_of(*run, 1.3);
  const OracleResult best = oracle(engine, reads, run->mean_overshoot_ms);
  EXPECT_LE(best.meeting_point, 24u);
  EXPECT_GT(best.ttft_ms, 0);

  const EngineRun alone = engine.compute_only(24);
  EXPECT_EQ(alone.computed, 24u);
  EXPECT_GE(alone.prefix_ms, 24.0) << "sleeps never end early";
}

}  // namespace
}  // namespace tierkv::bench
