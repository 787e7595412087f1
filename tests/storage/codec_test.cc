#include "tierkv/storage/codec.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "codec_test_util.h"
#include "tierkv/storage/representative_store.h"

namespace tierkv::storage {
namespace {

using testing::count_bound_violations;
using testing::kv_like_chunk;

Layout small_layout(DType dtype = DType::kBFloat16) {
  Layout l;
  l.num_layers = 3;
  l.num_kv_heads = 2;
  l.head_dim = 32;
  l.dtype = dtype;
  l.chunk_tokens = 48;
  return l;
}

// ---- config strings ------------------------------------------------------------------------

TEST(CodecConfig, ParsesAndPrintsCanonically) {
  struct Case {
    const char* spec;
    const char* canonical;
  };
  for (const Case& c :
       {Case{"raw", "raw"}, Case{"zstd", "zstd:1:bytes"}, Case{"zstd:7", "zstd:7:bytes"},
        Case{"zstd:bits:-2", "zstd:-2:bits"}, Case{"fp8", "fp8"}, Case{"fp8:auto", "fp8"},
        Case{"fp8:e4m3", "fp8:e4m3"}, Case{"int8", "int8:k256"}, Case{"int8:k0", "int8:k0"},
        Case{"int8:k32", "int8:k32"}, Case{"int4", "int4:g32"}, Case{"int4:g64", "int4:g64"},
        Case{"fused", "fused:0.95:b16:rep=int8:res=int4:rope=0:window=16"},
        Case{"fused:0.9:b8:rep=raw:res=none:rope=10000:window=4",
             "fused:0.9:b8:rep=raw:res=none:rope=10000:window=4"}}) {
    auto parsed = CodecConfig::parse(c.spec);
    ASSERT_TRUE(parsed.ok()) << c.spec << ": " << parsed.status().to_string();
    EXPECT_EQ(parsed->to_string(), c.canonical);
    auto again = CodecConfig::parse(parsed->to_string());
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(*again, *parsed);
  }
}

TEST(CodecConfig, RejectsBadSpecsNamingTheProblem) {
  for (const char* spec :
       {"", "lz4", "raw:1", "zstd:99", "zstd:fast", "int4:32", "int4:g0", "fused:1.5", "fused:b0",
        "fused:rep=int4", "fused:res=raw", "fused:rope=-1", "fused:foo=1", "fp8:x", "fp8:e4m3:auto",
        "int8:32", "int8:k", "int8:k70000", "int8:g32"}) {
    auto parsed = CodecConfig::parse(spec);
    EXPECT_FALSE(parsed.ok()) << spec;
    if (!parsed.ok()) {
      EXPECT_NE(parsed.status().message().find("codec '"), std::string::npos);
    }
  }
}

// ---- round trips on random KV-like data ----------------------------------------------------

struct RoundTripCase {
  const char* spec;
  DType dtype;
};

class CodecRoundTrip : public ::testing::TestWithParam<RoundTripCase> {};

TEST_P(CodecRoundTrip, WithinStatedBound) {
  const auto [spec, dtype] = GetParam();
  const Layout layout = small_layout(dtype);
  RepresentativeStore reps;
  auto codec = make_codec(spec, &reps);
  ASSERT_TRUE(codec.ok()) << codec.status().to_string();
  const CodecConfig& config = (*codec)->config();
  for (uint32_t seed = 1; seed <= 3; ++seed) {
    const auto chunk = kv_like_chunk(layout, seed);
    EncodeBuffer enc;
    ASSERT_TRUE((*codec)->encode(layout, chunk, enc).ok());
    auto info = verify_chunk(enc.bytes());
    ASSERT_TRUE(info.ok()) << info.status().to_string();
    EXPECT_EQ(info->codec, config.id);
    EXPECT_EQ(info->layout, layout);
    EXPECT_EQ(info->logical_bytes, chunk.size());
    std::vector<std::byte> out(chunk.size());
    ASSERT_TRUE((*codec)->decode(enc.bytes(), out).ok());
    switch (config.id) {
      case CodecId::kRaw:
      case CodecId::kZstd:
        EXPECT_EQ(out, chunk) << "lossless codec must be bit-exact";
        break;
      case CodecId::kFp8:
      case CodecId::kInt8:
      case CodecId::kInt4:
        EXPECT_EQ(count_bound_violations(config, layout, chunk, out), 0u);
        EXPECT_LT(enc.size(), chunk.size());
        break;
      case CodecId::kFused: {
        const double e_rep = config.fused_rep == BlockFormat::kFp8    ? 0.0625
                             : config.fused_rep == BlockFormat::kInt8 ? 0.02
                                                                      : 0.0;
        EXPECT_LE(testing::fused_worst_block(layout, config.fused_block_tokens,
                                             config.fused_threshold, e_rep, chunk, out),
                  1.0);
        break;
      }
    }
    // A decoder that knows nothing of the config decodes it the same.
    ChunkDecoder decoder(&reps);
    std::vector<std::byte> out2(chunk.size());
    ASSERT_TRUE(decoder.decode(enc.bytes(), out2).ok());
    EXPECT_EQ(out2, out);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Codecs, CodecRoundTrip,
    ::testing::Values(
        RoundTripCase{"raw", DType::kBFloat16}, RoundTripCase{"zstd:1:bytes", DType::kBFloat16},
        RoundTripCase{"zstd:3:bits", DType::kFloat16},
        RoundTripCase{"zstd:3:none", DType::kFloat32},
        RoundTripCase{"zstd:3:bytes", DType::kFloat32},
        RoundTripCase{"zstd:3:bits", DType::kFloat32}, RoundTripCase{"fp8", DType::kBFloat16},
        RoundTripCase{"fp8", DType::kFloat16}, RoundTripCase{"fp8", DType::kFloat32},
        RoundTripCase{"fp8:e4m3", DType::kBFloat16}, RoundTripCase{"fp8:e4m3", DType::kFloat16},
        RoundTripCase{"int8", DType::kBFloat16}, RoundTripCase{"int8", DType::kFloat16},
        RoundTripCase{"int8:k0", DType::kBFloat16}, RoundTripCase{"int8:k5", DType::kFloat32},
        RoundTripCase{"int4", DType::kBFloat16}, RoundTripCase{"int4:g16", DType::kFloat32},
        RoundTripCase{"fused:0.5:b16:rep=fp8:res=int4", DType::kBFloat16},
        RoundTripCase{"fused:0.2:b8:rep=raw:res=none", DType::kFloat16},
        RoundTripCase{"fused:0.9:b16:rep=int8:res=int8:rope=10000", DType::kBFloat16}),
    [](const auto& info) {
      std::string name =
          std::string(info.param.spec) + "_" + std::string(dtype_name(info.param.dtype));
      std::replace_if(
          name.begin(), name.end(), [](char c) { return !std::isalnum(c); }, '_');
      return name;
    });

TEST(Codec, LosslessCodecsTakeAnyDtype) {
  Layout layout = small_layout(DType::kInt8);
  std::vector<std::byte> chunk(layout.chunk_bytes());
  std::mt19937 rng(3);
  for (auto& b : chunk) b = static_cast<std::byte>(rng() % 7);
  for (const char* spec : {"raw", "zstd:3:bits", "zstd:1:bytes"}) {
    auto codec = make_codec(spec);
    ASSERT_TRUE(codec.ok());
    EncodeBuffer enc;
    ASSERT_TRUE((*codec)->encode(layout, chunk, enc).ok()) << spec;
    std::vector<std::byte> out(chunk.size());
    ASSERT_TRUE((*codec)->decode(enc.bytes(), out).ok()) << spec;
    EXPECT_EQ(out, chunk) << spec;
  }
  auto fp8 = make_codec("fp8");
  EncodeBuffer enc;
  EXPECT_FALSE((*fp8)->encode(layout, chunk, enc).ok()) << "int8 KV cannot be re-quantized";
}

TEST(Codec, ZstdCompressesSmoothData) {
  const Layout layout = small_layout();
  const auto chunk = kv_like_chunk(layout, 9);
  for (const char* spec : {"zstd:3:bytes", "zstd:3:bits"}) {
    auto codec = make_codec(spec);
    EncodeBuffer enc;
    ASSERT_TRUE((*codec)->encode(layout, chunk, enc).ok());
    EXPECT_LT(enc.size(), chunk.size() * 95 / 100) << spec;
  }
}

// A chunk big enough for the zstd codec to sample its planes: 4 layers x 4 heads x 64 x 64.
Layout zstd_layout(DType dtype) {
  Layout l;
  l.num_layers = 4;
  l.num_kv_heads = 4;
  l.head_dim = 64;
  l.dtype = dtype;
  l.chunk_tokens = 64;
  return l;
}

// 2-byte floats whose high byte takes `common` values most of the time and one of `rare` others
// with probability `p_rare`; the low byte is random (a mantissa).
std::vector<std::byte> high_byte_chunk(const Layout& layout, uint32_t common, uint32_t rare,
                                       double p_rare, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> u(0, 1);
  std::vector<std::byte> chunk(layout.chunk_bytes());
  for (size_t i = 0; i < chunk.size(); i += 2) {
    chunk[i] = static_cast<std::byte>(rng());
    const uint32_t v = u(rng) < p_rare ? 0x80 + rng() % rare : 0x38 + rng() % common;
    chunk[i + 1] = static_cast<std::byte>(v);
  }
  return chunk;
}

uint8_t param(const EncodeBuffer& enc, size_t i) {
  auto info = verify_chunk(enc.bytes());
  return info.ok() ? std::to_integer<uint8_t>(info->params[i]) : 0xff;
}

TEST(Codec, ZstdStoresRandomPlanesRawAndCodesHighBytesAsNibblePairs) {
  for (DType dtype : {DType::kBFloat16, DType::kFloat16}) {
    const Layout layout = zstd_layout(dtype);
    auto codec = make_codec("zstd:1:bytes");
    ChunkDecoder decoder;
    std::vector<std::byte> out(layout.chunk_bytes());
    // Few high-byte values (real KV's sign and exponent): nibble pairs, escapes included.
    for (double p_rare : {0.0, 0.001, 0.01}) {
      const auto chunk = high_byte_chunk(layout, 12, 40, p_rare, 3);
      EncodeBuffer enc;
      ASSERT_TRUE((*codec)->encode(layout, chunk, enc).ok());
      EXPECT_EQ(param(enc, 2), 1) << "the random low plane is stored raw";
      EXPECT_EQ(param(enc, 3), 1) << "high plane as nibble pairs, p_rare " << p_rare;
      ASSERT_TRUE(decoder.decode(enc.bytes(), out).ok());
      EXPECT_EQ(out, chunk) << p_rare;
      EXPECT_LT(enc.size(), chunk.size() * 4 / 5) << p_rare;  // 12 values: ~3.6 bits of 8
    }
    // Many distinct high bytes: the plain high plane.
    const auto spread = high_byte_chunk(layout, 12, 40, 0.2, 4);
    EncodeBuffer enc;
    ASSERT_TRUE((*codec)->encode(layout, spread, enc).ok());
    EXPECT_EQ(param(enc, 2), 1);
    EXPECT_EQ(param(enc, 3), 0);
    ASSERT_TRUE(decoder.decode(enc.bytes(), out).ok());
    EXPECT_EQ(out, spread);
  }
  // fp32: the two random low planes raw, the rest through zstd.
  const Layout layout = zstd_layout(DType::kFloat32);
  const auto chunk = kv_like_chunk(layout, 6);
  auto codec = make_codec("zstd:1:bytes");
  EncodeBuffer enc;
  ASSERT_TRUE((*codec)->encode(layout, chunk, enc).ok());
  EXPECT_EQ(param(enc, 2) & 1, 1);
  EXPECT_EQ(param(enc, 3), 0);
  std::vector<std::byte> out(chunk.size());
  ASSERT_TRUE((*codec)->decode(enc.bytes(), out).ok());
  EXPECT_EQ(out, chunk);
}

// Chunks too small to sample (and every chunk written before raw planes and nibble pairs
// existed) hold all their planes in one zstd frame, params [2] and [3] zero; they decode.
TEST(Codec, ZstdSmallChunksKeepTheSingleFrameFormat) {
  Layout layout = small_layout();
  layout.num_layers = 1;
  layout.chunk_tokens = 16;  // 1024 elements: too few to sample
  const auto chunk = kv_like_chunk(layout, 8);
  auto codec = make_codec("zstd:1:bytes");
  EncodeBuffer enc;
  ASSERT_TRUE((*codec)->encode(layout, chunk, enc).ok());
  EXPECT_EQ(param(enc, 2), 0);
  EXPECT_EQ(param(enc, 3), 0);
  std::vector<std::byte> out(chunk.size());
  ASSERT_TRUE(ChunkDecoder().decode(enc.bytes(), out).ok());
  EXPECT_EQ(out, chunk);
}

TEST(Codec, EncodeRejectsWrongSizesAndLayouts) {
  const Layout layout = small_layout();
  auto codec = make_codec("zstd");
  EncodeBuffer enc;
  std::vector<std::byte> chunk(layout.chunk_bytes() - 1);
  EXPECT_FALSE((*codec)->encode(layout, chunk, enc).ok());
  Layout bad = layout;
  bad.chunk_tokens = 0;
  EXPECT_FALSE((*codec)->encode(bad, chunk, enc).ok());
}

TEST(Codec, EncodeBufferKeepsItsCapacity) {
  const Layout layout = small_layout();
  const auto chunk = kv_like_chunk(layout, 1);
  auto codec = make_codec("int8");
  EncodeBuffer enc;
  ASSERT_TRUE((*codec)->encode(layout, chunk, enc).ok());
  const std::byte* first = enc.bytes().data();
  ASSERT_TRUE((*codec)->encode(layout, chunk, enc).ok());
  EXPECT_EQ(enc.bytes().data(), first) << "the second chunk reused the buffer";
}

// ---- config changes --------------------------------------------------------------------------

TEST(CodecRegistry, ChunksDecodeAfterTheConfigChanges) {
  RepresentativeStore reps;
  CodecRegistry registry(&reps);
  const Layout layout = small_layout();
  const auto chunk = kv_like_chunk(layout, 4);
  std::vector<std::pair<std::string, std::vector<std::byte>>> stored;
  for (const char* spec :
       {"zstd:5:bits", "int4:g16", "fp8", "fp8:e4m3", "int8:k0", "int8:k8", "fused:0.8", "raw"}) {
    ASSERT_TRUE(registry.set_default(spec).ok());
    auto enc = registry.make_encoder();
    ASSERT_TRUE(enc.ok());
    EncodeBuffer buf;
    ASSERT_TRUE((*enc)->encode(layout, chunk, buf).ok());
    stored.emplace_back(spec, std::vector<std::byte>(buf.bytes().begin(), buf.bytes().end()));
  }
  // The config is now "raw"; every chunk still decodes by its own header, the lossless one
  // exactly, and each decodes the same as its own codec decodes it.
  ASSERT_TRUE(registry.set_default("int8").ok());
  ChunkDecoder decoder = registry.make_decoder();
  for (const auto& [spec, bytes] : stored) {
    std::vector<std::byte> out(chunk.size());
    ASSERT_TRUE(decoder.decode(bytes, out).ok()) << spec;
    auto own = make_codec(spec, &reps);
    std::vector<std::byte> own_out(chunk.size());
    ASSERT_TRUE((*own)->decode(bytes, own_out).ok()) << spec;
    EXPECT_EQ(out, own_out) << spec;
    if (spec.rfind("zstd", 0) == 0 || spec == "raw") {
      EXPECT_EQ(out, chunk) << spec;
    }
  }
  EXPECT_FALSE(registry.set_default("nope").ok());
  EXPECT_EQ(registry.default_config().to_string(), "int8:k256") << "a bad spec leaves the default";
  CodecRegistry no_store;
  EXPECT_FALSE(no_store.set_default("fused").ok());
}

TEST(CodecRegistry, DecoderRejectsAChunkOfAnotherCodec) {
  const Layout layout = small_layout();
  const auto chunk = kv_like_chunk(layout, 4);
  auto zstd = make_codec("zstd");
  auto fp8 = make_codec("fp8");
  EncodeBuffer enc;
  ASSERT_TRUE((*zstd)->encode(layout, chunk, enc).ok());
  std::vector<std::byte> out(chunk.size());
  const Status s = (*fp8)->decode(enc.bytes(), out);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("zstd"), std::string::npos) << s.message();
}

// ---- corrupt input -----------------------------------------------------------------------------

// Rewrites the header checksums so a mutation reaches the codec's own checks.
void fix_checksums(std::vector<std::byte>& enc) {
  if (enc.size() < kChunkHeaderBytes) return;
  const uint64_t payload =
      XXH3_64bits(enc.data() + kChunkHeaderBytes, enc.size() - kChunkHeaderBytes);
  std::memcpy(enc.data() + 64, &payload, 8);
  const uint64_t header = XXH3_64bits(enc.data(), 72);
  std::memcpy(enc.data() + 72, &header, 8);
}

class CodecCorruption : public ::testing::TestWithParam<const char*> {};

TEST_P(CodecCorruption, RejectsFlippedTruncatedAndForgedInput) {
  RepresentativeStore reps;
  auto codec = make_codec(GetParam(), &reps);
  ASSERT_TRUE(codec.ok());
  const Layout layout = small_layout();
  const auto chunk = kv_like_chunk(layout, 5);
  EncodeBuffer buf;
  ASSERT_TRUE((*codec)->encode(layout, chunk, buf).ok());
  const std::vector<std::byte> good(buf.bytes().begin(), buf.bytes().end());
  std::vector<std::byte> out(chunk.size());
  ChunkDecoder decoder(&reps);
  std::mt19937 rng(17);

  // Any flipped bit, anywhere: the checksums catch it.
  for (int i = 0; i < 200; ++i) {
    auto bad = good;
    const size_t pos = i < 80 ? static_cast<size_t>(i) : rng() % bad.size();
    bad[pos] ^= static_cast<std::byte>(1u << (rng() % 8));
    EXPECT_FALSE(decoder.decode(bad, out).ok()) << "flip at " << pos;
  }
  // Truncated or padded.
  for (size_t len :
       {size_t{0}, size_t{1}, size_t{79}, size_t{80}, good.size() / 2, good.size() - 1}) {
    EXPECT_FALSE(decoder.decode(std::span(good).first(len), out).ok()) << "length " << len;
  }
  auto padded = good;
  padded.push_back(std::byte{0});
  EXPECT_FALSE(decoder.decode(padded, out).ok());
  // Wrong output size.
  std::vector<std::byte> small(chunk.size() - 2);
  EXPECT_FALSE(decoder.decode(good, small).ok());

  // Forged headers with valid checksums: absurd sizes, layouts, versions, codec ids, params.
  auto forge = [&](size_t off, const void* v, size_t n) {
    auto bad = good;
    std::memcpy(bad.data() + off, v, n);
    fix_checksums(bad);
    return bad;
  };
  const uint64_t huge = ~0ull;
  const uint32_t big = 1u << 30;
  const uint16_t version = 99;
  const uint8_t codec_id = 42;
  for (const auto& bad : {forge(40, &huge, 8), forge(32, &huge, 8), forge(8, &big, 4),
                          forge(12, &big, 4), forge(4, &version, 2), forge(6, &codec_id, 1),
                          forge(7, &codec_id, 1), forge(24, &huge, 8)}) {
    EXPECT_FALSE(decoder.decode(bad, out).ok());
  }
  // Random bytes in the params and payload with valid checksums must not crash (ASan checks);
  // the result may be an error or (for bytes that happen to be a valid encoding) garbage.
  for (int i = 0; i < 300; ++i) {
    auto bad = good;
    const int flips = 1 + static_cast<int>(rng() % 8);
    for (int f = 0; f < flips; ++f) {
      const size_t pos = 48 + rng() % (bad.size() - 48);
      if (pos >= 64 && pos < 80) continue;
      bad[pos] = static_cast<std::byte>(rng());
    }
    fix_checksums(bad);
    (void)decoder.decode(bad, out);
  }
}

// Nibble-pair chunks whose pair header lies (checksums fixed): too many or too few escapes, an
// escape count beyond the payload, a frame cut short. Each is an error, never a fault.
TEST(Codec, ZstdRejectsForgedPairHeaders) {
  const Layout layout = zstd_layout(DType::kBFloat16);
  const auto chunk = high_byte_chunk(layout, 12, 40, 0.005, 9);
  auto codec = make_codec("zstd:1:bytes");
  EncodeBuffer enc;
  ASSERT_TRUE((*codec)->encode(layout, chunk, enc).ok());
  ASSERT_EQ(param(enc, 3), 1);
  const std::vector<std::byte> good(enc.bytes().begin(), enc.bytes().end());
  const uint64_t n = chunk.size() / 2;
  const size_t at = kChunkHeaderBytes + n;  // the pair header, after the raw low plane
  uint32_t escapes;
  std::memcpy(&escapes, good.data() + at, 4);
  ASSERT_GT(escapes, 0u);
  std::vector<std::byte> out(chunk.size());
  for (uint32_t forged : {escapes - 1, escapes + 1, 0u, ~0u, static_cast<uint32_t>(n)}) {
    auto bad = good;
    std::memcpy(bad.data() + at, &forged, 4);
    fix_checksums(bad);
    EXPECT_FALSE((*codec)->decode(bad, out).ok()) << forged;
  }
  // A table entry changed: wrong values, but the payload checksum was fixed, so it decodes to
  // something — without a fault.
  auto table = good;
  table[at + 4] ^= std::byte{0x40};
  fix_checksums(table);
  (void)(*codec)->decode(table, out);
  // Cut inside the pair header and inside the frame.
  for (size_t len : {at + 2, at + 10, good.size() - 5}) {
    std::vector<std::byte> cut(good.begin(), good.begin() + static_cast<ptrdiff_t>(len));
    uint64_t payload = len - kChunkHeaderBytes;
    std::memcpy(cut.data() + 40, &payload, 8);
    fix_checksums(cut);
    EXPECT_FALSE((*codec)->decode(cut, out).ok()) << len;
  }
}

INSTANTIATE_TEST_SUITE_P(Codecs, CodecCorruption,
                         ::testing::Values("raw", "zstd:3:bytes", "zstd:3:bits", "fp8", "int8",
                                           "int8:k0", "int4:g16", "fused:0.5:res=int4",
                                           "fused:0.5:rep=raw:res=none:rope=10000"),
                         [](const auto& info) {
                           std::string name = info.param;
                           std::replace_if(
                               name.begin(), name.end(), [](char c) { return !std::isalnum(c); },
                               '_');
                           return name;
                         });

}  // namespace
}  // namespace tierkv::storage
