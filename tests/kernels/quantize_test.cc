#include "tierkv/kernels/quantize.h"

#include <gtest/gtest.h>

#include <bit>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "tierkv/kernels/half.h"

namespace tierkv::kernels {
namespace {

// ---- fp16 / bf16 conversions ---------------------------------------------------------------

TEST(Half, Fp16RoundTripsEveryPattern) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = fp16_to_f32(static_cast<uint16_t>(h));
    const uint16_t back = f32_to_fp16(f);
    if ((h & 0x7c00u) == 0x7c00u && (h & 0x3ffu) != 0) {
      EXPECT_TRUE(std::isnan(f)) << h;
      EXPECT_EQ(back & 0x7e00u, 0x7e00u) << h;  // still a (quiet) NaN
    } else {
      EXPECT_EQ(back, h) << h;
    }
  }
}

TEST(Half, Fp16MatchesCompilerConversionWithSaturation) {
  std::mt19937 rng(7);
  for (int i = 0; i < 2000000; ++i) {
    const float f = std::bit_cast<float>(static_cast<uint32_t>(rng()));
    if (std::isnan(f)) continue;
    const auto ref = std::bit_cast<uint16_t>(static_cast<_Float16>(f));
    uint16_t expect = ref;
    // The compiler rounds finite overflow to infinity; tierkv saturates.
    if (std::isfinite(f) && (ref & 0x7fffu) == 0x7c00u) expect = (ref & 0x8000u) | 0x7bffu;
    ASSERT_EQ(f32_to_fp16(f), expect) << std::hexfloat << f;
  }
  EXPECT_EQ(f32_to_fp16(65519.0f), 0x7bffu);
  EXPECT_EQ(f32_to_fp16(65520.0f), 0x7bffu);  // ties to even would give inf: saturates
  EXPECT_EQ(f32_to_fp16(1e9f), 0x7bffu);
  EXPECT_EQ(f32_to_fp16(-1e9f), 0xfbffu);
  EXPECT_EQ(f32_to_fp16(INFINITY), 0x7c00u);
  EXPECT_EQ(f32_to_fp16(0x1p-25f), 0x0000u);         // a tie at half the smallest subnormal
  EXPECT_EQ(f32_to_fp16(0x1.000002p-25f), 0x0001u);  // just above it
}

TEST(Half, Bf16RoundsToNearestEvenAndSaturates) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = bf16_to_f32(static_cast<uint16_t>(h));
    if (std::isnan(f)) continue;
    ASSERT_EQ(f32_to_bf16(f), h);
  }
  EXPECT_EQ(f32_to_bf16(std::bit_cast<float>(0x3f808000u)), 0x3f80u);  // tie, even below
  EXPECT_EQ(f32_to_bf16(std::bit_cast<float>(0x3f818000u)), 0x3f82u);  // tie, even above
  EXPECT_EQ(f32_to_bf16(std::bit_cast<float>(0x3f808001u)), 0x3f81u);
  EXPECT_EQ(f32_to_bf16(FLT_MAX), 0x7f7fu);
  EXPECT_EQ(f32_to_bf16(-FLT_MAX), 0xff7fu);
  EXPECT_EQ(f32_to_bf16(-INFINITY), 0xff80u);
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(NAN))));
}

// ---- e4m3 ----------------------------------------------------------------------------------

TEST(E4m3, DecodesKnownValues) {
  EXPECT_EQ(e4m3_to_f32(0x00), 0.0f);
  EXPECT_EQ(e4m3_to_f32(0x01), 0x1p-9f);      // smallest subnormal
  EXPECT_EQ(e4m3_to_f32(0x07), 7 * 0x1p-9f);  // largest subnormal
  EXPECT_EQ(e4m3_to_f32(0x08), 0x1p-6f);      // smallest normal
  EXPECT_EQ(e4m3_to_f32(0x38), 1.0f);
  EXPECT_EQ(e4m3_to_f32(0x7e), 448.0f);
  EXPECT_EQ(e4m3_to_f32(0xfe), -448.0f);
  EXPECT_TRUE(std::isnan(e4m3_to_f32(0x7f)));
  EXPECT_TRUE(std::isnan(e4m3_to_f32(0xff)));
}

TEST(E4m3, DecodesEveryCodeByTheFormula) {
  for (int q = 0; q < 256; ++q) {
    const int e = (q >> 3) & 15, m = q & 7;
    const double mag = e == 0 ? std::ldexp(m, -9) : std::ldexp(8 + m, e - 10);
    const float f = e4m3_to_f32(static_cast<uint8_t>(q));
    if (e == 15 && m == 7) {
      EXPECT_TRUE(std::isnan(f)) << q;
      EXPECT_EQ(std::signbit(f), (q & 0x80) != 0) << q;
    } else {
      EXPECT_EQ(double{f}, (q & 0x80) ? -mag : mag) << q;
      EXPECT_EQ(std::signbit(f), (q & 0x80) != 0) << q;
    }
  }
}

TEST(E4m3, EveryCodeRoundTrips) {
  for (int q = 0; q < 256; ++q) {
    const float f = e4m3_to_f32(static_cast<uint8_t>(q));
    if ((q & 0x7f) == 0x7f) {
      EXPECT_EQ(f32_to_e4m3(f), q);  // NaN keeps its sign
    } else if (q == 0x80) {
      EXPECT_EQ(f32_to_e4m3(f), 0x80);  // -0
    } else {
      EXPECT_EQ(f32_to_e4m3(f), q) << q;
    }
  }
}

