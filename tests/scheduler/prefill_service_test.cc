// PrefillService over a real CacheEngine (real shared-memory host tier), on a fake clock: sessions
// from begin to end through the request API, the bytes of every delivered chunk, leases released on
// end, on cancellation and when the client goes away, failures, limits and stats.
#include "tierkv/scheduler/prefill_service.h"

#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <set>

#include "support/engine_fixture.h"

namespace tierkv::scheduler {
namespace {

using proto::Tier;

class PrefillServiceTest : public testing::EngineFixture<> {
 protected:
  void SetUp() override {
    CacheOptions o = host_options();
    o.host_capacity_bytes = 32 * kMiB;
    o.min_slot_bytes = 64 * 1024;
    start_engine(o);
  }

  void make_service(double throttle_GBps = 0, uint32_t depth = 4) {
    PrefillOptions o;
    o.queue_depth = depth;
    o.host_throttle.read_GBps = throttle_GBps;
    o.host_throttle.latency_us = throttle_GBps > 0 ? 50 : 0;
    service_ = std::make_unique<PrefillService>(*engine_, clock_, o);
  }

  // Caches `n` chunks of prompt `prompt` with known bytes; returns their keys.
  std::vector<ChunkKey> cache_prompt(uint64_t prompt, size_t n) {
    std::vector<ChunkKey> keys;
    for (size_t i = 0; i < n; ++i) keys.push_back(ChunkKey{prompt * 1000 + i + 1, prompt});
    put_chunks(keys);
    return keys;
  }

  bool bytes_match(const proto::PrefillReady& r) const {
    if (r.slot.bytes != ns_.chunk_bytes()) return false;
    const auto* p = reinterpret_cast<const uint8_t*>(engine_->host_base() + r.slot.offset);
    for (size_t b = 0; b < r.slot.bytes; b += 997) {
      if (p[b] != pattern(r.chunk, b)) return false;
    }
    return p[r.slot.bytes - 1] == pattern(r.chunk, r.slot.bytes - 1);
  }

  uint64_t read_leases() const { return stats().read_leases; }

  FakeClock clock_;
  std::unique_ptr<PrefillService> service_;
};

// An engine driving a session through the service's request API, as the daemon would relay it.
class Driver {
 public:
  Driver(PrefillService& service, FakeClock& clock, SessionId client, double chunk_ms,
         std::function<bool(const proto::PrefillReady&)> verify)
      : service_(service),
        clock_(clock),
        client_(client),
        chunk_ms_(chunk_ms),
        verify_(std::move(verify)) {}

  void start(const proto::PrefillBeginReply& reply) {
    id_ = reply.session;
    n_ = reply.cached_chunks;
    present_.assign(n_, 0);
    loaded_.assign(n_, 0);
    computed_.assign(n_, 0);
    apply(reply.progress);
    step();
  }

  bool done = false;
  std::vector<int> loaded_, computed_;
  std::set<uint32_t> failed;
  uint32_t bad_bytes = 0;

 private:
  void apply(const proto::PrefillProgress& p) {
    grant_end_ = p.grant_end;
    for (const auto& r : p.ready) {
      ASSERT_LT(r.chunk, n_);
      EXPECT_EQ(present_[r.chunk], 0);
      present_[r.chunk] = 1;
      ++loaded_[r.chunk];
      if (!verify_(r)) ++bad_bytes;
      to_release_.push_back(r.chunk);  // read at once; give the slot back with the next request
    }
    for (uint32_t f : p.failed) failed.insert(f);
    met_ = p.met != 0;
  }

