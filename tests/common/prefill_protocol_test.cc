// Wire messages of co-scheduled prefill and the stats reply's prefill fields: round trips,
// truncation at every byte, bad values named, and stats replies from before the fields existed.
#include "tierkv/prefill_protocol.h"

#include <gtest/gtest.h>

#include <cstring>

namespace tierkv::proto {
namespace {

template <typename Msg>
std::vector<uint8_t> encoded(const Msg& m) {
  std::vector<uint8_t> buf;
  wire::ByteWriter w(buf);
  encode(w, m);
  return buf;
}

template <typename Msg>
Status decoded(const std::vector<uint8_t>& buf, Msg& out) {
  wire::ByteReader r(buf);
  return decode(r, out);
}

// Every strict prefix of a valid encoding fails to decode, naming a field or the shape.
template <typename Msg>
void expect_truncations_fail(const std::vector<uint8_t>& buf) {
  for (size_t cut = 0; cut < buf.size(); ++cut) {
    wire::ByteReader r(std::span<const uint8_t>(buf).first(cut));
    Msg out;
    Status s = decode(r, out);
    ASSERT_FALSE(s.ok()) << "decoded a payload cut at " << cut << " of " << buf.size();
    EXPECT_NE(s.message().find("field '"), std::string::npos) << s.message();
  }
}

PrefillProgress sample_progress() {
  PrefillProgress p;
  p.grant_end = 5;
  p.load_front = 9;
  p.met = 0;
  p.ready = {PrefillReady{9, 0, SlotRef{3, 0, 4096, 65536}, 10, 250},
             PrefillReady{0, 0, SlotRef{4, 0, 8192, 65536}, 0, 0}};
  p.failed = {11};
  return p;
}

TEST(PrefillProtocolTest, OpcodesAreTheirOwnRange) {
  for (Op op : {Op::kPrefillBegin, Op::kPrefillProfile, Op::kPrefillComputed, Op::kPrefillPoll,
                Op::kPrefillEnd}) {
    const auto v = static_cast<uint16_t>(op);
    EXPECT_GE(v, 20);
    EXPECT_LE(v, 29);
    EXPECT_TRUE(is_known_op(v));
    EXPECT_TRUE(is_prefill_op(v));
    EXPECT_NE(op_name(op), "unknown");
  }
  EXPECT_EQ(op_name(Op::kPrefillComputed), "prefill_computed");
  EXPECT_FALSE(is_prefill_op(static_cast<uint16_t>(Op::kLoad)));
  EXPECT_FALSE(is_known_op(25));
  EXPECT_FALSE(is_known_op(19));
}

TEST(PrefillProtocolTest, BeginRoundTrips) {
  PrefillBeginRequest req;
  req.ns = 0xabc;
  req.prompt_tokens = 777;
  req.compute_lookahead = 3;
  req.meeting_point = 4;
  req.keys = {ChunkKey{1, 2}, ChunkKey{3, 4}};
  const auto buf = encoded(req);
  PrefillBeginRequest out;
  ASSERT_TRUE(decoded(buf, out).ok());
  EXPECT_EQ(out.ns, req.ns);
  EXPECT_EQ(out.prompt_tokens, 777u);
  EXPECT_EQ(out.compute_lookahead, 3u);
  EXPECT_EQ(out.meeting_point, 4u);
  EXPECT_EQ(out.keys, req.keys);
  expect_truncations_fail<PrefillBeginRequest>(buf);

  PrefillBeginReply rep;
  rep.session = 42;
  rep.total_chunks = 20;
  rep.cached_chunks = 12;
  rep.tiers = std::vector<Tier>(12, Tier::kNvme);
  rep.tiers[0] = Tier::kHost;
  rep.plan.meeting_point = 7;
  rep.plan.load_chunks = 5;
  rep.plan.resident_chunks = 1;
  rep.plan.queue_depth = 4;
  rep.plan.loading_helps = 1;
  rep.plan.compute_only_ms = 100.5;
  rep.plan.load_only_ms = 200.25;
  rep.plan.bidir_ms = 60.125;
  rep.progress = sample_progress();
  const auto rbuf = encoded(rep);
  PrefillBeginReply rout;
  ASSERT_TRUE(decoded(rbuf, rout).ok());
  EXPECT_EQ(rout.session, 42u);
  EXPECT_EQ(rout.cached_chunks, 12u);
  EXPECT_EQ(rout.tiers, rep.tiers);
  EXPECT_EQ(rout.plan.meeting_point, 7u);
  EXPECT_EQ(rout.plan.loading_helps, 1);
  EXPECT_DOUBLE_EQ(rout.plan.bidir_ms, 60.125);
  ASSERT_EQ(rout.progress.ready.size(), 2u);
  EXPECT_EQ(rout.progress.ready[0].slot.offset, 4096u);
  EXPECT_EQ(rout.progress.ready[0].completed_us, 250u);
  EXPECT_EQ(rout.progress.failed, std::vector<uint32_t>{11});
  expect_truncations_fail<PrefillBeginReply>(rbuf);
}

TEST(PrefillProtocolTest, ProgressComputedPollEndRoundTrip) {
  const PrefillProgress p = sample_progress();
  PrefillProgress pout;
  ASSERT_TRUE(decoded(encoded(p), pout).ok());
  EXPECT_EQ(pout.grant_end, 5u);
  EXPECT_EQ(pout.load_front, 9u);
  EXPECT_EQ(pout.ready.size(), 2u);
  expect_truncations_fail<PrefillProgress>(encoded(p));

  PrefillComputedRequest c{9, 3, {1, 2}};
  PrefillComputedRequest cout;
  ASSERT_TRUE(decoded(encoded(c), cout).ok());
  EXPECT_EQ(cout.session, 9u);
  EXPECT_EQ(cout.chunk, 3u);
  EXPECT_EQ(cout.release, (std::vector<uint32_t>{1, 2}));
  expect_truncations_fail<PrefillComputedRequest>(encoded(c));

  PrefillPollRequest q{9, 5000, {4}};
  PrefillPollRequest qout;
  ASSERT_TRUE(decoded(encoded(q), qout).ok());
  EXPECT_EQ(qout.timeout_us, 5000u);
  EXPECT_EQ(qout.release, std::vector<uint32_t>{4});

  PrefillEndRequest e{9, 1};
  PrefillEndRequest eout;
  ASSERT_TRUE(decoded(encoded(e), eout).ok());
  EXPECT_EQ(eout.cancel, 1);

  PrefillSummary s;
  s.chunks = 10;
  s.loaded = 4;
  s.computed = 6;
  s.actual_meeting_point = 6;
  s.met = 1;
  s.met_us = 1234;
  PrefillSummary sout;
  ASSERT_TRUE(decoded(encoded(s), sout).ok());
  EXPECT_EQ(sout.actual_meeting_point, 6u);
  EXPECT_EQ(sout.met_us, 1234u);
}

TEST(PrefillProtocolTest, ProfileRoundTripsAndBadValuesAreNamed) {
  PrefillProfileRequest m{7, ProfileKind::kTable, 0.5, 1e-6, 512, {{0, 15}, {32768, 29}}};
  PrefillProfileRequest out;
  ASSERT_TRUE(decoded(encoded(m), out).ok());
  EXPECT_EQ(out.kind, ProfileKind::kTable);
  EXPECT_EQ(out.table_chunk_tokens, 512u);
  ASSERT_EQ(out.table.size(), 2u);
  EXPECT_DOUBLE_EQ(out.table[1].chunk_ms, 29);
  expect_truncations_fail<PrefillProfileRequest>(encoded(m));

  auto buf = encoded(m);
  buf[8] = 3;  // the kind byte follows the u64 namespace
  Status s = decoded(buf, out);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("kind = 3"), std::string::npos) << s.message();
}

TEST(PrefillProtocolTest, BadRequestValuesAreRejected) {
  PrefillBeginRequest b;
  b.compute_lookahead = 0;
  PrefillBeginRequest bout;
  Status s = decoded(encoded(b), bout);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("compute_lookahead"), std::string::npos);