// Brute force: the finite code nearest to x, ties to the even code (even mantissa).
uint8_t nearest_e4m3(float x) {
  const double ax = std::fabs(static_cast<double>(x));
  int best = 0;
  double best_err = INFINITY;
  for (int q = 0; q <= 0x7e; ++q) {
    const double err = std::fabs(static_cast<double>(e4m3_to_f32(static_cast<uint8_t>(q))) - ax);
    if (err < best_err || (err == best_err && (q & 1) == 0)) {
      best_err = err;
      best = q;
    }
  }
  return static_cast<uint8_t>(best | (std::signbit(x) ? 0x80 : 0));
}

TEST(E4m3, RoundsToNearestEvenAndSaturates) {
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> mag(-12.0f, 10.0f);
  for (int i = 0; i < 200000; ++i) {
    float x = std::exp2(mag(rng));
    if (rng() & 1) x = -x;
    ASSERT_EQ(f32_to_e4m3(x), nearest_e4m3(x)) << std::hexfloat << x;
  }
  // Midpoints between adjacent codes go to the even one.
  for (int q = 0; q < 0x7e; ++q) {
    const float a = e4m3_to_f32(static_cast<uint8_t>(q));
    const float b = e4m3_to_f32(static_cast<uint8_t>(q + 1));
    const float mid = (a + b) / 2;
    EXPECT_EQ(f32_to_e4m3(mid), (q & 1) == 0 ? q : q + 1) << mid;
  }
  EXPECT_EQ(f32_to_e4m3(449.0f), 0x7e);
  EXPECT_EQ(f32_to_e4m3(1e30f), 0x7e);
  EXPECT_EQ(f32_to_e4m3(INFINITY), 0x7e);
  EXPECT_EQ(f32_to_e4m3(-INFINITY), 0xfe);
  EXPECT_EQ(f32_to_e4m3(NAN), 0x7f);
  EXPECT_EQ(f32_to_e4m3(0x1p-11f), 0x00);  // below half the smallest subnormal
}

TEST(E4m3, ScaleExponentIsTheSmallestThatFits) {
  EXPECT_EQ(fp8_scale_exponent(0.0f), 0);
  EXPECT_EQ(fp8_scale_exponent(448.0f), 0);
  EXPECT_EQ(fp8_scale_exponent(449.0f), 1);
  EXPECT_EQ(fp8_scale_exponent(224.0f), -1);
  EXPECT_EQ(fp8_scale_exponent(1.0f), -8);  // 448 * 2^-8 = 1.75 >= 1 > 0.875
  EXPECT_EQ(fp8_scale_exponent(FLT_MAX), 119);
  EXPECT_EQ(fp8_scale_exponent(0x1p-140f), -127);
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> mag(-100.0f, 100.0f);
  for (int i = 0; i < 10000; ++i) {
    const float a = std::exp2(mag(rng));
    const int k = fp8_scale_exponent(a);
    ASSERT_LE(static_cast<double>(a), 448.0 * std::exp2(k));
    ASSERT_GT(static_cast<double>(a), 448.0 * std::exp2(k - 1));
  }
}

// ---- fp8, a format per row: the scalar formats ------------------------------------------------

// A code's value by the formula in quantize.h, computed in double.
double auto_formula(uint8_t q, uint32_t f) {
  const int e_bits = 4 - static_cast<int>(f);
  const int m_bits = 3 + static_cast<int>(f);
  const int e = (q & 0x7f) >> m_bits;
  const int m = q & ((1 << m_bits) - 1);
  const double span = std::exp2(e_bits);
  const double v = e == 0 ? std::exp2(2 - span) * m / std::exp2(m_bits)
                          : std::exp2(e + 1 - span) * (1.0 + m / std::exp2(m_bits));
  return (q & 0x80) ? -v : v;
}

TEST(Fp8Auto, EveryCodeDecodesByTheFormulaAndRoundTrips) {
  for (uint32_t f = 0; f < 4; ++f) {
    for (int c = 0; c < 256; ++c) {
      const auto q = static_cast<uint8_t>(c);
      const float v = fp8_auto_decode(q, f);
      ASSERT_EQ(double{v}, auto_formula(q, f)) << "format " << f << " code " << c;
      ASSERT_EQ(std::signbit(v), (c & 0x80) != 0) << "format " << f << " code " << c;
      ASSERT_EQ(fp8_auto_encode(v, f), q) << "format " << f << " code " << c;
    }
    // The largest code is 2 - 2^-M; the step is 2^-M in the top binade [1, 2).
    EXPECT_EQ(fp8_auto_decode(0x7f, f), 2.0f - std::ldexp(1.0f, -3 - static_cast<int>(f)));
  }
  // E1M6 is a uniform grid: a signed 7-bit integer times 1/64.
  for (int c = 0; c < 128; ++c) EXPECT_EQ(fp8_auto_decode(static_cast<uint8_t>(c), 3), c / 64.0f);
}

TEST(Fp8Auto, RoundsToTheNearestCodeTiesToEvenAndSaturates) {
  std::mt19937 rng(3);
  for (uint32_t f = 0; f < 4; ++f) {
    // Every value between two neighbouring codes goes to the nearer; midpoints to the even code.
    for (int c = 0; c < 127; ++c) {
      const float lo = fp8_auto_decode(static_cast<uint8_t>(c), f);
      const float hi = fp8_auto_decode(static_cast<uint8_t>(c + 1), f);
      const float mid = lo + (hi - lo) / 2;  // exact: the codes are a few bits wide
      const auto even = static_cast<uint8_t>((c % 2 == 0) ? c : c + 1);
      ASSERT_EQ(fp8_auto_encode(mid, f), even) << "format " << f << " code " << c;
      ASSERT_EQ(fp8_auto_encode(-mid, f), even | 0x80) << "format " << f << " code " << c;
      for (int i = 0; i < 8; ++i) {
        const float t = std::uniform_real_distribution<float>(0.0f, 1.0f)(rng);
        const float y = lo + (hi - lo) * t;
        if (y == mid) continue;
        ASSERT_EQ(fp8_auto_encode(y, f), y < mid ? c : c + 1) << "format " << f << " y " << y;
      }
    }
    EXPECT_EQ(fp8_auto_encode(5.0f, f), 0x7f);
    EXPECT_EQ(fp8_auto_encode(-INFINITY, f), 0xff);
    EXPECT_EQ(fp8_auto_encode(NAN, f), 0x00);
  }
}

