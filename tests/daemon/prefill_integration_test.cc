// Co-scheduled prefill through the real tierkvd and the client library: an engine's chunked-prefill
// loop (C++ API and C ABI) against host-cached chunks read through the daemon's throttled
// emulated tier, every delivered byte verified, exactly-once coverage, stats, and a client killed
// mid-session.
#include <gtest/gtest.h>

#include <thread>

#include "support/chunk_pattern.h"
#include "support/json.h"
#include "support/prefill_engine.h"
#include "support/process.h"
#include "support/test_daemon.h"
#include "tierkv/client.h"
#include "tierkv/prefill.h"
#include "tierkv/tierkv.h"

namespace tierkv {
namespace {

using testing::wait_until;
using namespace std::chrono_literals;

const Layout kLayout{2, 2, 64, DType::kBFloat16, 64};  // 64 KiB chunks
constexpr size_t kChunks = 40;

class PrefillIntegrationTest : public testing::PrefillDaemonTest {
 protected:
  // Host reads go through an emulated tier of 0.05 GB/s: 1.3 ms per 64 KiB chunk.
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(start_daemon(
        {.host_capacity = "32MiB",
         .extra_toml = "slab_size = \"4MiB\"\nprefault = false\n[prefill]\n"
                       "host_read_throttle_GBps = 0.05\nhost_read_throttle_latency_us = 50.0\n"
                       "queue_depth = 4\n"}));
    connect("prefill-engine", kLayout);
  }

  // A prompt of kChunks full chunks plus 10 tokens, cached, with known bytes.
  std::vector<TokenId> cached_prompt(uint32_t seed) {
    std::vector<TokenId> tokens(kChunks * 64 + 10);
    for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = seed * 1000000 + static_cast<TokenId>(i);
    const auto keys = Client::keys(ns_, tokens);
    std::vector<std::byte> kv(kChunks * ns_.chunk_bytes());
    for (size_t i = 0; i < kChunks; ++i) {
      testing::fill_chunk(keys[i], std::span(kv).subspan(i * ns_.chunk_bytes(), ns_.chunk_bytes()));
    }
    auto put = client_->put(ns_, tokens, kv);
    EXPECT_TRUE(put.ok() && put->written == kChunks);
    return tokens;
  }