  void step() {
    if (met_) {
      done = true;
      return;
    }
    uint32_t f = 0;
    while (f < n_ && present_[f]) ++f;
    ASSERT_LT(f, n_);
    if (f < grant_end_ || failed.count(f)) {
      clock_.call_at(clock_.now_ns() + static_cast<int64_t>(chunk_ms_ * 1e6), [this, f] {
        proto::PrefillComputedRequest req{id_, f, std::move(to_release_)};
        to_release_.clear();
        proto::PrefillProgress p;
        const Status s = service_.computed(client_, req, p);
        ASSERT_TRUE(s.ok()) << s.to_string();
        present_[f] = 1;
        ++computed_[f];
        apply(p);
        step();
      });
      return;
    }
    proto::PrefillPollRequest req{id_, 100000, std::move(to_release_)};
    to_release_.clear();
    proto::PrefillProgress p;
    auto now = service_.poll(client_, req, p, [this] {
      proto::PrefillProgress q;
      ASSERT_TRUE(service_.take(client_, id_, q).ok());
      apply(q);
      step();
    });
    ASSERT_TRUE(now.ok()) << now.status().to_string();
    if (*now) {
      apply(p);
      clock_.call_at(clock_.now_ns(), [this] { step(); });
    }
  }

  PrefillService& service_;
  FakeClock& clock_;
  SessionId client_;
  double chunk_ms_;
  std::function<bool(const proto::PrefillReady&)> verify_;
  uint64_t id_ = 0;
  uint32_t n_ = 0;
  std::vector<int> present_;
  std::vector<uint32_t> to_release_;
  uint32_t grant_end_ = 0;
  bool met_ = false;
};

TEST_F(PrefillServiceTest, HostChunksAreHandedOverAtOnceWithTheirBytes) {
  make_service();
  const auto keys = cache_prompt(1, 10);
  std::vector<ChunkKey> prompt = keys;
  prompt.push_back(ChunkKey{99, 99});  // one more chunk, not cached
  proto::PrefillBeginReply rep;
  // 11 full chunks and 16 tokens more: 80 tokens follow the cached prefix.
  ASSERT_TRUE(service_->begin(7, {ns_.id, 720, 1, proto::kAutoMeetingPoint, prompt}, rep).ok());
  EXPECT_NE(rep.session, 0u);
  EXPECT_EQ(rep.total_chunks, 11u);
  EXPECT_EQ(rep.cached_chunks, 10u);
  ASSERT_EQ(rep.tiers.size(), 10u);
  EXPECT_EQ(rep.tiers[0], Tier::kHost);
  EXPECT_EQ(rep.plan.resident_chunks, 10u);
  EXPECT_FALSE(rep.plan.loading_helps);
  const ComputeProfile profile;
  EXPECT_NEAR(rep.plan.bidir_ms, profile.span_ms(640, 80, 64), 1e-9);
  EXPECT_NEAR(rep.plan.compute_only_ms, profile.span_ms(0, 720, 64), 1e-9);
  EXPECT_EQ(rep.progress.met, 1);
  ASSERT_EQ(rep.progress.ready.size(), 10u);
  for (const auto& r : rep.progress.ready) EXPECT_TRUE(bytes_match(r)) << "chunk " << r.chunk;
  EXPECT_EQ(read_leases(), 10u);
  EXPECT_EQ(service_->active_sessions(), 1u);

  proto::PrefillSummary sum;
  ASSERT_TRUE(service_->end(7, {rep.session, 0}, sum).ok());
  EXPECT_EQ(sum.handed_over, 10u);
  EXPECT_EQ(sum.met, 1);
  EXPECT_EQ(sum.cancelled, 0);
  EXPECT_EQ(read_leases(), 0u) << "the session's leases outlived it";
  EXPECT_EQ(service_->active_sessions(), 0u);
  EXPECT_EQ(service_->end(7, {rep.session, 0}, sum).code(), StatusCode::kNotFound);
}

TEST_F(PrefillServiceTest, ThrottledTierRunsTheBidirectionalScheduleExactlyOnce) {
  // 64 KiB chunks read at 0.01 GB/s: 6.5 ms each, against the engine's 5 ms per chunk.
  make_service(0.01);
  const auto keys = cache_prompt(2, 24);
  for (uint32_t m : {proto::kAutoMeetingPoint, 0u, 9u, 24u}) {
    SCOPED_TRACE("meeting point " + std::to_string(m));
    proto::PrefillBeginReply rep;
    ASSERT_TRUE(service_->begin(7, {ns_.id, 0, 1, m, keys}, rep).ok());
    EXPECT_EQ(rep.plan.resident_chunks, 0u);
    Driver d(*service_, clock_, 7, 5.0,
             [&](const proto::PrefillReady& r) { return bytes_match(r); });
    d.start(rep);
    while (clock_.run_next()) {
    }
    ASSERT_TRUE(d.done);
    EXPECT_EQ(d.bad_bytes, 0u);
    for (uint32_t i = 0; i < 24; ++i) {
      EXPECT_EQ(d.loaded_[i] + d.computed_[i], 1) << "chunk " << i;
      if (m != proto::kAutoMeetingPoint) {
        EXPECT_EQ(d.loaded_[i], i >= m ? 1 : 0) << "chunk " << i;
      }
    }
    if (m == proto::kAutoMeetingPoint) {
      EXPECT_TRUE(rep.plan.loading_helps);
      EXPECT_GT(rep.plan.meeting_point, 0u);
      EXPECT_LT(rep.plan.meeting_point, 24u);
    }
    // Chunks are released as read, with the next request; those of the last reply at the end.
    EXPECT_LE(read_leases(), 1u);
    proto::PrefillSummary sum;
    ASSERT_TRUE(service_->end(7, {rep.session, 0}, sum).ok());
    EXPECT_EQ(read_leases(), 0u);
    EXPECT_EQ(sum.met, 1);
    EXPECT_EQ(sum.loaded + sum.computed, 24u);
  }
  proto::StatsReply st;
  service_->fill_stats(st);
  EXPECT_EQ(st.prefill.sessions_started, 4u);
  EXPECT_EQ(st.prefill.sessions_met, 4u);
  EXPECT_EQ(st.prefill.wasted_loads, 0u);
  EXPECT_EQ(st.prefill.chunks_loaded + st.prefill.chunks_computed, 4u * 24);
  ASSERT_EQ(st.recent_prefills.size(), 4u);
  EXPECT_EQ(st.recent_prefills[2].actual_meeting_point, 9u);
  ASSERT_EQ(st.tier_bandwidth.size(), 4u);
  const auto& host = st.tier_bandwidth[1];
  EXPECT_EQ(host.tier, Tier::kHost);
  EXPECT_FALSE(host.resident);
  EXPECT_GT(host.samples, 10u);
  EXPECT_NEAR(host.read_GBps, 0.01, 0.001) << "the measured bandwidth is the throttle's";
}

TEST_F(PrefillServiceTest, ChunkEvictedMidSessionIsComputedInstead) {
  make_service(0.01);
  const auto keys = cache_prompt(3, 12);
  proto::PrefillBeginReply rep;
  ASSERT_TRUE(service_->begin(7, {ns_.id, 0, 1, 4, keys}, rep).ok());
  // Chunk 5 is dropped before its read is submitted: the read fails, the engine computes it.
  uint64_t removed = 0;
  ASSERT_TRUE(
      engine_->remove(proto::DropRequest{ns_.id, proto::Scope::kKeys, {keys[5]}}, &removed).ok());
  ASSERT_EQ(removed, 1u);
  Driver d(*service_, clock_, 7, 5.0, [&](const proto::PrefillReady& r) { return bytes_match(r); });
  d.start(rep);
  while (clock_.run_next()) {
  }
  ASSERT_TRUE(d.done);
  EXPECT_EQ(d.bad_bytes, 0u);
  EXPECT_TRUE(d.failed.count(5));
  EXPECT_EQ(d.computed_[5], 1);
  for (uint32_t i = 0; i < 12; ++i) EXPECT_EQ(d.loaded_[i] + d.computed_[i], 1) << "chunk " << i;
  proto::PrefillSummary sum;
  ASSERT_TRUE(service_->end(7, {rep.session, 0}, sum).ok());
  EXPECT_EQ(sum.failed, 1u);
  EXPECT_EQ(read_leases(), 0u);
}

TEST_F(PrefillServiceTest, ClientDeathAndCancelReleaseEverything) {
  make_service(0.01);
  const auto a = cache_prompt(4, 16);
  const auto b = cache_prompt(5, 16);
  proto::PrefillBeginReply ra, rb, rc;
  ASSERT_TRUE(service_->begin(7, {ns_.id, 0, 1, 0, a}, ra).ok());
  ASSERT_TRUE(service_->begin(7, {ns_.id, 0, 1, 0, b}, rb).ok());
  ASSERT_TRUE(service_->begin(8, {ns_.id, 0, 1, 0, b}, rc).ok());  // another client
  clock_.advance_by(20'000'000);  // some reads done, some in flight
  EXPECT_GT(read_leases(), 0u);
  // A wait is pending when the client dies.
  proto::PrefillProgress p;
  auto r = service_->poll(7, {ra.session, 100000, {}}, p, [] {});
  ASSERT_TRUE(r.ok());

  EXPECT_EQ(service_->close_client(7), 2u);
  EXPECT_EQ(service_->active_sessions(), 1u);
  proto::PrefillSummary sum;
  ASSERT_TRUE(service_->end(8, {rc.session, 1}, sum).ok());
  EXPECT_EQ(sum.cancelled, 1);
  EXPECT_EQ(read_leases(), 0u) << "leases leaked";
  EXPECT_FALSE(clock_.has_timers()) << "reads still scheduled after the sessions ended";
  proto::StatsReply st;
  service_->fill_stats(st);
  EXPECT_EQ(st.prefill.sessions_cancelled, 3u);
  EXPECT_EQ(st.prefill.sessions_active, 0u);
}

TEST_F(PrefillServiceTest, RequestsAreCheckedAndSessionsBelongToTheirClient) {
  make_service();
  const auto keys = cache_prompt(6, 4);
  proto::PrefillBeginReply rep;
  Status s = service_->begin(7, {12345, 0, 1, proto::kAutoMeetingPoint, keys}, rep);
  EXPECT_EQ(s.code(), StatusCode::kNotFound);
  s = service_->begin(7, {ns_.id, 0, 1000, proto::kAutoMeetingPoint, keys}, rep);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("compute_lookahead = 1000"), std::string::npos) << s.message();

