// Private: the arithmetic of QuantScheme::kFp8Auto (tierkv/kernels/quantize.h documents the
// scheme), shared by the CPU reference (quantize.cc) and the CUDA kernels
// (quantize_cuda_kernels.cu), so both round every value the same way: one source, compiled by
// g++ (with -ffp-contract=off) and by nvcc (where the explicit __f*_rn intrinsics keep products
// and sums from fusing into an FMA). C++17: nvcc compiles it.
#pragma once

#include <cstddef>
#include <cstdint>

#if defined(__CUDACC__)
#define TIERKV_FP8_HD __host__ __device__ __forceinline__
#else
#define TIERKV_FP8_HD inline
#endif

namespace tierkv::kernels::fp8auto {

// Formats 0..3: E4M3, E3M4, E2M5, E1M6 (exponent bits 4 - f, mantissa bits 3 + f).
inline constexpr uint32_t kFormats = 4;
// Lanes of the error sum: the CUDA kernels give each of a warp's 32 lanes every 32nd element.
inline constexpr uint32_t kLanes = 32;
// The largest finite scale code (exponent 254, mantissa all ones).
inline constexpr uint32_t kMaxScaleCode = 0x3fbfu;

TIERKV_FP8_HD float as_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  return __builtin_bit_cast(float, u);
#endif
}

TIERKV_FP8_HD uint32_t as_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  return __builtin_bit_cast(uint32_t, f);
#endif
}

TIERKV_FP8_HD float mul(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}

TIERKV_FP8_HD float add(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}

TIERKV_FP8_HD float sub(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}

TIERKV_FP8_HD float div(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}

TIERKV_FP8_HD uint32_t mant_bits(uint32_t f) { return 3 + f; }
TIERKV_FP8_HD uint32_t exp_bits(uint32_t f) { return 4 - f; }

// The largest code's value, 2 - 2^-M (codes are normalized: the top binade is [1, 2)).
TIERKV_FP8_HD float max_value(uint32_t f) {
  return as_float(0x3f800000u | (((1u << mant_bits(f)) - 1) << (23 - mant_bits(f))));
}

// 2^(2 - 2^E - M), the step of the subnormal codes: code values are integers times this.
TIERKV_FP8_HD float step(uint32_t f) {
  return as_float((129u - (1u << exp_bits(f)) - mant_bits(f)) << 23);
}

// The 14-bit scale code of a row whose finite amax is `amax` (>= 0) in format f: amax / max_value
// rounded up to 8 exponent and 6 mantissa bits (so the row's largest element does not saturate),
// the largest finite code at most. The scale is as_float(code << 17).
TIERKV_FP8_HD uint32_t scale_code(float amax, uint32_t f) {
  const uint32_t u = as_bits(div(amax, max_value(f)));
  const uint32_t code = (u + 0x1ffffu) >> 17;
  return code > kMaxScaleCode ? kMaxScaleCode : code;
}

// A scale code's value. Any 14 bits decode: codes past the largest finite one are clamped to it.
TIERKV_FP8_HD float scale_value(uint32_t code) {
  code &= 0x3fffu;
  return as_float((code > kMaxScaleCode ? kMaxScaleCode : code) << 17);
}

// 1 / scale, 0 for a zero scale.
TIERKV_FP8_HD float inverse(float scale) { return scale > 0.0f ? div(1.0f, scale) : 0.0f; }

// y (an input times the row's inverse scale) -> code: sign bit, then E exponent and M mantissa
// bits; magnitudes saturate at max_value(f) (infinities included), NaN -> 0. Branch-free (both
// roundings computed, one selected) so a row's loop vectorizes; every float stays normal, since
// subnormal arithmetic costs x86 a microcode assist per operation.
TIERKV_FP8_HD uint32_t encode(float y, uint32_t f) {
  const uint32_t bits = as_bits(y);
  const uint32_t sign = (bits >> 24) & 0x80u;
  const uint32_t m_bits = mant_bits(f);
  const uint32_t e_span = 1u << exp_bits(f);  // 2^E
  const uint32_t max_bits = as_bits(max_value(f));
  const uint32_t mag = bits & 0x7fffffffu;
  const bool nan = mag > 0x7f800000u;
  const uint32_t u = mag > max_bits ? max_bits : mag;
  // Below the smallest normal 2^(2 - 2^E): a multiple of the subnormal step (m <= 2^M, and 2^M
  // is the code of e = 1, m = 0). Scaled by 2^(M + 2^E - 2), exactly; at most 2^18.
  const float scaled = mul(as_float(u), as_float((125u + m_bits + e_span) << 23));
  // Rounded to an integer (ties to even) by adding 1.5 * 2^23, whose mantissa then holds it.
  const uint32_t subnormal = as_bits(add(scaled, 12582912.0f)) - 0x4b400000u;
  // Normal: round the fp32 mantissa to M bits (ties to even), then rebias the exponent.
  const uint32_t r = u + (1u << (22 - m_bits)) - 1 + ((u >> (23 - m_bits)) & 1u);
  const uint32_t normal = (r >> (23 - m_bits)) - ((128u - e_span) << m_bits);
  const uint32_t em = u < ((129u - e_span) << 23) ? subnormal : normal;
  return nan ? 0u : (sign | em);
}