TEST(Fp8Auto, ScaleCodeRoundsUpToFourteenBits) {
  for (uint32_t f = 0; f < 4; ++f) {
    EXPECT_EQ(fp8_auto_scale_code(0.0f, f), 0u);
    const float top = fp8_auto_scale(fp8_auto_scale_code(FLT_MAX, f));
    EXPECT_TRUE(std::isfinite(top));
    EXPECT_GE(double{top}, double{FLT_MAX} / fp8_auto_decode(0x7f, f));
    EXPECT_EQ(fp8_auto_scale(0xffff), fp8_auto_scale(0x3fbf)) << "codes past 0x3fbf are clamped";
    std::mt19937 rng(f);
    for (int i = 0; i < 1000; ++i) {
      const float amax =
          std::ldexp(1.0f + (rng() % 1024) / 1024.0f, static_cast<int>(rng() % 60) - 30);
      const double want = double{amax} / double{fp8_auto_decode(0x7f, f)};
      const double got = fp8_auto_scale(fp8_auto_scale_code(amax, f));
      ASSERT_GE(got, want) << amax;  // rounded up: the row's amax never saturates
      ASSERT_LE(got - want, want * 0x1p-6) << amax;
    }
  }
}

// ---- slabs ---------------------------------------------------------------------------------

std::vector<std::byte> to_dtype(const std::vector<float>& v, DType dtype) {
  std::vector<std::byte> out(v.size() * dtype_bytes(dtype));
  convert_from_f32(dtype, v.data(), v.size(), out.data());
  return out;
}

std::vector<float> from_dtype(const std::vector<std::byte>& b, DType dtype) {
  std::vector<float> out(b.size() / dtype_bytes(dtype));
  convert_to_f32(dtype, b.data(), out.size(), out.data());
  return out;
}

// KV-like values: per-channel offsets and a few outlier channels (as real keys have), per-token
// magnitudes that vary, representable in `dtype`.
std::vector<float> kv_like(const SlabShape& s, DType dtype, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> n(0.0f, 1.0f);
  std::vector<float> offset(uint64_t{s.heads} * s.head_dim);
  for (auto& o : offset) o = n(rng) * ((rng() % 16 == 0) ? 8.0f : 0.5f);
  std::vector<float> v(s.elements());
  for (uint32_t t = 0; t < s.tokens; ++t) {
    const float tok_scale = std::exp2(n(rng));
    for (uint64_t c = 0; c < offset.size(); ++c) {
      v[t * offset.size() + c] = offset[c] + tok_scale * n(rng);
    }
  }
  return from_dtype(to_dtype(v, dtype), dtype);  // exactly representable
}

double out_ulp(DType dtype) {
  switch (dtype) {
    case DType::kBFloat16:
      return 0x1p-8;
    case DType::kFloat16:
      return 0x1p-11;
    default:
      return 0.0;
  }
}

struct RoundTrip {
  std::vector<std::byte> encoded;
  std::vector<float> decoded;
};

RoundTrip round_trip(const QuantSpec& spec, const SlabShape& shape, DType dtype,
                     const std::vector<float>& x) {
  const auto in = to_dtype(x, dtype);
  RoundTrip r;
  r.encoded.resize(quant_sizes(spec, shape).total());
  EXPECT_TRUE(quantize_slab(spec, shape, dtype, in, r.encoded).ok());
  std::vector<std::byte> out(in.size());
  EXPECT_TRUE(dequantize_slab(spec, shape, r.encoded, dtype, out).ok());
  r.decoded = from_dtype(out, dtype);
  return r;
}

float load_f32_at(const std::vector<std::byte>& b, uint64_t i) {
  float f;
  std::memcpy(&f, b.data() + 4 * i, 4);
  return f;
}

class SlabTest : public ::testing::TestWithParam<DType> {};

TEST_P(SlabTest, Fp8WithinBound) {
  const DType dtype = GetParam();
  const SlabShape shape{24, 3, 64};
  const auto x = kv_like(shape, dtype, 1);
  const auto r = round_trip({QuantScheme::kFp8E4M3, 0}, shape, dtype, x);
  for (uint64_t row = 0; row < uint64_t{shape.tokens} * shape.heads; ++row) {
    const int k = static_cast<int>(std::to_integer<uint8_t>(r.encoded[row])) - 127;
    for (uint32_t d = 0; d < shape.head_dim; ++d) {
      const uint64_t i = row * shape.head_dim + d;
      const double bound = std::fabs(x[i]) * (0x1p-4 + out_ulp(dtype)) + std::exp2(k - 10);
      ASSERT_LE(std::fabs(double{r.decoded[i]} - x[i]), bound) << i;
    }
  }
}

// The row's format and scale from a kFp8Auto encoded slab.
struct AutoRow {
  uint32_t format;
  double scale;
};
AutoRow auto_row(const std::vector<std::byte>& enc, uint64_t row) {
  const uint32_t m =
      std::to_integer<uint32_t>(enc[2 * row]) | (std::to_integer<uint32_t>(enc[2 * row + 1]) << 8);
  return {m >> 14, fp8_auto_scale(m & 0x3fff)};
}