  PrefillPollRequest q{1, kMaxPrefillWaitUs + 1, {}};
  PrefillPollRequest qout;
  s = decoded(encoded(q), qout);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("timeout_us"), std::string::npos);

  PrefillEndRequest e{1, 2};
  PrefillEndRequest eout;
  EXPECT_EQ(decoded(encoded(e), eout).code(), StatusCode::kInvalidArgument);

  auto buf = encoded(PrefillComputedRequest{1, 2, {}});
  buf.push_back(0);
  PrefillComputedRequest cout;
  EXPECT_EQ(decoded(buf, cout).code(), StatusCode::kProtocolError);
}

TEST(PrefillProtocolTest, StatsReplyCarriesNvmeIoCountersLast) {
  StatsReply st;
  st.daemon_version = "0.1.0";
  st.nvme_io.submits = 7;
  st.nvme_io.depth_ns = 123456789;
  st.nvme_io.worker_hash_ns = 42;
  st.nvme_io.verify_threads = 2;
  st.nvme_io.verifies_in_flight = 3;
  auto buf = encoded(st);
  StatsReply out;
  ASSERT_TRUE(decoded(buf, out).ok());
  EXPECT_EQ(out.nvme_io.submits, 7u);
  EXPECT_EQ(out.nvme_io.depth_ns, 123456789u);
  EXPECT_EQ(out.nvme_io.worker_hash_ns, 42u);
  EXPECT_EQ(out.nvme_io.verify_threads, 2u);
  EXPECT_EQ(out.nvme_io.verifies_in_flight, 3u);
  buf.resize(buf.size() - 1);
  const Status s = decoded(buf, out);
  EXPECT_EQ(s.code(), StatusCode::kProtocolError);
  EXPECT_NE(s.message().find("nvme_io"), std::string::npos) << s.message();
}