// The magnitude of code `em` (7 bits) in units of step(f): m for e = 0, else (2^M + m) << (e - 1).
TIERKV_FP8_HD uint32_t magnitude_steps(uint32_t em, uint32_t f) {
  const uint32_t m_bits = mant_bits(f);
  const uint32_t e = em >> m_bits;
  const uint32_t m = em & ((1u << m_bits) - 1);
  const uint32_t normal = ((m | (1u << m_bits)) << e) >> 1;
  return e == 0 ? m : normal;
}

// code -> normalized value, exactly: an integer below 2^19 times a power of two.
TIERKV_FP8_HD float decode(uint32_t q, uint32_t f) {
  const auto steps = static_cast<int32_t>(magnitude_steps(q & 0x7fu, f));
  const float v = mul(static_cast<float>(steps), step(f));
  return as_float(as_bits(v) | ((q & 0x80u) << 24));
}

// code -> dequantized value: the normalized value times the row's scale (one rounding), the sign
// by its bit so that a negative zero code gives -0.
TIERKV_FP8_HD float dequantize(uint32_t q, uint32_t f, float scale) {
  const float v = mul(decode(q & 0x7fu, f), scale);
  return as_float(as_bits(v) | ((q & 0x80u) << 24));
}

// The squared error of one element in format f, for the error sum: y's rounding error, 0 for a
// non-finite y. Branch-free, like encode.
TIERKV_FP8_HD float squared_error(float y, uint32_t f) {
  const bool finite = (as_bits(y) & 0x7fffffffu) < 0x7f800000u;
  const float a = as_float(as_bits(y) & 0x7fffffffu);  // the rounding is symmetric in the sign
  const float e = sub(decode(encode(a, f), f), a);     // exact unless a saturates far past max
  return finite ? mul(e, e) : 0.0f;
}

// Sums a warp's 32 lane partials the way __shfl_xor_sync's butterfly does (lane l adds lane l + w
// for w = 16, 8, 4, 2, 1); `lanes` is overwritten.
TIERKV_FP8_HD float lane_tree_sum(float* lanes) {
  for (uint32_t w = kLanes / 2; w > 0; w /= 2) {
    for (uint32_t l = 0; l < w; ++l) lanes[l] = add(lanes[l], lanes[l + w]);
  }
  return lanes[0];
}

// A row's error in format f, in the input's units: the lane-tree sum of squared errors times
// scale^2. The format with the least error is chosen, ties to the one with more mantissa bits.
TIERKV_FP8_HD float weighted_error(float sse, float scale) { return mul(sse, mul(scale, scale)); }

// A row's candidate formats and the choice among them. Callers offer the formats from the most
// mantissa bits down (f = kFormats - 1 first); a later one must be strictly better to win, so a
// tie keeps the finer format.
struct Candidate {
  uint32_t format = 0;
  uint32_t code = 0;  // the scale's 14-bit code
  float scale = 0.0f;
  float inv = 0.0f;  // what the row's elements are multiplied by before encode()
};

TIERKV_FP8_HD Candidate candidate(float amax, uint32_t f) {
  Candidate c;
  c.format = f;
  c.code = scale_code(amax, f);
  c.scale = scale_value(c.code);
  c.inv = inverse(c.scale);
  return c;
}

struct Choice {
  Candidate best;
  float err = 0.0f;
  bool any = false;
  // `sse`: the candidate's lane-tree sum of squared errors.
  TIERKV_FP8_HD void offer(const Candidate& c, float sse) {
    const float e = weighted_error(sse, c.scale);
    if (!any || e < err) {
      best = c;
      err = e;
      any = true;
    }
  }
};

// The metadata of a row: a little-endian uint16 (stored unaligned), format in the top 2 bits,
// scale code in the low 14. `meta` is the encoded slab's metadata region.
TIERKV_FP8_HD void store_metadata(std::byte* meta, uint64_t row, uint32_t f, uint32_t code) {
  const uint32_t m = (f << 14) | code;
  meta[2 * row] = static_cast<std::byte>(m & 0xffu);
  meta[2 * row + 1] = static_cast<std::byte>(m >> 8);
}
TIERKV_FP8_HD uint32_t load_metadata(const std::byte* meta, uint64_t row) {
  return static_cast<uint32_t>(meta[2 * row]) | (static_cast<uint32_t>(meta[2 * row + 1]) << 8);
}
TIERKV_FP8_HD uint32_t format_of(uint32_t meta) { return (meta >> 14) & 3u; }
TIERKV_FP8_HD uint32_t code_of(uint32_t meta) { return meta & 0x3fffu; }

}  // namespace tierkv::kernels::fp8auto
