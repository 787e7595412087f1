#include "tierkv/protocol.h"

#include <gtest/gtest.h>

#include <cstring>

namespace tierkv::proto {
namespace {

std::array<uint8_t, kHeaderBytes> header_bytes(const FrameHeader& h) {
  std::array<uint8_t, kHeaderBytes> b{};
  std::memcpy(b.data(), &h, sizeof(h));
  return b;
}

TEST(FrameParserTest, AcceptsAValidHeader) {
  FrameHeader h;
  h.payload_bytes = 100;
  h.op = static_cast<uint16_t>(Op::kLookup);
  h.request_id = 42;
  auto parsed = parse_header(header_bytes(h));
  ASSERT_TRUE(parsed.ok()) << parsed.status().to_string();
  EXPECT_EQ(parsed->payload_bytes, 100u);
  EXPECT_EQ(parsed->op, static_cast<uint16_t>(Op::kLookup));
  EXPECT_EQ(parsed->request_id, 42u);
}

TEST(FrameParserTest, RejectsOversizedLength) {
  FrameHeader h;
  h.payload_bytes = kMaxPayloadBytes + 1;
  auto parsed = parse_header(header_bytes(h));
  ASSERT_FALSE(parsed.ok());
  EXPECT_EQ(parsed.status().code(), StatusCode::kProtocolError);
  EXPECT_NE(parsed.status().message().find(std::to_string(kMaxPayloadBytes + 1)), std::string::npos);
}

TEST(FrameParserTest, RejectsNonZeroReserved) {
  FrameHeader h;
  h.reserved = 7;
  EXPECT_FALSE(parse_header(header_bytes(h)).ok());
}

TEST(FrameParserTest, KnownOps) {
  EXPECT_TRUE(is_known_op(static_cast<uint16_t>(Op::kHello)));
  EXPECT_TRUE(is_known_op(static_cast<uint16_t>(Op::kListNamespaces)));
  EXPECT_FALSE(is_known_op(0));
  EXPECT_FALSE(is_known_op(999));
}

TEST(FrameParserTest, RoundTripsAPutBegin) {
  PutBeginRequest req;
  req.ns = 0x1234;
  req.parent = ChunkKey{5, 6};
  req.chunk_bytes = 1 << 20;
  req.keys = {ChunkKey{1, 2}, ChunkKey{3, 4}};
  std::vector<uint8_t> buf;
  begin_frame(buf, Op::kPutBegin, 9, StatusCode::kOk);
  wire::ByteWriter w(buf);
  encode(w, req);
  ASSERT_TRUE(end_frame(buf).ok());
  auto h = parse_header(std::span<const uint8_t, kHeaderBytes>(buf.data(), kHeaderBytes));
  ASSERT_TRUE(h.ok());
  ASSERT_EQ(h->payload_bytes, buf.size() - kHeaderBytes);
  wire::ByteReader r(std::span<const uint8_t>(buf).subspan(kHeaderBytes));
  PutBeginRequest out;
  ASSERT_TRUE(decode(r, out).ok());
  EXPECT_EQ(out.ns, req.ns);
  EXPECT_EQ(out.parent, req.parent);
  EXPECT_EQ(out.chunk_bytes, req.chunk_bytes);
  EXPECT_EQ(out.keys, req.keys);
}

TEST(FrameParserTest, TruncatedPayloadNamesTheField) {
  KeysRequest req{7, {ChunkKey{1, 2}, ChunkKey{3, 4}, ChunkKey{5, 6}}};
  std::vector<uint8_t> buf;
  wire::ByteWriter w(buf);
  encode(w, req);
  for (size_t cut = 0; cut < buf.size(); ++cut) {
    wire::ByteReader r(std::span<const uint8_t>(buf).first(cut));
    KeysRequest out;
    Status s = decode(r, out);
    ASSERT_FALSE(s.ok()) << "cut at " << cut;
    EXPECT_NE(s.message().find(cut < 8 ? "'ns'" : "'keys'"), std::string::npos) << s.message();
  }
}

TEST(FrameParserTest, KeysRequestViewEncodesAsAKeysRequest) {
  const std::vector<ChunkKey> keys{ChunkKey{1, 2}, ChunkKey{3, 4}, ChunkKey{5, 6}};
  std::vector<uint8_t> owned, viewed;
  wire::ByteWriter wo(owned), wv(viewed);
  encode(wo, KeysRequest{7, keys});
  encode(wv, KeysRequestView{7, keys});
  EXPECT_EQ(owned, viewed);
  wire::ByteReader r(viewed);
  KeysRequest out;
  ASSERT_TRUE(decode(r, out).ok());
  EXPECT_EQ(out.ns, 7u);
  EXPECT_EQ(out.keys, keys);
}

TEST(FrameParserTest, TrailingBytesAreAnError) {
  SlotsRequest req{{1, 2}};
  std::vector<uint8_t> buf;
  wire::ByteWriter w(buf);
  encode(w, req);
  buf.push_back(0);
  wire::ByteReader r(buf);
  SlotsRequest out;
  Status s = decode(r, out);
  EXPECT_EQ(s.code(), StatusCode::kProtocolError);
  EXPECT_NE(s.message().find("trailing"), std::string::npos);
}

TEST(FrameParserTest, ArrayCountAboveLimitIsRejectedBeforeReading) {
  std::vector<uint8_t> buf;
  wire::ByteWriter w(buf);
  w.put<uint64_t>(1);
  w.put<uint32_t>(kMaxChunksPerRequest + 1);  // claims more keys than allowed; none follow
  wire::ByteReader r(buf);
  KeysRequest out;
  Status s = decode(r, out);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("keys"), std::string::npos);
}

TEST(FrameParserTest, ErrorFrameCarriesCodeAndMessage) {
  std::vector<uint8_t> buf;
  error_frame(buf, static_cast<uint16_t>(Op::kLoad), 3, Status::NotFound("no such namespace"));
  auto h = parse_header(std::span<const uint8_t, kHeaderBytes>(buf.data(), kHeaderBytes));
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(h->status, static_cast<uint16_t>(StatusCode::kNotFound));
  Status s = decode_error(static_cast<StatusCode>(h->status), std::span(buf).subspan(kHeaderBytes));
  EXPECT_EQ(s.code(), StatusCode::kNotFound);
  EXPECT_EQ(s.message(), "no such namespace");
}

TEST(FrameParserTest, UnknownDtypeInLayoutIsRejected) {
  RegisterLayoutRequest req{Layout{1, 1, 1, DType::kBFloat16, 16}, "t", ""};
  std::vector<uint8_t> buf;
  wire::ByteWriter w(buf);
  encode(w, req);
  buf[12] = 77;  // the dtype byte follows three u32 fields
  wire::ByteReader r(buf);
  RegisterLayoutRequest out;
  Status s = decode(r, out);
  EXPECT_NE(s.message().find("dtype"), std::string::npos) << s.message();
}

}  // namespace
}  // namespace tierkv::proto