TEST_P(SlabTest, Fp8AutoWithinBound) {
  const DType dtype = GetParam();
  const SlabShape shape{24, 3, 64};
  auto x = kv_like(shape, dtype, 1);
  x[5] = 3000.0f;  // a far outlier in row 0
  const auto r = round_trip({QuantScheme::kFp8Auto, 0}, shape, dtype, x);
  int used[4] = {};
  for (uint64_t row = 0; row < uint64_t{shape.tokens} * shape.heads; ++row) {
    const AutoRow a = auto_row(r.encoded, row);
    ++used[a.format];
    const int e_span = 1 << (4 - a.format);
    const int m_bits = 3 + static_cast<int>(a.format);
    const double max_f = 2.0 - std::exp2(-m_bits);
    for (uint32_t d = 0; d < shape.head_dim; ++d) {
      const uint64_t i = row * shape.head_dim + d;
      const double ax = std::fabs(x[i]);
      const double bound = ax * (std::exp2(-(m_bits + 1)) + 0x1p-20 + out_ulp(dtype)) +
                           std::exp2(1 - e_span - m_bits) * a.scale +
                           std::max(0.0, ax - max_f * a.scale);
      ASSERT_LE(std::fabs(double{r.decoded[i]} - x[i]), bound) << i << " format " << a.format;
    }
  }
  EXPECT_GT(used[2] + used[3], shape.tokens * shape.heads / 2) << "KV-like rows use finer formats";
}

TEST(Slab, Fp8AutoChoosesTheFormatWithTheLeastError) {
  // Rows of different spreads; each row's format must have an error no larger than any other
  // format's at that format's own scale (errors recomputed here in double).
  const SlabShape shape{64, 1, 64};
  std::mt19937 rng(11);
  std::vector<float> x(shape.elements());
  for (uint32_t t = 0; t < shape.tokens; ++t) {
    const float spread = std::exp2(static_cast<float>(t % 16));  // 1 .. 2^15 between elements
    for (uint32_t d = 0; d < shape.head_dim; ++d) {
      const float mag = std::exp2(-std::log2(spread) * ((rng() % 1000) / 1000.0f));
      x[t * shape.head_dim + d] = (rng() % 2 ? 1.0f : -1.0f) * mag * (1 + (rng() % 7) / 8.0f);
    }
  }
  // Row 0: 1.875 (exact at e4m3's power-of-two scale) and 63 elements near 2^-10, which the
  // finer formats' subnormal steps cannot hold: only e4m3 keeps them.
  for (uint32_t d = 1; d < shape.head_dim; ++d) {
    x[d] = (d % 2 ? 1.0f : -1.0f) * std::exp2(-9.0f - 3.0f * ((rng() % 1000) / 1000.0f));
  }
  x[0] = 1.875f;
  const auto r = round_trip({QuantScheme::kFp8Auto, 0}, shape, DType::kFloat32, x);
  EXPECT_EQ(auto_row(r.encoded, 0).format, 0u);
  int used[4] = {};
  for (uint32_t t = 0; t < shape.tokens; ++t) {
    float amax = 0;
    for (uint32_t d = 0; d < shape.head_dim; ++d) amax = std::max(amax, std::fabs(x[t * 64 + d]));
    double err[4];
    for (uint32_t f = 0; f < 4; ++f) {
      const float scale = fp8_auto_scale(fp8_auto_scale_code(amax, f));
      const float inv = 1.0f / scale;
      err[f] = 0;
      for (uint32_t d = 0; d < shape.head_dim; ++d) {
        const float xi = x[t * 64 + d];
        const double e = double{fp8_auto_decode(fp8_auto_encode(xi * inv, f), f)} * scale - xi;
        err[f] += e * e;
      }
    }
    const uint32_t chosen = auto_row(r.encoded, t).format;
    ++used[chosen];
    for (uint32_t f = 0; f < 4; ++f) {
      ASSERT_LE(err[chosen], err[f] * (1 + 1e-5)) << "row " << t << " chose " << chosen;
    }
  }
  EXPECT_GT(used[2], 0);
  EXPECT_GT(used[3], 0);
}

TEST(Slab, Fp8AutoBeatsE4m3OnKvLikeData) {
  const SlabShape shape{64, 4, 64};
  const auto x = kv_like(shape, DType::kBFloat16, 21);
  auto rel_l2 = [&](QuantScheme scheme) {
    const auto r = round_trip({scheme, 0}, shape, DType::kBFloat16, x);
    double n = 0, d = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      n += (double{r.decoded[i]} - x[i]) * (double{r.decoded[i]} - x[i]);
      d += double{x[i]} * x[i];
    }
    return std::sqrt(n / d);
  };
  const double e4m3 = rel_l2(QuantScheme::kFp8E4M3);
  const double autof = rel_l2(QuantScheme::kFp8Auto);
  EXPECT_LT(autof, 0.5 * e4m3) << "auto " << autof << " e4m3 " << e4m3;
}

TEST_P(SlabTest, Int8WithinBound) {
  const DType dtype = GetParam();
  const SlabShape shape{24, 3, 64};
  const auto x = kv_like(shape, dtype, 2);
  const auto r = round_trip({QuantScheme::kInt8, 0}, shape, dtype, x);
  for (uint64_t row = 0; row < uint64_t{shape.tokens} * shape.heads; ++row) {
    const double scale = load_f32_at(r.encoded, row);
    for (uint32_t d = 0; d < shape.head_dim; ++d) {
      const uint64_t i = row * shape.head_dim + d;
      const double y = r.decoded[i];
      const double bound =
          0.5 * scale * (1 + 0x1p-20) + (0x1p-23 + out_ulp(dtype)) * (std::fabs(y) + scale);
      ASSERT_LE(std::fabs(y - x[i]), bound) << i;
    }
  }
}

