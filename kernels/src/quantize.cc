// CPU reference of the slab quantizers (tierkv/kernels/quantize.h). Built with -ffp-contract=off
// so no product-then-sum is fused: the CUDA port must round each step the same way.
#include "tierkv/kernels/quantize.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "fp8_auto.h"
#include "tierkv/kernels/half.h"

namespace tierkv::kernels {

namespace {

// Dequantize loops work on tiles of this many elements: fp32 values first, then one conversion
// pass to the output dtype.
constexpr uint32_t kTile = 256;
constexpr int kFp8MinExp = -127;
// 448 * 2^119 < FLT_MAX < 448 * 2^120: a larger exponent could decode to infinity.
constexpr int kFp8MaxExp = 119;

// Rounds |v| <= 2^22 to the nearest integer, ties to even, with the FPU's own rounding: adding
// and subtracting 1.5 * 2^23 leaves no fraction bits. Exact IEEE semantics, vectorizes.
inline float round_even(float v) {
  constexpr float kMagic = 12582912.0f;  // 1.5 * 2^23
  return (v + kMagic) - kMagic;
}

inline bool is_finite_value(float x) { return std::fabs(x) <= FLT_MAX; }

// 2^k as a float for k in [-127, 127] (2^-127 is a subnormal, still exact).
inline float pow2(int k) {
  if (k >= -126) return std::bit_cast<float>(static_cast<uint32_t>(k + 127) << 23);
  return std::bit_cast<float>(uint32_t{1} << (k + 149));
}

inline float load_f32(const std::byte* p) {
  float f;
  std::memcpy(&f, p, 4);
  return f;
}
inline void store_f32(std::byte* p, float f) { std::memcpy(p, &f, 4); }

// Reads `n` input elements starting at element `first` into fp32.
inline void load_row(DType dtype, const std::byte* in, uint64_t first, uint32_t n, float* row) {
  const size_t eb = dtype_bytes(dtype);
  convert_to_f32(dtype, in + first * eb, n, row);
}

// The per-tile loops of the dequantizers, built twice — for baseline x86-64 and for AVX2 —
// and chosen at load time (the results are the same: no FMA, same operations).
#if defined(__x86_64__) && !defined(__clang__)
#define TIERKV_TILE_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define TIERKV_TILE_CLONES
#endif

TIERKV_TILE_CLONES void tile_to_bf16(const float* __restrict v, uint32_t n,
                                     uint16_t* __restrict h) {
  for (uint32_t j = 0; j < n; ++j) h[j] = f32_to_bf16(v[j]);
}

TIERKV_TILE_CLONES void tile_to_fp16(const float* __restrict v, uint32_t n,
                                     uint16_t* __restrict h) {
  for (uint32_t j = 0; j < n; ++j) h[j] = f32_to_fp16(v[j]);
}

// Copies n bytes in fixed-size 32-byte pieces (vector moves), then the tail byte by byte: a
// variable-length memcpy of a few hundred bytes would become a slow `rep movs`.
inline void copy_short(std::byte* __restrict dst, const void* __restrict src, size_t n) {
  const auto* s = static_cast<const std::byte*>(src);
  size_t k = 0;
  for (; k + 32 <= n; k += 32) std::memcpy(dst + k, s + k, 32);
  for (; k < n; ++k) dst[k] = s[k];
}

// Writes `n` fp32 values to elements [i, i + n) of the output, in its dtype.
template <DType kOut>
inline void store_tile(std::byte* out, uint64_t i, const float* v, uint32_t n) {
  if constexpr (kOut == DType::kFloat32) {
    copy_short(out + 4 * i, v, 4 * size_t{n});
  } else if ((reinterpret_cast<uintptr_t>(out) & 1u) == 0) {
    // Aligned output (the usual case): converted straight into it.
    auto* o = reinterpret_cast<uint16_t*>(out + 2 * i);
    if constexpr (kOut == DType::kFloat16) {
      tile_to_fp16(v, n, o);
    } else {
      tile_to_bf16(v, n, o);
    }
  } else {
    uint16_t h[kTile];
    if constexpr (kOut == DType::kFloat16) {
      tile_to_fp16(v, n, h);
    } else {
      tile_to_bf16(v, n, h);
    }
    copy_short(out + 2 * i, h, 2 * size_t{n});
  }
}

// e4m3 bits -> fp32 without a table lookup, so loops over a row vectorize: the code's exponent
// and mantissa bits placed at the top of an fp32 mantissa read as 2^-120 times the value (fp32
// subnormals for e4m3 subnormals), so one exact multiply by 2^120 gives the value.
inline float e4m3_decode(uint32_t q) {
  const uint32_t em = q & 0x7fu;
  uint32_t bits = std::bit_cast<uint32_t>(std::bit_cast<float>(em << 20) * 0x1p120f);
  const uint32_t nan = 0u - static_cast<uint32_t>(em == 0x7fu);  // all ones for NaN codes
  bits = (bits & ~nan) | (0x7fc00000u & nan);
  return std::bit_cast<float>(bits | ((q & 0x80u) << 24));
}

TIERKV_TILE_CLONES void fp8_tile(const uint8_t* __restrict q, float scale, uint32_t n,
                                 float* __restrict out) {
  for (uint32_t j = 0; j < n; ++j) out[j] = e4m3_decode(q[j]) * scale;
}

TIERKV_TILE_CLONES void int8_tile(const int8_t* __restrict q, float scale, uint32_t n,
                                  float* __restrict out) {
  for (uint32_t j = 0; j < n; ++j) out[j] = static_cast<float>(q[j]) * scale;
}

// Row helpers of the quantizers, vectorizable (8 lanes) and giving exactly the sequential loops'
// results: max and min are order-free here except between -0 and +0, which the callers settle.
using V8f = float __attribute__((vector_size(32)));
using V8i = int32_t __attribute__((vector_size(32)));

// The largest |x| over the finite elements of row[0, n), 0 if none.
TIERKV_TILE_CLONES float finite_amax(const float* __restrict row, uint32_t n) {
  V8f m = {};
  uint32_t d = 0;
  for (; d + 8 <= n; d += 8) {
    V8f x;
    std::memcpy(&x, row + d, sizeof(x));
    V8i bits;
    std::memcpy(&bits, &x, sizeof(bits));
    bits &= 0x7fffffff;
    V8f a;
    std::memcpy(&a, &bits, sizeof(a));
    a = a <= FLT_MAX ? a : V8f{};  // NaN and infinity count as 0
    m = a > m ? a : m;
  }
  float amax = 0.0f;
  for (int j = 0; j < 8; ++j) amax = m[j] > amax ? m[j] : amax;
  for (; d < n; ++d) {
    const float a = std::fabs(row[d]);
    if (a <= FLT_MAX && a > amax) amax = a;
  }
  return amax;
}

// int8: q[d] = clamp(rint(row[d] * inv), -127, 127), NaN -> 0.
TIERKV_TILE_CLONES void int8_quant_row(const float* __restrict row, uint32_t n, float inv,
                                       int8_t* __restrict q) {
  constexpr float kMagic = 12582912.0f;  // round_even's
  uint32_t d = 0;
  for (; d + 8 <= n; d += 8) {
    V8f v;
    std::memcpy(&v, row + d, sizeof(v));
    v = v * inv;
    v = v != v ? V8f{} : v;
    v = v > 127.0f ? V8f{} + 127.0f : v;
    v = v < -127.0f ? V8f{} - 127.0f : v;
    v = (v + kMagic) - kMagic;
    const V8i k = __builtin_convertvector(v, V8i);
    for (int j = 0; j < 8; ++j) q[d + j] = static_cast<int8_t>(k[j]);
  }
  for (; d < n; ++d) {
    float v = row[d] * inv;
    v = v != v ? 0.0f : v;  // NaN (including inf * 0)
    v = v > 127.0f ? 127.0f : v;
    v = v < -127.0f ? -127.0f : v;
    q[d] = static_cast<int8_t>(static_cast<int32_t>(round_even(v)));
  }
}

// The min and max over the finite elements of row[0, n) (FLT_MAX and -FLT_MAX if none), as
// `lo = x < lo ? x : lo` in element order gives them: lanes, then a sequential pass if a result
// is a zero (whose sign depends on the order).
TIERKV_TILE_CLONES void finite_min_max(const float* __restrict row, uint32_t n, float* lo_out,
                                       float* hi_out) {
  V8f lo8 = {FLT_MAX, FLT_MAX, FLT_MAX, FLT_MAX, FLT_MAX, FLT_MAX, FLT_MAX, FLT_MAX};
  V8f hi8 = -lo8;
  uint32_t d = 0;
  for (; d + 8 <= n; d += 8) {
    V8f x;
    std::memcpy(&x, row + d, sizeof(x));
    V8i bits;
    std::memcpy(&bits, &x, sizeof(bits));
    bits &= 0x7fffffff;
    V8f a;
    std::memcpy(&a, &bits, sizeof(a));
    const V8i finite = a <= FLT_MAX;
    lo8 = finite ? (x < lo8 ? x : lo8) : lo8;
    hi8 = finite ? (x > hi8 ? x : hi8) : hi8;
  }
  float lo = FLT_MAX, hi = -FLT_MAX;
  for (int j = 0; j < 8; ++j) {
    lo = lo8[j] < lo ? lo8[j] : lo;
    hi = hi8[j] > hi ? hi8[j] : hi;
  }
  for (; d < n; ++d) {
    const float x = row[d];
    if (!(std::fabs(x) <= FLT_MAX)) continue;
    lo = x < lo ? x : lo;
    hi = x > hi ? x : hi;
  }
  if (lo == 0.0f || hi == 0.0f) {  // which zero is kept depends on the order: redo in order
    lo = FLT_MAX;
    hi = -FLT_MAX;
    for (d = 0; d < n; ++d) {
      const float x = row[d];
      if (!(std::fabs(x) <= FLT_MAX)) continue;
      lo = x < lo ? x : lo;
      hi = x > hi ? x : hi;
    }
  }
  *lo_out = lo;
  *hi_out = hi;
}

// int4: q[d] = clamp(rint((row[d] - min) * inv), 0, 15), NaN -> 0.
TIERKV_TILE_CLONES void int4_quant_row(const float* __restrict row, uint32_t n, float min,
                                       float inv, uint8_t* __restrict q) {
  constexpr float kMagic = 12582912.0f;  // round_even's
  uint32_t d = 0;
  for (; d + 8 <= n; d += 8) {
    V8f v;
    std::memcpy(&v, row + d, sizeof(v));
    v = (v - min) * inv;
    v = v != v ? V8f{} : v;
    v = v > 15.0f ? V8f{} + 15.0f : v;
    v = v < 0.0f ? V8f{} : v;
    v = (v + kMagic) - kMagic;
    const V8i k = __builtin_convertvector(v, V8i);
    for (int j = 0; j < 8; ++j) q[d + j] = static_cast<uint8_t>(k[j]);
  }
  for (; d < n; ++d) {
    float v = (row[d] - min) * inv;
    v = v != v ? 0.0f : v;
    v = v > 15.0f ? 15.0f : v;
    v = v < 0.0f ? 0.0f : v;
    q[d] = static_cast<uint8_t>(static_cast<int32_t>(round_even(v)));
  }
}

// ---- fp8 ----------------------------------------------------------------------------------

void quantize_fp8(const SlabShape& s, DType dtype, const std::byte* in, std::byte* out,
                  float* row) {
  const uint64_t rows = uint64_t{s.tokens} * s.heads;
  std::byte* exps = out;
  std::byte* payload = out + rows;
  for (uint64_t r = 0; r < rows; ++r) {
    load_row(dtype, in, r * s.head_dim, s.head_dim, row);
    const float amax = finite_amax(row, s.head_dim);
    const int k = fp8_scale_exponent(amax);
    exps[r] = static_cast<std::byte>(k + 127);
    const float inv = pow2(-k);
    std::byte* q = payload + r * s.head_dim;
    for (uint32_t d = 0; d < s.head_dim; ++d) {
      q[d] = static_cast<std::byte>(f32_to_e4m3(row[d] * inv));
    }
  }
}

template <DType kOut>
void dequantize_fp8(const SlabShape& s, const std::byte* in, std::byte* out) {
  const uint64_t rows = uint64_t{s.tokens} * s.heads;
  const auto* exps = reinterpret_cast<const uint8_t*>(in);
  const auto* payload = reinterpret_cast<const uint8_t*>(in + rows);
  float tile[kTile];
  for (uint64_t r = 0; r < rows; ++r) {
    // Any byte decodes: exponents outside [-127, 127] are clamped rather than trusted.
    int k = static_cast<int>(exps[r]) - 127;
    if (k > 127) k = 127;
    const float scale = pow2(k);
    const uint8_t* q = payload + r * s.head_dim;
    const uint64_t base = r * s.head_dim;
    for (uint32_t d0 = 0; d0 < s.head_dim; d0 += kTile) {
      const uint32_t n = std::min(kTile, s.head_dim - d0);
      fp8_tile(q + d0, scale, n, tile);
      store_tile<kOut>(out, base + d0, tile, n);
    }
  }
}

// ---- fp8, a format per row ----------------------------------------------------------------

// A row's squared rounding errors in format f (fp8auto::squared_error), and its codes: loops the
// compiler vectorizes.
TIERKV_TILE_CLONES void fp8_auto_errors(const float* __restrict row, uint32_t n, float inv,
                                        uint32_t f, float* __restrict sq) {
  for (uint32_t d = 0; d < n; ++d) sq[d] = fp8auto::squared_error(row[d] * inv, f);
}

TIERKV_TILE_CLONES void fp8_auto_codes(const float* __restrict row, uint32_t n, float inv,
                                       uint32_t f, std::byte* __restrict q) {
  for (uint32_t d = 0; d < n; ++d) q[d] = static_cast<std::byte>(fp8auto::encode(row[d] * inv, f));
}

// `row` holds head_dim inputs, then head_dim floats of room for the squared errors.
void quantize_fp8_auto(const SlabShape& s, DType dtype, const std::byte* in, std::byte* out,
                       float* row) {
  namespace fa = fp8auto;
  const uint64_t rows = uint64_t{s.tokens} * s.heads;
  std::byte* meta = out;
  std::byte* payload = out + 2 * rows;
  float* sq = row + s.head_dim;
  for (uint64_t r = 0; r < rows; ++r) {
    load_row(dtype, in, r * s.head_dim, s.head_dim, row);
    const float amax = finite_amax(row, s.head_dim);
    fa::Choice choice;
    for (uint32_t f = fa::kFormats; f-- > 0;) {
      const fa::Candidate c = fa::candidate(amax, f);
      fp8_auto_errors(row, s.head_dim, c.inv, f, sq);
      // The warp's sum: lane l takes elements l, l + 32, ... in order.
      float lanes[fa::kLanes] = {};
      for (uint32_t d0 = 0; d0 < s.head_dim; d0 += fa::kLanes) {
        const uint32_t n = std::min(fa::kLanes, s.head_dim - d0);
        for (uint32_t l = 0; l < n; ++l) lanes[l] += sq[d0 + l];
      }
      choice.offer(c, fa::lane_tree_sum(lanes));
    }
    const fa::Candidate& best = choice.best;
    fa::store_metadata(meta, r, best.format, best.code);
    fp8_auto_codes(row, s.head_dim, best.inv, best.format, payload + r * s.head_dim);
  }
}

// One row of codes in format f (the row's, so the loop vectorizes).
TIERKV_TILE_CLONES void fp8_auto_tile(const uint8_t* __restrict q, uint32_t f, float scale,
                                      uint32_t n, float* __restrict out) {
  for (uint32_t j = 0; j < n; ++j) out[j] = fp8auto::dequantize(q[j], f, scale);
}

template <DType kOut>
void dequantize_fp8_auto(const SlabShape& s, const std::byte* in, std::byte* out) {
  namespace fa = fp8auto;
  const uint64_t rows = uint64_t{s.tokens} * s.heads;
  const auto* payload = reinterpret_cast<const uint8_t*>(in + 2 * rows);
  float tile[kTile];
  for (uint64_t r = 0; r < rows; ++r) {
    const uint32_t m = fa::load_metadata(in, r);
    const uint32_t f = fa::format_of(m);
    const float scale = fa::scale_value(fa::code_of(m));  // any code decodes (clamped)
    const uint8_t* q = payload + r * s.head_dim;
    const uint64_t base = r * s.head_dim;
    for (uint32_t d0 = 0; d0 < s.head_dim; d0 += kTile) {
      const uint32_t n = std::min(kTile, s.head_dim - d0);
      fp8_auto_tile(q + d0, f, scale, n, tile);
      store_tile<kOut>(out, base + d0, tile, n);
    }
  }
}

// ---- int8 ---------------------------------------------------------------------------------

void quantize_int8(const SlabShape& s, DType dtype, const std::byte* in, std::byte* out,
                   float* row) {
  const uint64_t rows = uint64_t{s.tokens} * s.heads;
  std::byte* scales = out;
  auto* payload = reinterpret_cast<int8_t*>(out + 4 * rows);
  for (uint64_t r = 0; r < rows; ++r) {
    load_row(dtype, in, r * s.head_dim, s.head_dim, row);
    const float amax = finite_amax(row, s.head_dim);
    const float scale = amax / 127.0f;
    const float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
    store_f32(scales + 4 * r, scale);
    int8_quant_row(row, s.head_dim, inv, payload + r * s.head_dim);
  }
}

template <DType kOut>
void dequantize_int8(const SlabShape& s, const std::byte* in, std::byte* out) {
  const uint64_t rows = uint64_t{s.tokens} * s.heads;
  const auto* payload = reinterpret_cast<const int8_t*>(in + 4 * rows);
  float tile[kTile];
  for (uint64_t r = 0; r < rows; ++r) {
    const float scale = load_f32(in + 4 * r);
    const int8_t* q = payload + r * s.head_dim;
    const uint64_t base = r * s.head_dim;
    for (uint32_t d0 = 0; d0 < s.head_dim; d0 += kTile) {
      const uint32_t n = std::min(kTile, s.head_dim - d0);
      int8_tile(q + d0, scale, n, tile);
      store_tile<kOut>(out, base + d0, tile, n);
    }
  }
}

// ---- int4 ---------------------------------------------------------------------------------

inline uint64_t ceil_div(uint64_t a, uint64_t b) { return (a + b - 1) / b; }

// q = clamp(rint((x - min) * inv), 0, kMax); NaN -> 0. kMax = 15 (int4) or 255 (int8 key).
template <uint32_t kMax>
inline uint8_t quantize_level(float x, float min, float inv) {
  float v = (x - min) * inv;
  if (v != v) v = 0.0f;
  v = v > float(kMax) ? float(kMax) : v;
  v = v < 0.0f ? 0.0f : v;
  return static_cast<uint8_t>(round_even(v));
}
inline uint8_t quantize_nibble(float x, float min, float inv) {
  return quantize_level<15>(x, min, inv);
}

inline void put_nibble(uint8_t* packed, uint64_t e, uint8_t q) {
  if ((e & 1) == 0) {
    packed[e >> 1] = q;  // low nibble first; the high nibble is written next (or stays 0)
  } else {
    packed[e >> 1] = static_cast<uint8_t>(packed[e >> 1] | (q << 4));
  }
}

// Keys: a group is G consecutive tokens of one (head, channel). `mm` holds 2 * H * D floats.
// kMax = 15: int4, nibbles packed; kMax = 255: int8 key, one byte per element.
template <uint32_t kMax>
void quantize_key_groups(const SlabShape& s, uint32_t g, DType dtype, const std::byte* in,
                         std::byte* out, float* row, float* mm) {
  const uint64_t hd = uint64_t{s.heads} * s.head_dim;
  const uint64_t ngroups = ceil_div(s.tokens, g) * hd;
  std::byte* scales = out;
  std::byte* mins = out + 4 * ngroups;
  auto* payload = reinterpret_cast<uint8_t*>(out + 8 * ngroups);
  float* lo = mm;
  float* hi = mm + hd;
  for (uint32_t t0 = 0; t0 < s.tokens; t0 += g) {
    const uint32_t t1 = std::min(s.tokens, t0 + g);
    for (uint64_t c = 0; c < hd; ++c) {
      lo[c] = FLT_MAX;
      hi[c] = -FLT_MAX;
    }
    for (uint32_t t = t0; t < t1; ++t) {
      load_row(dtype, in, t * hd, static_cast<uint32_t>(hd), row);
      for (uint64_t c = 0; c < hd; ++c) {
        const float x = row[c];
        if (!is_finite_value(x)) continue;
        lo[c] = x < lo[c] ? x : lo[c];
        hi[c] = x > hi[c] ? x : hi[c];
      }
    }
    const uint64_t gbase = uint64_t{t0 / g} * hd;
    for (uint64_t c = 0; c < hd; ++c) {
      if (lo[c] > hi[c]) lo[c] = hi[c] = 0.0f;  // no finite element
      store_f32(scales + 4 * (gbase + c), (hi[c] - lo[c]) / float(kMax));
      store_f32(mins + 4 * (gbase + c), lo[c]);
      // Reuse hi[] for the inverse step.
      hi[c] = hi[c] > lo[c] ? float(kMax) / (hi[c] - lo[c]) : 0.0f;
    }
    for (uint32_t t = t0; t < t1; ++t) {
      load_row(dtype, in, t * hd, static_cast<uint32_t>(hd), row);
      const uint64_t ebase = t * hd;
      if constexpr (kMax == 15) {
        for (uint64_t c = 0; c < hd; ++c) {
          put_nibble(payload, ebase + c, quantize_nibble(row[c], lo[c], hi[c]));
        }
      } else {
        for (uint64_t c = 0; c < hd; ++c) {
          payload[ebase + c] = quantize_level<kMax>(row[c], lo[c], hi[c]);
        }
      }
    }
  }
}

// v[j] = v[j] * scale[j] + min[j]: a product, then a sum (two roundings).
TIERKV_TILE_CLONES void affine_tile(float* __restrict v, const float* __restrict scale,
                                    const float* __restrict min, uint32_t n) {
  for (uint32_t j = 0; j < n; ++j) v[j] = v[j] * scale[j] + min[j];
}

// Both nibbles of every byte value as floats, low nibble first.
constexpr std::array<std::array<float, 2>, 256> kNibblePairs = [] {
  std::array<std::array<float, 2>, 256> t{};
  for (uint32_t b = 0; b < 256; ++b) {
    t[b] = {static_cast<float>(b & 0xfu), static_cast<float>(b >> 4)};
  }
  return t;
}();

// Unpacks `pairs` bytes into 2 * pairs floats, low nibble first.
inline void unpack_pairs(const uint8_t* __restrict p, uint32_t pairs, float* __restrict q) {
  for (uint32_t k = 0; k < pairs; ++k) std::memcpy(q + 2 * k, kNibblePairs[p[k]].data(), 8);
}

// Unpacks nibbles [e, e + n) of `packed` as floats.
inline void unpack_nibbles(const uint8_t* packed, uint64_t e, uint32_t n, float* q) {
  uint32_t j = 0;
  if ((e & 1) != 0 && n > 0) q[j++] = static_cast<float>(packed[e >> 1] >> 4);
  const uint8_t* p = packed + ((e + j) >> 1);
  const uint32_t pairs = (n - j) / 2;
  unpack_pairs(p, pairs, q + j);
  j += 2 * pairs;
  if (j < n) q[j] = static_cast<float>(p[pairs] & 0xfu);
}

TIERKV_TILE_CLONES void u8_tile(const uint8_t* __restrict q, uint32_t n, float* __restrict out) {
  for (uint32_t j = 0; j < n; ++j) out[j] = static_cast<float>(q[j]);
}

// Keys (kInt4Key: kMax = 15, kInt8Key: kMax = 255): token by token, each element's own
// channel group's scale and min.
template <DType kOut, uint32_t kMax>
void dequantize_key_groups(const SlabShape& s, uint32_t g, const std::byte* in, std::byte* out) {
  const uint64_t hd = uint64_t{s.heads} * s.head_dim;
  const uint64_t ngroups = ceil_div(s.tokens, g) * hd;
  const std::byte* scales = in;
  const std::byte* mins = in + 4 * ngroups;
  const auto* payload = reinterpret_cast<const uint8_t*>(in + 8 * ngroups);
  float tile[kTile], sc[kTile], mn[kTile];
  for (uint32_t t = 0; t < s.tokens; ++t) {
    const uint64_t gbase = uint64_t{t / g} * hd;
    const uint64_t ebase = t * hd;
    for (uint64_t c0 = 0; c0 < hd; c0 += kTile) {
      const auto n = static_cast<uint32_t>(std::min<uint64_t>(kTile, hd - c0));
      if constexpr (kMax == 15) {
        unpack_nibbles(payload, ebase + c0, n, tile);
      } else {
        u8_tile(payload + ebase + c0, n, tile);
      }
      copy_short(reinterpret_cast<std::byte*>(sc), scales + 4 * (gbase + c0), 4 * size_t{n});
      copy_short(reinterpret_cast<std::byte*>(mn), mins + 4 * (gbase + c0), 4 * size_t{n});
      affine_tile(tile, sc, mn, n);
      store_tile<kOut>(out, ebase + c0, tile, n);
    }
  }
}

// Values: a group is G consecutive channels of one (token, head).
void quantize_int4_value(const SlabShape& s, uint32_t g, DType dtype, const std::byte* in,
                         std::byte* out, float* row) {
  const uint64_t rows = uint64_t{s.tokens} * s.heads;
  const uint32_t gpr = static_cast<uint32_t>(ceil_div(s.head_dim, g));  // groups per row
  const uint64_t ngroups = rows * gpr;
  std::byte* scales = out;
  std::byte* mins = out + 4 * ngroups;
  auto* packed = reinterpret_cast<uint8_t*>(out + 8 * ngroups);
  for (uint64_t r = 0; r < rows; ++r) {
    load_row(dtype, in, r * s.head_dim, s.head_dim, row);
    for (uint32_t j = 0; j < gpr; ++j) {
      const uint32_t d0 = j * g;
      const uint32_t d1 = std::min(s.head_dim, d0 + g);
      float lo = 0.0f;
      float hi = 0.0f;
      finite_min_max(row + d0, d1 - d0, &lo, &hi);
      if (lo > hi) lo = hi = 0.0f;
      store_f32(scales + 4 * (r * gpr + j), (hi - lo) / 15.0f);
      store_f32(mins + 4 * (r * gpr + j), lo);
      const float inv = hi > lo ? 15.0f / (hi - lo) : 0.0f;
      const uint64_t ebase = r * s.head_dim;
      // Nibbles in pieces: computed into q, then packed two per byte where the pair shares a
      // byte, put one by one at the piece's odd ends (put_nibble's order of writes).
      uint8_t q[kTile];
      for (uint32_t p0 = d0; p0 < d1; p0 += kTile) {
        const uint32_t len = std::min(kTile, d1 - p0);
        int4_quant_row(row + p0, len, lo, inv, q);
        uint64_t e = ebase + p0;
        uint32_t k = 0;
        if ((e & 1) != 0) put_nibble(packed, e++, q[k++]);
        for (; k + 2 <= len; k += 2, e += 2) {
          packed[e >> 1] = static_cast<uint8_t>(q[k] | (q[k + 1] << 4));
        }
        if (k < len) put_nibble(packed, e, q[k]);
      }
    }
  }
}

template <DType kOut>
void dequantize_int4_value(const SlabShape& s, uint32_t g, const std::byte* in, std::byte* out) {
  const uint64_t rows = uint64_t{s.tokens} * s.heads;
  const uint32_t gpr = static_cast<uint32_t>(ceil_div(s.head_dim, g));
  const uint64_t ngroups = rows * gpr;
  const std::byte* scales = in;
  const std::byte* mins = in + 4 * ngroups;
  const auto* packed = reinterpret_cast<const uint8_t*>(in + 8 * ngroups);
  float tile[kTile];
  for (uint64_t r = 0; r < rows; ++r) {
    const uint64_t ebase = r * s.head_dim;
    for (uint32_t d0 = 0; d0 < s.head_dim; d0 += kTile) {
      const uint32_t n = std::min(kTile, s.head_dim - d0);
      unpack_nibbles(packed, ebase + d0, n, tile);
      // Groups within the tile: runs of equal parameters.
      for (uint32_t j = 0; j < n;) {
        const uint32_t grp = (d0 + j) / g;
        const uint32_t end = std::min(n, (grp + 1) * g - d0);
        const float scale = load_f32(scales + 4 * (r * gpr + grp));
        const float min = load_f32(mins + 4 * (r * gpr + grp));
        for (uint32_t k = j; k < end; ++k) tile[k] = tile[k] * scale + min;
        j = end;
      }
      store_tile<kOut>(out, ebase + d0, tile, n);
    }
  }
}

template <DType kOut>
void dequantize_dispatch(const QuantSpec& spec, const SlabShape& shape, const std::byte* in,
                         std::byte* out) {
  switch (spec.scheme) {
    case QuantScheme::kFp8E4M3:
      return dequantize_fp8<kOut>(shape, in, out);
    case QuantScheme::kFp8Auto:
      return dequantize_fp8_auto<kOut>(shape, in, out);
    case QuantScheme::kInt8:
      return dequantize_int8<kOut>(shape, in, out);
    case QuantScheme::kInt4Key:
      return dequantize_key_groups<kOut, 15>(shape, spec.group_size, in, out);
    case QuantScheme::kInt8Key:
      return dequantize_key_groups<kOut, 255>(shape, spec.group_size, in, out);
    case QuantScheme::kInt4Value:
      return dequantize_int4_value<kOut>(shape, spec.group_size, in, out);
  }
}

Status check_dtype(DType dtype) {
  if (!is_float_kv_dtype(dtype)) {
    return Status::InvalidArgument("dtype " + std::string(dtype_name(dtype)) +
                                   " cannot be quantized: only fp16, bf16 and fp32 can");
  }
  return Status::Ok();
}

}  // namespace

uint8_t f32_to_e4m3(float x) {
  uint32_t u = std::bit_cast<uint32_t>(x);
  const auto sign = static_cast<uint8_t>((u >> 24) & 0x80u);
  u &= 0x7fffffffu;
  if (u > 0x7f800000u) return sign | 0x7fu;   // NaN
  if (u >= 0x43e00000u) return sign | 0x7eu;  // >= 448, infinities included: saturate
  if (u < 0x3c800000u) {                      // below 2^-6: subnormal e4m3 (m * 2^-9)
    const float m = round_even(std::bit_cast<float>(u) * 512.0f);  // exact scaling; m in [0, 8]
    return sign | static_cast<uint8_t>(m);  // m == 8 is 0x08, the smallest normal: correct
  }
  u += 0x7ffffu + ((u >> 20) & 1u);  // round the mantissa to 3 bits, ties to even
  return sign | static_cast<uint8_t>((u >> 20) - (120u << 3));  // rebias exponent 127 -> 7
}

float e4m3_to_f32(uint8_t q) { return e4m3_decode(q); }

uint8_t fp8_auto_encode(float y, uint32_t format) {
  return static_cast<uint8_t>(fp8auto::encode(y, format & 3u));
}
float fp8_auto_decode(uint8_t q, uint32_t format) { return fp8auto::decode(q, format & 3u); }
uint32_t fp8_auto_scale_code(float amax, uint32_t format) {
  return fp8auto::scale_code(amax, format & 3u);
}
float fp8_auto_scale(uint32_t code) { return fp8auto::scale_value(code); }

int fp8_scale_exponent(float amax) {
  if (!(amax > 0.0f)) return 0;
  if (!(amax <= FLT_MAX)) return kFp8MaxExp;
  int p = 0;
  const float m = std::frexp(amax, &p);  // amax = m * 2^p, m in [0.5, 1)
  // amax <= 448 * 2^k = 0.875 * 2^(9 + k)
  int k = m <= 0.875f ? p - 9 : p - 8;
  if (k < kFp8MinExp) k = kFp8MinExp;
  if (k > kFp8MaxExp) k = kFp8MaxExp;
  return k;
}

Status validate_quant(const QuantSpec& spec, const SlabShape& shape) {
  switch (spec.scheme) {
    case QuantScheme::kFp8E4M3:
    case QuantScheme::kFp8Auto:
    case QuantScheme::kInt8:
      break;
    case QuantScheme::kInt4Key:
    case QuantScheme::kInt4Value:
    case QuantScheme::kInt8Key:
      if (spec.group_size == 0 || spec.group_size > 65536) {
        return Status::InvalidArgument(
            std::string(spec.scheme == QuantScheme::kInt8Key ? "int8 key" : "int4") +
            " group_size = " + std::to_string(spec.group_size) + " is out of range [1, 65536]");
      }
      break;
    default:
      return Status::InvalidArgument("quant scheme " +
                                     std::to_string(static_cast<int>(spec.scheme)) +
                                     " is not a known scheme");
  }
  if (shape.tokens == 0 || shape.heads == 0 || shape.head_dim == 0) {
    return Status::InvalidArgument("slab shape " + std::to_string(shape.tokens) + "x" +
                                   std::to_string(shape.heads) + "x" +
                                   std::to_string(shape.head_dim) + " has a zero dimension");
  }
  // Bound each dimension so every size below fits in 64 bits with room to spare.
  if (shape.tokens > 1u << 24 || shape.heads > 1u << 16 || shape.head_dim > 1u << 16) {
    return Status::InvalidArgument("slab shape " + std::to_string(shape.tokens) + "x" +
                                   std::to_string(shape.heads) + "x" +
                                   std::to_string(shape.head_dim) + " is too large");
  }
  return Status::Ok();
}

QuantSizes quant_sizes(const QuantSpec& spec, const SlabShape& shape) {
  const uint64_t rows = uint64_t{shape.tokens} * shape.heads;
  const uint64_t n = shape.elements();
  switch (spec.scheme) {
    case QuantScheme::kFp8E4M3:
      return {rows, n};
    case QuantScheme::kFp8Auto:
      return {2 * rows, n};
    case QuantScheme::kInt8:
      return {4 * rows, n};
    case QuantScheme::kInt4Key: {
      const uint64_t groups =
          ceil_div(shape.tokens, spec.group_size) * shape.heads * shape.head_dim;
      return {8 * groups, ceil_div(n, 2)};
    }
    case QuantScheme::kInt4Value: {
      const uint64_t groups = rows * ceil_div(shape.head_dim, spec.group_size);
      return {8 * groups, ceil_div(n, 2)};
    }
    case QuantScheme::kInt8Key: {
      const uint64_t groups =
          ceil_div(shape.tokens, spec.group_size) * shape.heads * shape.head_dim;
      return {8 * groups, n};
    }
  }
  return {};
}

uint64_t quant_scratch_floats(const QuantSpec& spec, const SlabShape& shape) {
  if (spec.scheme == QuantScheme::kInt4Key || spec.scheme == QuantScheme::kInt8Key) {
    return 3 * uint64_t{shape.heads} * shape.head_dim;
  }
  if (spec.scheme == QuantScheme::kFp8Auto) return 2 * uint64_t{shape.head_dim};
  return shape.head_dim;
}

Status quantize_slab(const QuantSpec& spec, const SlabShape& shape, DType dtype,
                     std::span<const std::byte> in, std::span<std::byte> out,
                     std::span<float> scratch) {
  TIERKV_RETURN_IF_ERROR(validate_quant(spec, shape));
  TIERKV_RETURN_IF_ERROR(check_dtype(dtype));
  const uint64_t in_bytes = shape.elements() * dtype_bytes(dtype);
  if (in.size() != in_bytes) {
    return Status::InvalidArgument("quantize input is " + std::to_string(in.size()) +
                                   " bytes, expected " + std::to_string(in_bytes));
  }
  const uint64_t out_bytes = quant_sizes(spec, shape).total();
  if (out.size() != out_bytes) {
    return Status::InvalidArgument("quantize output is " + std::to_string(out.size()) +
                                   " bytes, expected " + std::to_string(out_bytes));
  }
  const uint64_t need = quant_scratch_floats(spec, shape);
  if (scratch.size() < need) {
    return Status::InvalidArgument("quantize scratch is " + std::to_string(scratch.size()) +
                                   " floats, need " + std::to_string(need));
  }
  const uint64_t hd = uint64_t{shape.heads} * shape.head_dim;
  switch (spec.scheme) {
    case QuantScheme::kFp8E4M3:
      quantize_fp8(shape, dtype, in.data(), out.data(), scratch.data());
      break;
    case QuantScheme::kFp8Auto:
      quantize_fp8_auto(shape, dtype, in.data(), out.data(), scratch.data());
      break;
    case QuantScheme::kInt8:
      quantize_int8(shape, dtype, in.data(), out.data(), scratch.data());
      break;
    case QuantScheme::kInt4Key:
      // The payload is built by or-ing nibbles in: start from zeros.
      std::memset(out.data(), 0, out.size());
      quantize_key_groups<15>(shape, spec.group_size, dtype, in.data(), out.data(), scratch.data(),
                              scratch.data() + hd);
      break;
    case QuantScheme::kInt8Key:
      quantize_key_groups<255>(shape, spec.group_size, dtype, in.data(), out.data(), scratch.data(),
                               scratch.data() + hd);
      break;
    case QuantScheme::kInt4Value:
      std::memset(out.data(), 0, out.size());
      quantize_int4_value(shape, spec.group_size, dtype, in.data(), out.data(), scratch.data());
      break;
  }
  return Status::Ok();
}

Status quantize_slab(const QuantSpec& spec, const SlabShape& shape, DType dtype,
                     std::span<const std::byte> in, std::span<std::byte> out) {
  TIERKV_RETURN_IF_ERROR(validate_quant(spec, shape));
  std::vector<float> scratch(quant_scratch_floats(spec, shape));
  return quantize_slab(spec, shape, dtype, in, out, scratch);
}

Status dequantize_slab(const QuantSpec& spec, const SlabShape& shape, std::span<const std::byte> in,
                       DType dtype, std::span<std::byte> out) {
  TIERKV_RETURN_IF_ERROR(validate_quant(spec, shape));
  TIERKV_RETURN_IF_ERROR(check_dtype(dtype));
  const uint64_t in_bytes = quant_sizes(spec, shape).total();
  if (in.size() != in_bytes) {
    return Status::InvalidArgument("dequantize input is " + std::to_string(in.size()) +
                                   " bytes, expected " + std::to_string(in_bytes));
  }
  const uint64_t out_bytes = shape.elements() * dtype_bytes(dtype);
  if (out.size() != out_bytes) {
    return Status::InvalidArgument("dequantize output is " + std::to_string(out.size()) +
                                   " bytes, expected " + std::to_string(out_bytes));
  }
  switch (dtype) {
    case DType::kFloat16:
      dequantize_dispatch<DType::kFloat16>(spec, shape, in.data(), out.data());
      break;
    case DType::kBFloat16:
      dequantize_dispatch<DType::kBFloat16>(spec, shape, in.data(), out.data());
      break;
    default:
      dequantize_dispatch<DType::kFloat32>(spec, shape, in.data(), out.data());
      break;
  }
  return Status::Ok();
}

}  // namespace tierkv::kernels
