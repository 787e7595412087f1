// The stats reply's codec fields (encoded chunks): round trip, and a reply cut inside them is an
// error naming the field.
#include <gtest/gtest.h>

#include <cstring>

#include "tierkv/protocol.h"

namespace tierkv::proto {
namespace {

std::vector<uint8_t> encoded(const StatsReply& m) {
  std::vector<uint8_t> buf;
  wire::ByteWriter w(buf);
  encode(w, m);
  return buf;
}

Status decoded(std::span<const uint8_t> buf, StatsReply& out) {
  wire::ByteReader r(buf);
  return decode(r, out);
}

TEST(CodecStatsProtocolTest, CodecFieldsRoundTripAndTruncationsFail) {
  StatsReply st;
  st.daemon_version = "0.1.0";
  st.tiers.resize(4);
  TierCodecStats host;
  host.tier = Tier::kHost;
  host.logical_bytes = host.stored_bytes = 4096;
  TierCodecStats nvme;
  nvme.tier = Tier::kNvme;
  nvme.logical_bytes = 1000000;
  nvme.stored_bytes = 420000;
  nvme.encoded_chunks = 7;
  st.tier_codecs = {host, nvme};
  st.nvme_codec = "zstd:1:bytes, bulk=fp8";
  CodecStageStats enc;
  std::strncpy(enc.name, "encode", sizeof(enc.name));
  enc.queue_depth = 3;
  enc.batch_size = 8;
  enc.workers = 4;
  enc.items = 99;
  enc.mean_latency_us = 812.5;
  st.codec_stages = {enc};
  st.codec.encodes_in_flight = 5;
  st.codec.staging_capacity_bytes = 256u << 20;
  st.codec.encode_waits = 11;
  st.codec.fused_representatives = 2;
  const auto buf = encoded(st);
  StatsReply out;
  ASSERT_TRUE(decoded(buf, out).ok());
  ASSERT_EQ(out.tier_codecs.size(), 2u);
  EXPECT_EQ(out.tier_codecs[1].tier, Tier::kNvme);
  EXPECT_EQ(out.tier_codecs[1].stored_bytes, 420000u);
  EXPECT_EQ(out.tier_codecs[1].encoded_chunks, 7u);
  EXPECT_EQ(out.nvme_codec, st.nvme_codec);
  ASSERT_EQ(out.codec_stages.size(), 1u);
  EXPECT_STREQ(out.codec_stages[0].name, "encode");
  EXPECT_EQ(out.codec_stages[0].batch_size, 8u);
  EXPECT_DOUBLE_EQ(out.codec_stages[0].mean_latency_us, 812.5);
  EXPECT_EQ(out.codec.encodes_in_flight, 5u);
  EXPECT_EQ(out.codec.encode_waits, 11u);
  EXPECT_EQ(out.codec.fused_representatives, 2u);

  // Cut inside the codec counters (the GPU tier's fields and the NVMe I/O counters follow them):
  // an error that names them.
  std::vector<uint8_t> tail;
  wire::ByteWriter tw(tail);
  tw.put(st.gpu);
  tw.put_string(st.gpu_status);
  tw.put(st.nvme_io);
  StatsReply cut;
  const Status s = decoded(std::span(buf).first(buf.size() - tail.size() - 8), cut);
  EXPECT_EQ(s.code(), StatusCode::kProtocolError);
  EXPECT_NE(s.message().find("codec"), std::string::npos) << s.message();
}

}  // namespace
}  // namespace tierkv::proto