void check_int4(QuantScheme scheme, DType dtype, const SlabShape& shape, uint32_t g) {
  const auto x = kv_like(shape, dtype, 3);
  const QuantSpec spec{scheme, g};
  const auto r = round_trip(spec, shape, dtype, x);
  const uint64_t hd = uint64_t{shape.heads} * shape.head_dim;
  const uint64_t gpr = (shape.head_dim + g - 1) / g;
  const uint64_t ngroups = quant_sizes(spec, shape).metadata / 8;
  for (uint32_t t = 0; t < shape.tokens; ++t) {
    for (uint64_t c = 0; c < hd; ++c) {
      const uint64_t i = t * hd + c;
      const uint64_t grp =
          scheme != QuantScheme::kInt4Value
              ? (t / g) * hd + c
              : (uint64_t{t} * shape.heads + c / shape.head_dim) * gpr + (c % shape.head_dim) / g;
      ASSERT_LT(grp, ngroups);
      const double scale = load_f32_at(r.encoded, grp);
      const double min = load_f32_at(r.encoded, ngroups + grp);
      const double y = r.decoded[i];
      const double bound = 0.5 * scale * (1 + 0x1p-20) +
                           (0x1p-23 + out_ulp(dtype)) * (std::fabs(y) + std::fabs(min) + scale);
      ASSERT_LE(std::fabs(y - x[i]), bound) << "t=" << t << " c=" << c;
    }
  }
}

TEST_P(SlabTest, Int4KeyWithinBound) {
  check_int4(QuantScheme::kInt4Key, GetParam(), {64, 2, 32}, 32);
  check_int4(QuantScheme::kInt4Key, GetParam(), {37, 3, 5}, 16);  // partial groups, odd count
}

TEST_P(SlabTest, Int8KeyWithinBound) {
  check_int4(QuantScheme::kInt8Key, GetParam(), {64, 2, 32}, 64);
  check_int4(QuantScheme::kInt8Key, GetParam(), {37, 3, 5}, 16);  // partial groups
}

// Keys with an outlier channel (a large offset, little variation across tokens): per channel,
// int8 keys keep the small channels' detail that a per-token int8 scale loses to the outlier.
TEST(Slab, Int8KeyBeatsPerTokenInt8OnOutlierChannels) {
  const SlabShape shape{64, 1, 16};
  std::mt19937 rng(21);
  std::normal_distribution<float> n(0.0f, 1.0f);
  std::vector<float> x(shape.elements());
  for (uint32_t t = 0; t < shape.tokens; ++t) {
    for (uint32_t d = 0; d < shape.head_dim; ++d) x[t * 16 + d] = d == 3 ? 40.0f + n(rng) : n(rng);
  }
  auto err = [&](QuantScheme scheme) {
    const auto r = round_trip({scheme, 64}, shape, DType::kFloat32, x);
    double e = 0;
    for (size_t i = 0; i < x.size(); ++i) e += (r.decoded[i] - x[i]) * (r.decoded[i] - x[i]);
    return e;
  };
  EXPECT_LT(err(QuantScheme::kInt8Key) * 10, err(QuantScheme::kInt8));
}

TEST_P(SlabTest, Int4ValueWithinBound) {
  check_int4(QuantScheme::kInt4Value, GetParam(), {16, 2, 64}, 32);
  check_int4(QuantScheme::kInt4Value, GetParam(), {7, 3, 5}, 4);  // partial groups, odd count
}