  // Chunk content is a function of its key (support/chunk_pattern.h).
  bool chunk_matches(const ChunkKey& key, std::span<const std::byte> got) const {
    return got.size() == ns_.chunk_bytes() && testing::chunk_matches(key, got);
  }
};

TEST_F(PrefillIntegrationTest, EngineLoopCoversThePrefixExactlyOnceWithEveryByteVerified) {
  const auto tokens = cached_prompt(1);
  const auto keys = Client::keys(ns_, tokens);
  auto check = [&](uint32_t i, std::span<const std::byte> b) { return chunk_matches(keys[i], b); };
  size_t sessions = 0;
  for (uint32_t m : {0u, 17u, static_cast<uint32_t>(kChunks), proto::kAutoMeetingPoint}) {
    SCOPED_TRACE("meeting point " + std::to_string(m));
    auto s = begin_session(tokens, m);
    ASSERT_TRUE(s.ok()) << s.status().to_string();
    ++sessions;
    EXPECT_EQ((*s)->total_chunks(), kChunks);
    EXPECT_EQ((*s)->cached_chunks(), kChunks);
    EXPECT_EQ((*s)->tiers()[0], Tier::kHost);
    EXPECT_EQ((*s)->plan().resident_chunks, 0u) << "throttled host reads are not handed over";
    const testing::PrefillCoverage c = testing::run_prefill_engine(**s, check, 1ms);
    EXPECT_EQ(c.bad_bytes, 0u);
    for (size_t i = 0; i < kChunks; ++i) {
      EXPECT_EQ(c.delivered(i) + c.computed[i], 1) << "chunk " << i;
      if (m != proto::kAutoMeetingPoint) {
        EXPECT_EQ(c.delivered(i), i >= m ? 1 : 0) << "chunk " << i;
      }
    }
    EXPECT_EQ(c.summary.met, 1);
    EXPECT_EQ(c.summary.cancelled, 0);
    EXPECT_EQ(c.summary.loaded + c.summary.computed, kChunks);
    if (m != proto::kAutoMeetingPoint) {
      EXPECT_EQ(c.summary.actual_meeting_point, m);
    }
  }
  const auto st = stats();
  EXPECT_EQ(st.prefill.sessions_started, sessions);
  EXPECT_EQ(st.prefill.sessions_met, sessions);
  EXPECT_EQ(st.prefill.sessions_active, 0u);
  EXPECT_EQ(st.prefill.wasted_loads, 0u);
  EXPECT_EQ(st.prefill.chunks_loaded + st.prefill.chunks_computed, sessions * kChunks);
  EXPECT_EQ(st.read_leases, 0u) << "a session's leases outlived it";
  ASSERT_EQ(st.recent_prefills.size(), sessions);
  EXPECT_EQ(st.recent_prefills[1].actual_meeting_point, 17u);
  ASSERT_EQ(st.tier_bandwidth.size(), 4u);
  EXPECT_EQ(st.tier_bandwidth[1].tier, Tier::kHost);
  EXPECT_GT(st.tier_bandwidth[1].samples, 0u);
  // Measured, not the prior: a positive estimate from the session's reads. (Its value is a
  // timing, which tests do not assert; the throttle's pacing is tested on a fake clock.)
  EXPECT_GT(st.tier_bandwidth[1].read_GBps, 0.0);

  // tierkvctl stats shows the same, for a person and as JSON.
  const std::string ctl = std::string(TIERKV_BINARY_DIR) + "/tools/tierkvctl";
  const auto human = testing::run_process({ctl, "--socket", daemon_->socket_path(), "stats"});
  ASSERT_TRUE(human.ok()) << human.describe();
  EXPECT_NE(human.out.find("prefill: " + std::to_string(sessions) + " sessions"), std::string::npos)
      << human.out;
  EXPECT_NE(human.out.find("0 wasted loads"), std::string::npos) << human.out;
  EXPECT_NE(human.out.find("MEET PLANNED"), std::string::npos) << human.out;
  const auto json =
      testing::run_process({ctl, "--socket", daemon_->socket_path(), "stats", "--json"});
  ASSERT_TRUE(json.ok()) << json.describe();
  std::string error;
  auto doc = testing::parse_json(json.out, &error);
  ASSERT_TRUE(doc.has_value()) << error << json.out;
  EXPECT_EQ((*doc)["prefill"]["sessions_started"].as_number(), static_cast<double>(sessions));
  EXPECT_EQ((*doc)["prefill"]["wasted_loads"].as_number(), 0);
  const auto& recent = (*doc)["recent_prefills"].as_array();
  ASSERT_EQ(recent.size(), sessions);
  EXPECT_EQ(recent[1]["actual_meeting_point"].as_number(), 17);
  EXPECT_TRUE(recent[3].has("planned_meeting_point"));
  EXPECT_TRUE(recent[3].has("saved_ms"));
  const auto& reads = (*doc)["tier_bandwidth"].as_array();
  ASSERT_EQ(reads.size(), 4u);
  EXPECT_EQ(reads[1]["tier"].as_string(), "host");
  EXPECT_GT(reads[1]["read_GBps"].as_number(), 0);
}

TEST_F(PrefillIntegrationTest, TheCAbiDrivesTheSameLoop) {
  const auto tokens = cached_prompt(2);
  const auto keys = Client::keys(ns_, tokens);
  tierkv_client* c = nullptr;
  ASSERT_EQ(tierkv_connect(daemon_->socket_path().c_str(), &c), 0) << tierkv_last_error();
  tierkv_namespace ns{};
  const tierkv_layout layout{2, 2, 64, 2, 64};
  ASSERT_EQ(tierkv_register_layout(c, &layout, "prefill", nullptr, &ns), 0);
  ASSERT_EQ(tierkv_prefill_set_profile(c, &ns, 0.02, 1e-6), 0) << tierkv_last_error();
  EXPECT_NE(tierkv_prefill_set_profile(c, &ns, -0.02, 1e-6), 0);
  EXPECT_NE(std::string(tierkv_last_error()).find("a_ms_per_token"), std::string::npos);

  tierkv_prefill* p = nullptr;
  tierkv_prefill_plan plan{};
  ASSERT_EQ(tierkv_prefill_begin(c, &ns, tokens.data(), tokens.size(), 1, &p, &plan), 0)
      << tierkv_last_error();
  EXPECT_EQ(plan.total_chunks, kChunks);
  EXPECT_EQ(plan.cached_chunks, kChunks);
  EXPECT_GT(plan.compute_only_ms, 0);
  std::vector<int> covered(kChunks, 0);
  size_t bad = 0;
  for (int steps = 0; steps < 100000; ++steps) {
    size_t ready[4];
    size_t k;
    while ((k = tierkv_prefill_take_ready(p, ready, 4)) > 0) {  // small batches: the rest waits
      for (size_t j = 0; j < k; ++j) {
        size_t bytes = 0;
        const void* data = tierkv_prefill_chunk(p, ready[j], &bytes);
        if (data == nullptr ||
            !chunk_matches(keys[ready[j]], {static_cast<const std::byte*>(data), bytes})) {
          ++bad;
        }
        ++covered[ready[j]];
        tierkv_prefill_release_chunk(p, ready[j]);
        EXPECT_EQ(tierkv_prefill_chunk(p, ready[j], &bytes), nullptr) << "readable after release";
      }
    }
    size_t i = 0;
    const int what = tierkv_prefill_next(p, &i);
    if (what == TIERKV_PREFILL_DONE) break;
    if (what == TIERKV_PREFILL_COMPUTE) {
      std::this_thread::sleep_for(1ms);
      ASSERT_EQ(tierkv_prefill_computed(p, i), 0) << tierkv_last_error();
      ++covered[i];
    } else {
      ASSERT_EQ(tierkv_prefill_wait(p, 5000), 0) << tierkv_last_error();
    }
  }
  EXPECT_EQ(bad, 0u);
  for (size_t i = 0; i < kChunks; ++i) EXPECT_EQ(covered[i], 1) << "chunk " << i;
  tierkv_prefill_summary sum{};
  ASSERT_EQ(tierkv_prefill_end(p, &sum), 0) << tierkv_last_error();
  EXPECT_EQ(sum.met, 1);
  EXPECT_EQ(sum.loaded + sum.computed, kChunks);

  // Nothing cached: a session with nothing to do.
  std::vector<uint32_t> fresh(5 * 64, 77);
  ASSERT_EQ(tierkv_prefill_begin(c, &ns, fresh.data(), fresh.size(), 0, &p, &plan), 0);
  EXPECT_EQ(plan.cached_chunks, 0u);
  EXPECT_EQ(tierkv_prefill_next(p, nullptr), TIERKV_PREFILL_DONE);
  tierkv_prefill_cancel(p);
  tierkv_close(c);
  EXPECT_EQ(stats().read_leases, 0u);
}

TEST_F(PrefillIntegrationTest, ReportsThatBreakTheRulesGetAnErrorThatSaysWhy) {
  const auto tokens = cached_prompt(3);
  auto s = begin_session(tokens, 10);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ((*s)->next().action, PrefillSession::Action::kCompute);
  // Chunk 39 is the loader's: the daemon refuses to count it computed.
  const Status st = (*s)->computed(39);
  EXPECT_EQ(st.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(st.message().find("chunk 39 is the loader's"), std::string::npos) << st.message();
  EXPECT_EQ(stats().prefill.wasted_loads, 1u);
  EXPECT_TRUE((*s)->cancel().ok());
  auto s2 = begin_session(tokens, 10);
  ASSERT_TRUE(s2.ok());
  const auto st2 = stats();
  EXPECT_EQ(st2.prefill.sessions_active, 1u);
  EXPECT_EQ(st2.prefill.sessions_cancelled, 1u);
  s2->reset();  // destroyed without end(): cancelled
  EXPECT_TRUE(wait_until([&] { return stats().prefill.sessions_active == 0; }, 10s));
  EXPECT_EQ(stats().read_leases, 0u);
}

TEST_F(PrefillIntegrationTest, ClientKilledMidSessionIsCancelledAndItsSlotsReleased) {
  testing::TempDir logs;
  auto victim = testing::start_hanging_prefill_client("hang", *daemon_, logs.file("victim.log"));
  ASSERT_TRUE(victim.ok()) << victim.status().to_string();
  auto before = stats();
  EXPECT_EQ(before.prefill.sessions_active, 1u);
  EXPECT_GT(before.read_leases, 0u);

  ASSERT_NO_FATAL_FAILURE(kill_and_wait_released(*victim));
  const auto after = stats();
  EXPECT_EQ(after.prefill.sessions_cancelled, 1u);
  EXPECT_EQ(after.prefill.wasted_loads, 0u);
  EXPECT_NE(daemon_->log().find("left 1 prefill sessions open; cancelled them"), std::string::npos)
      << daemon_->log();
  // The daemon still serves prefill sessions.
  const auto tokens = cached_prompt(4);
  auto s = begin_session(tokens);
  ASSERT_TRUE(s.ok()) << s.status().to_string();
  EXPECT_TRUE((*s)->cancel().ok());
}

}  // namespace
}  // namespace tierkv