TEST(PrefillProtocolTest, StatsReplyCarriesPrefillFieldsAtTheEnd) {
  StatsReply st;
  st.daemon_version = "0.1.0";
  st.tiers.resize(4);
  st.prefill.sessions_started = 3;
  st.prefill.wasted_loads = 0;
  st.prefill.last_planned_meeting_point = 17;
  st.tier_bandwidth = {TierBandwidth{Tier::kNvme, 0, {}, 1.5, 90, 12}};
  PrefillRecord rec;
  rec.session = 2;
  rec.planned_meeting_point = 10;
  rec.actual_meeting_point = 11;
  rec.saved_ms = 123.5;
  st.recent_prefills = {rec};
  auto buf = encoded(st);
  StatsReply out;
  ASSERT_TRUE(decoded(buf, out).ok());
  EXPECT_EQ(out.prefill.sessions_started, 3u);
  EXPECT_EQ(out.prefill.last_planned_meeting_point, 17u);
  ASSERT_EQ(out.tier_bandwidth.size(), 1u);
  EXPECT_DOUBLE_EQ(out.tier_bandwidth[0].read_GBps, 1.5);
  ASSERT_EQ(out.recent_prefills.size(), 1u);
  EXPECT_EQ(out.recent_prefills[0].actual_meeting_point, 11u);
  EXPECT_DOUBLE_EQ(out.recent_prefills[0].saved_ms, 123.5);

  // One protocol version, one shape: a reply cut before these fields is an error naming one.
  buf.resize(buf.size() - sizeof(NvmeIoStats) - sizeof(PrefillRecord) - 4);
  StatsReply cut;
  const Status s = decoded(buf, cut);
  EXPECT_EQ(s.code(), StatusCode::kProtocolError);
  EXPECT_NE(s.message().find("recent_prefills"), std::string::npos) << s.message();
}

}  // namespace
}  // namespace tierkv::proto