INSTANTIATE_TEST_SUITE_P(Dtypes, SlabTest,
                         ::testing::Values(DType::kFloat16, DType::kBFloat16, DType::kFloat32),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

// Known answers: the exact bytes a CUDA port must produce.
TEST(SlabGolden, Fp8) {
  const SlabShape shape{1, 2, 4};
  const std::vector<float> x{1.0f, -0.5f, 0.0f, 0.75f, 300.0f, 1000.0f, -1e-3f, NAN};
  std::vector<std::byte> enc(quant_sizes({QuantScheme::kFp8E4M3, 0}, shape).total());
  ASSERT_EQ(enc.size(), 2u + 8u);
  ASSERT_TRUE(quantize_slab({QuantScheme::kFp8E4M3, 0}, shape, DType::kFloat32,
                            std::as_bytes(std::span(x)), enc)
                  .ok());
  // Row 0: amax 1 -> k = -8 (exp byte 119); 1 * 2^8 = 256 = 0x78, -0.5 -> -128 = 0xf0,
  // 0.75 -> 192 = 0x74. Row 1: amax 1000 (NaN ignored) -> k = 2 (exp 129); 300/4 = 75 -> 72
  // (0x69), 1000/4 = 250 -> 256 (0x78), -1e-3/4 -> -0 (0x80), NaN -> 0x7f.
  const std::vector<uint8_t> expect{119, 129, 0x78, 0xf0, 0x00, 0x74, 0x69, 0x78, 0x80, 0x7f};
  for (size_t i = 0; i < expect.size(); ++i) {
    EXPECT_EQ(std::to_integer<uint8_t>(enc[i]), expect[i]) << i;
  }
}

TEST(SlabGolden, Int8) {
  const SlabShape shape{1, 1, 4};
  const std::vector<float> x{127.0f, -63.5f, 0.5f, 1.5f};
  std::vector<std::byte> enc(quant_sizes({QuantScheme::kInt8, 0}, shape).total());
  ASSERT_EQ(enc.size(), 4u + 4u);
  ASSERT_TRUE(quantize_slab({QuantScheme::kInt8, 0}, shape, DType::kFloat32,
                            std::as_bytes(std::span(x)), enc)
                  .ok());
  EXPECT_EQ(load_f32_at(enc, 0), 1.0f);  // scale = 127 / 127
  // -63.5 -> -64 (ties to even), 0.5 -> 0, 1.5 -> 2.
  const std::vector<int8_t> q{127, -64, 0, 2};
  for (size_t i = 0; i < q.size(); ++i) {
    EXPECT_EQ(static_cast<int8_t>(std::to_integer<uint8_t>(enc[4 + i])), q[i]) << i;
  }
}

TEST(SlabGolden, Int4KeyAndValue) {
  // 3 tokens x 1 head x 2 channels: [t][d] = {0, 10}, {15, 10}, {7.5, 10}.
  const SlabShape shape{3, 1, 2};
  const std::vector<float> x{0.0f, 10.0f, 15.0f, 10.0f, 7.5f, 10.0f};
  {
    // Keys, G = 4: one token group; channel 0 min 0 max 15 (scale 1), channel 1 constant 10.
    const QuantSpec spec{QuantScheme::kInt4Key, 4};
    std::vector<std::byte> enc(quant_sizes(spec, shape).total());
    ASSERT_EQ(enc.size(), 2u * 8 + 3);
    ASSERT_TRUE(quantize_slab(spec, shape, DType::kFloat32, std::as_bytes(std::span(x)), enc).ok());
    EXPECT_EQ(load_f32_at(enc, 0), 1.0f);   // scale ch0
    EXPECT_EQ(load_f32_at(enc, 1), 0.0f);   // scale ch1
    EXPECT_EQ(load_f32_at(enc, 2), 0.0f);   // min ch0
    EXPECT_EQ(load_f32_at(enc, 3), 10.0f);  // min ch1
    // q = {0, 0, 15, 0, 8 (7.5 ties to even), 0}: bytes 0x00, 0x0f, 0x08.
    EXPECT_EQ(std::to_integer<uint8_t>(enc[16]), 0x00);
    EXPECT_EQ(std::to_integer<uint8_t>(enc[17]), 0x0f);
    EXPECT_EQ(std::to_integer<uint8_t>(enc[18]), 0x08);
  }
  {
    // Values, G = 2: one group per token: {0, 10}, {10, 15}, {7.5, 10}.
    const QuantSpec spec{QuantScheme::kInt4Value, 2};
    std::vector<std::byte> enc(quant_sizes(spec, shape).total());
    ASSERT_EQ(enc.size(), 3u * 8 + 3);
    ASSERT_TRUE(quantize_slab(spec, shape, DType::kFloat32, std::as_bytes(std::span(x)), enc).ok());
    EXPECT_EQ(load_f32_at(enc, 0), 10.0f / 15.0f);
    EXPECT_EQ(load_f32_at(enc, 3), 0.0f);
    EXPECT_EQ(load_f32_at(enc, 4), 10.0f);
    EXPECT_EQ(load_f32_at(enc, 5), 7.5f);
    // q = {0, 15}, {15, 0}, {0, 15}: bytes 0xf0, 0x0f, 0xf0.
    EXPECT_EQ(std::to_integer<uint8_t>(enc[24]), 0xf0);
    EXPECT_EQ(std::to_integer<uint8_t>(enc[25]), 0x0f);
    EXPECT_EQ(std::to_integer<uint8_t>(enc[26]), 0xf0);
  }
}

TEST(SlabGolden, Int8Key) {
  // 3 tokens x 1 head x 2 channels, G = 4: channel 0 in [0, 255] (scale 1), channel 1 constant.
  const SlabShape shape{3, 1, 2};
  const std::vector<float> x{0.0f, 10.0f, 255.0f, 10.0f, 100.5f, 10.0f};
  const QuantSpec spec{QuantScheme::kInt8Key, 4};
  std::vector<std::byte> enc(quant_sizes(spec, shape).total());
  ASSERT_EQ(enc.size(), 2u * 8 + 6);
  ASSERT_TRUE(quantize_slab(spec, shape, DType::kFloat32, std::as_bytes(std::span(x)), enc).ok());
  EXPECT_EQ(load_f32_at(enc, 0), 1.0f);   // scale ch0
  EXPECT_EQ(load_f32_at(enc, 1), 0.0f);   // scale ch1
  EXPECT_EQ(load_f32_at(enc, 2), 0.0f);   // min ch0
  EXPECT_EQ(load_f32_at(enc, 3), 10.0f);  // min ch1
  // q = {0, 0, 255, 0, 100 (100.5 ties to even), 0}.
  const std::vector<uint8_t> q{0, 0, 255, 0, 100, 0};
  for (size_t i = 0; i < q.size(); ++i) EXPECT_EQ(std::to_integer<uint8_t>(enc[16 + i]), q[i]) << i;
}

// Which zero a group's min keeps (+0 or -0, both stored as they are) is the first one in element
// order, however the quantizer's loops are vectorized.
TEST(Slab, GroupMinKeepsTheFirstZeroInElementOrder) {
  const SlabShape shape{1, 1, 16};
  const QuantSpec spec{QuantScheme::kInt4Value, 16};
  for (const auto& [first, second] : {std::pair{3, 10}, std::pair{10, 3}, std::pair{1, 9}}) {
    std::vector<float> x(16, 2.0f);
    x[first] = -0.0f;
    x[second] = 0.0f;
    x[15] = NAN;
    std::vector<std::byte> enc(quant_sizes(spec, shape).total());
    ASSERT_TRUE(quantize_slab(spec, shape, DType::kFloat32, std::as_bytes(std::span(x)), enc).ok());
    const float min = load_f32_at(enc, 1);
    EXPECT_EQ(min, 0.0f);
    EXPECT_EQ(std::signbit(min), first < second) << first << " " << second;
  }
}

// The vectorized row loops against the scalar rules, on rows with every kind of value.
TEST(Slab, Int8AndInt4RowsMatchTheScalarRules) {
  std::mt19937 rng(31);
  std::normal_distribution<float> n(0.0f, 3.0f);
  for (uint32_t dim : {1u, 7u, 8u, 37u, 64u, 300u}) {
    const SlabShape shape{3, 2, dim};
    std::vector<float> x(shape.elements());
    for (auto& v : x) {
      const uint32_t r = rng() % 50;
      v = r == 0 ? NAN : r == 1 ? INFINITY : r == 2 ? -INFINITY : r == 3 ? -0.0f : n(rng);
    }
    for (const QuantSpec spec :
         {QuantSpec{QuantScheme::kInt8, 0}, QuantSpec{QuantScheme::kInt4Value, 5},
          QuantSpec{QuantScheme::kInt4Value, dim}}) {
      std::vector<std::byte> enc(quant_sizes(spec, shape).total());
      ASSERT_TRUE(
          quantize_slab(spec, shape, DType::kFloat32, std::as_bytes(std::span(x)), enc).ok());
      const uint64_t rows = uint64_t{shape.tokens} * shape.heads;
      for (uint64_t r = 0; r < rows; ++r) {
        const float* row = x.data() + r * dim;
        if (spec.scheme == QuantScheme::kInt8) {
          float amax = 0.0f;
          for (uint32_t d = 0; d < dim; ++d) {
            const float a = std::fabs(row[d]);
            if (a <= FLT_MAX && a > amax) amax = a;
          }
          ASSERT_EQ(load_f32_at(enc, r), amax / 127.0f) << dim << " row " << r;
          const float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
          for (uint32_t d = 0; d < dim; ++d) {
            float v = row[d] * inv;
            if (v != v) v = 0.0f;
            v = std::min(127.0f, std::max(-127.0f, v));
            const auto q = static_cast<int8_t>(std::nearbyint(v));
            ASSERT_EQ(static_cast<int8_t>(std::to_integer<uint8_t>(enc[4 * rows + r * dim + d])), q)
                << dim << " row " << r << " d " << d;
          }
        } else {
          const uint32_t g = spec.group_size, gpr = (dim + g - 1) / g;
          const uint64_t ngroups = rows * gpr;
          for (uint32_t j = 0; j < gpr; ++j) {
            float lo = FLT_MAX, hi = -FLT_MAX;
            for (uint32_t d = j * g; d < std::min(dim, (j + 1) * g); ++d) {
              if (!(std::fabs(row[d]) <= FLT_MAX)) continue;
              lo = row[d] < lo ? row[d] : lo;
              hi = row[d] > hi ? row[d] : hi;
            }
            if (lo > hi) lo = hi = 0.0f;
            const float min = load_f32_at(enc, ngroups + r * gpr + j);
            ASSERT_EQ(std::bit_cast<uint32_t>(min), std::bit_cast<uint32_t>(lo)) << dim;
            ASSERT_EQ(load_f32_at(enc, r * gpr + j), (hi - lo) / 15.0f) << dim;
            const float inv = hi > lo ? 15.0f / (hi - lo) : 0.0f;
            for (uint32_t d = j * g; d < std::min(dim, (j + 1) * g); ++d) {
              float v = (row[d] - lo) * inv;
              if (v != v) v = 0.0f;
              v = std::min(15.0f, std::max(0.0f, v));
              const auto q = static_cast<uint32_t>(std::nearbyint(v));
              const uint64_t e = r * dim + d;
              const auto byte = std::to_integer<uint32_t>(enc[8 * ngroups + e / 2]);
              ASSERT_EQ((byte >> (4 * (e % 2))) & 0xfu, q) << dim << " e " << e;
            }
          }
        }
      }
    }
  }
}

TEST(Slab, NonFiniteInputsFollowTheRules) {
  const SlabShape shape{1, 1, 4};
  const std::vector<float> x{INFINITY, -INFINITY, NAN, 2.0f};
  {
    std::vector<std::byte> enc(quant_sizes({QuantScheme::kInt8, 0}, shape).total());
    ASSERT_TRUE(quantize_slab({QuantScheme::kInt8, 0}, shape, DType::kFloat32,
                              std::as_bytes(std::span(x)), enc)
                    .ok());
    EXPECT_EQ(load_f32_at(enc, 0), 2.0f / 127.0f);  // amax over finite values only
    const std::vector<int8_t> q{127, -127, 0, 127};
    for (size_t i = 0; i < q.size(); ++i) {
      EXPECT_EQ(static_cast<int8_t>(std::to_integer<uint8_t>(enc[4 + i])), q[i]) << i;
    }
  }
  {
    std::vector<std::byte> enc(quant_sizes({QuantScheme::kFp8E4M3, 0}, shape).total());
    ASSERT_TRUE(quantize_slab({QuantScheme::kFp8E4M3, 0}, shape, DType::kFloat32,
                              std::as_bytes(std::span(x)), enc)
                    .ok());
    EXPECT_EQ(std::to_integer<uint8_t>(enc[1]), 0x7e);
    EXPECT_EQ(std::to_integer<uint8_t>(enc[2]), 0xfe);
    EXPECT_EQ(std::to_integer<uint8_t>(enc[3]), 0x7f);
  }
  {
    // Infinities saturate, NaN is 0, and the scale comes from the finite 2.0 alone.
    std::vector<std::byte> enc(quant_sizes({QuantScheme::kFp8Auto, 0}, shape).total());
    ASSERT_TRUE(quantize_slab({QuantScheme::kFp8Auto, 0}, shape, DType::kFloat32,
                              std::as_bytes(std::span(x)), enc)
                    .ok());
    const AutoRow a = auto_row(enc, 0);
    EXPECT_EQ(a.scale, fp8_auto_scale(fp8_auto_scale_code(2.0f, a.format)));
    EXPECT_EQ(std::to_integer<uint8_t>(enc[2]), 0x7f);
    EXPECT_EQ(std::to_integer<uint8_t>(enc[3]), 0xff);
    EXPECT_EQ(std::to_integer<uint8_t>(enc[4]), 0x00);
  }
}

TEST(Slab, ElementOrderIsTokenHeadChannel) {
  // A single large element must land at its [t][h][d] position after a round trip.
  const SlabShape shape{4, 3, 8};
  for (QuantScheme scheme :
       {QuantScheme::kFp8E4M3, QuantScheme::kInt8, QuantScheme::kInt4Key, QuantScheme::kInt4Value,
        QuantScheme::kInt8Key, QuantScheme::kFp8Auto}) {
    for (uint64_t pos : {0ull, 5ull, 37ull, 95ull}) {
      std::vector<float> x(shape.elements(), 0.0f);
      x[pos] = 64.0f;
      const auto r = round_trip({scheme, 4}, shape, DType::kFloat32, x);
      for (uint64_t i = 0; i < x.size(); ++i) {
        if (i == pos) {
          // kFp8Auto's scale has 6 mantissa bits, so 64 comes back within a code step.
          const float tolerance = scheme == QuantScheme::kFp8Auto ? 0.5f : 1e-4f;
          ASSERT_NEAR(r.decoded[i], 64.0f, tolerance) << static_cast<int>(scheme) << " pos " << pos;
        } else {
          ASSERT_EQ(r.decoded[i], 0.0f) << static_cast<int>(scheme) << " pos " << pos << " i " << i;
        }
      }
    }
  }
}

TEST(Slab, RejectsBadArguments) {
  const SlabShape shape{2, 2, 8};
  std::vector<std::byte> in(shape.elements() * 2);
  std::vector<std::byte> enc(quant_sizes({QuantScheme::kInt8, 0}, shape).total());
  EXPECT_FALSE(quantize_slab({QuantScheme::kInt8, 0}, shape, DType::kBFloat16,
                             std::span(in).first(in.size() - 1), enc)
                   .ok());
  EXPECT_FALSE(quantize_slab({QuantScheme::kInt8, 0}, shape, DType::kBFloat16, in,
                             std::span(enc).first(enc.size() - 1))
                   .ok());
  EXPECT_FALSE(quantize_slab({QuantScheme::kInt8, 0}, shape, DType::kInt8, in, enc).ok());
  EXPECT_FALSE(quantize_slab({QuantScheme::kInt8, 0}, {0, 2, 8}, DType::kBFloat16, in, enc).ok());
  EXPECT_FALSE(
      quantize_slab({static_cast<QuantScheme>(9), 0}, shape, DType::kBFloat16, in, enc).ok());
  EXPECT_FALSE(validate_quant({QuantScheme::kInt4Key, 0}, shape).ok());
  std::vector<float> small_scratch(1);
  EXPECT_FALSE(
      quantize_slab({QuantScheme::kInt8, 0}, shape, DType::kBFloat16, in, enc, small_scratch).ok());
  std::vector<std::byte> out(in.size());
  EXPECT_FALSE(dequantize_slab({QuantScheme::kInt8, 0}, shape, std::span(enc).first(3),
                               DType::kBFloat16, out)
                   .ok());
  EXPECT_FALSE(dequantize_slab({QuantScheme::kInt8, 0}, shape, enc, DType::kBFloat16,
                               std::span(out).first(5))
                   .ok());
}

TEST(Slab, AnyBytesDecodeWithoutFault) {
  // Corrupt metadata must give wrong values, never an out-of-bounds access (ASan checks).
  std::mt19937 rng(5);
  const SlabShape shape{9, 2, 7};
  for (QuantScheme scheme :
       {QuantScheme::kFp8E4M3, QuantScheme::kInt8, QuantScheme::kInt4Key, QuantScheme::kInt4Value,
        QuantScheme::kInt8Key, QuantScheme::kFp8Auto}) {
    const QuantSpec spec{scheme, 4};
    std::vector<std::byte> enc(quant_sizes(spec, shape).total());
    for (int iter = 0; iter < 50; ++iter) {
      for (auto& b : enc) b = static_cast<std::byte>(rng());
      for (DType dtype : {DType::kFloat16, DType::kBFloat16, DType::kFloat32}) {
        std::vector<std::byte> out(shape.elements() * dtype_bytes(dtype));
        ASSERT_TRUE(dequantize_slab(spec, shape, enc, dtype, out).ok());
      }
    }
  }
}

TEST(Slab, QuantizeIsDeterministic) {
  const SlabShape shape{32, 2, 16};
  const auto x = kv_like(shape, DType::kBFloat16, 9);
  for (QuantScheme scheme :
       {QuantScheme::kFp8E4M3, QuantScheme::kInt8, QuantScheme::kInt4Key, QuantScheme::kInt4Value,
        QuantScheme::kInt8Key, QuantScheme::kFp8Auto}) {
    const auto a = round_trip({scheme, 8}, shape, DType::kBFloat16, x);
    const auto b = round_trip({scheme, 8}, shape, DType::kBFloat16, x);
    EXPECT_EQ(a.encoded, b.encoded);
  }
}

}  // namespace
}  // namespace tierkv::kernels