  // Nothing cached: no session, nothing to wait for.
  ASSERT_TRUE(
      service_->begin(7, {ns_.id, 0, 1, proto::kAutoMeetingPoint, {ChunkKey{5, 5}}}, rep).ok());
  EXPECT_EQ(rep.session, 0u);
  EXPECT_EQ(rep.cached_chunks, 0u);
  EXPECT_EQ(rep.progress.met, 1);

  ASSERT_TRUE(service_->begin(7, {ns_.id, 0, 1, proto::kAutoMeetingPoint, keys}, rep).ok());
  proto::PrefillProgress p;
  EXPECT_EQ(service_->computed(8, {rep.session, 0, {}}, p).code(), StatusCode::kNotFound);
  EXPECT_EQ(service_->computed(7, {rep.session + 1, 0, {}}, p).code(), StatusCode::kNotFound);
  // All handed over: nothing is the engine's to compute.
  EXPECT_EQ(service_->computed(7, {rep.session, 0, {}}, p).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(service_->computed(7, {rep.session, 9, {}}, p).code(), StatusCode::kInvalidArgument);
  auto polled = service_->poll(7, {rep.session, 0, {2, 2}}, p, nullptr);  // released twice
  EXPECT_EQ(polled.status().code(), StatusCode::kFailedPrecondition);
  proto::StatsReply st;
  service_->fill_stats(st);
  EXPECT_EQ(st.prefill.wasted_loads, 1u) << "computing a delivered chunk is a wasted load";

  PrefillOptions o;
  o.max_sessions_per_client = 2;
  PrefillService limited(*engine_, clock_, o);
  ASSERT_TRUE(limited.begin(9, {ns_.id, 0, 1, proto::kAutoMeetingPoint, keys}, rep).ok());
  ASSERT_TRUE(limited.begin(9, {ns_.id, 0, 1, proto::kAutoMeetingPoint, keys}, rep).ok());
  EXPECT_EQ(limited.begin(9, {ns_.id, 0, 1, proto::kAutoMeetingPoint, keys}, rep).code(),
            StatusCode::kResourceExhausted);
  EXPECT_TRUE(limited.begin(10, {ns_.id, 0, 1, proto::kAutoMeetingPoint, keys}, rep).ok());
}

TEST_F(PrefillServiceTest, RegisteredAndLearnedProfilesDriveThePlan) {
  make_service(0.01);
  const auto keys = cache_prompt(7, 20);
  proto::PrefillProfileRequest bad{ns_.id, proto::ProfileKind::kModel, -1, 0, 0, {}};
  EXPECT_EQ(service_->set_profile(7, bad).code(), StatusCode::kInvalidArgument);
  proto::PrefillProfileRequest table{ns_.id, proto::ProfileKind::kTable, 0, 0, 64, {}};
  EXPECT_EQ(service_->set_profile(7, table).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(service_->set_profile(7, {999, proto::ProfileKind::kLearn, 0, 0, 0, {}}).code(),
            StatusCode::kNotFound);

  // A very slow engine (1 s per chunk): loading everything is best.
  ASSERT_TRUE(
      service_->set_profile(7, {ns_.id, proto::ProfileKind::kModel, 1000.0 / 64, 0, 0, {}}).ok());
  proto::PrefillBeginReply rep;
  ASSERT_TRUE(service_->begin(7, {ns_.id, 0, 1, proto::kAutoMeetingPoint, keys}, rep).ok());
  EXPECT_EQ(rep.plan.meeting_point, 0u);
  EXPECT_NEAR(rep.plan.compute_only_ms, 20 * 1000.0, 1e-6);
  proto::PrefillSummary sum;
  ASSERT_TRUE(service_->end(7, {rep.session, 1}, sum).ok());

  // A measured table says the same engine is instant: compute everything.
  table.table = {{0, 0.001}, {10000, 0.001}};
  ASSERT_TRUE(service_->set_profile(7, table).ok());
  ASSERT_TRUE(service_->begin(7, {ns_.id, 0, 1, proto::kAutoMeetingPoint, keys}, rep).ok());
  EXPECT_EQ(rep.plan.meeting_point, 20u);
  EXPECT_FALSE(rep.plan.loading_helps);
  ASSERT_TRUE(service_->end(7, {rep.session, 1}, sum).ok());

  // Learned: an engine that takes 2 ms per chunk, whatever the default says; after a session of
  // reports the plan uses what was measured.
  ASSERT_TRUE(service_->set_profile(7, {ns_.id, proto::ProfileKind::kLearn, 0, 0, 0, {}}).ok());
  ASSERT_TRUE(service_->begin(7, {ns_.id, 0, 1, 20, keys}, rep).ok());
  Driver d(*service_, clock_, 7, 2.0, [](const proto::PrefillReady&) { return true; });
  d.start(rep);
  while (clock_.run_next()) {
  }
  ASSERT_TRUE(d.done);
  ASSERT_TRUE(service_->end(7, {rep.session, 0}, sum).ok());
  ASSERT_TRUE(service_->begin(7, {ns_.id, 0, 1, proto::kAutoMeetingPoint, keys}, rep).ok());
  EXPECT_NEAR(rep.plan.compute_only_ms, 20 * 2.0, 0.5);
}

}  // namespace
}  // namespace tierkv::scheduler
