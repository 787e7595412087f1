// Conversions between fp32 and the 16-bit float formats (IEEE binary16 "fp16" and bfloat16 "bf16")
// that KV caches are stored in, plus whole-array helpers over tierkv's DType.
//
// Every conversion to a narrower format rounds to nearest, ties to even, and saturates: a finite
// value beyond the format's largest finite value becomes that value (with its sign); infinities
// stay infinities and NaN stays a (quiet) NaN. Conversions to fp32 are exact. These are the
// reference semantics the CUDA kernels must reproduce bit for bit (__float2half_rn /
// __float2bfloat16_rn round the same way but do not saturate, so the kernels clamp first).
//
// Header-only, branch-light code that compilers vectorize. Thread safety: pure functions.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "tierkv/layout.h"

namespace tierkv::kernels {

inline float fp16_to_f32(uint16_t h) {
  const uint32_t sign = uint32_t{h & 0x8000u} << 16;
  const uint32_t em = h & 0x7fffu;
  // Reinterpreting em << 13 as an fp32 and scaling by 2^112 rebiases the exponent (15 -> 127) and
  // turns fp16 subnormals into fp32 normals, exactly: the product is a power-of-two scaling.
  float f = std::bit_cast<float>(em << 13) * 0x1p112f;
  uint32_t bits = std::bit_cast<uint32_t>(f);
  if (em >= 0x7c00u) bits |= 0x7f800000u;  // inf / NaN keep an all-ones exponent
  return std::bit_cast<float>(bits | sign);
}

// Written with selects rather than early returns so loops over arrays vectorize.
inline uint16_t f32_to_fp16(float f) {
  const uint32_t u = std::bit_cast<uint32_t>(f);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const uint32_t a = u & 0x7fffffffu;
  // Normal range: rebias the exponent (127 -> 15) and round the mantissa to 10 bits, ties to
  // even, in one integer add.
  const uint32_t normal = (a + 0xc8000fffu + ((a >> 13) & 1u)) >> 13;
  // Below 2^-14 (fp16 subnormal or zero): adding 0.5 aligns the value's bits so the FPU's own
  // round-to-nearest-even leaves the subnormal mantissa in the low bits.
  const uint32_t sub = std::bit_cast<uint32_t>(std::bit_cast<float>(a) + 0.5f) - 0x3f000000u;
  // Selects as masks (all ones where the condition holds), which vectorize.
  auto mask = [](bool c) { return 0u - static_cast<uint32_t>(c); };
  auto pick = [](uint32_t m, uint32_t yes, uint32_t no) { return (yes & m) | (no & ~m); };
  uint32_t r = pick(mask(a < 0x38800000u), sub, normal);
  r = pick(mask(a >= 0x477ff000u), 0x7bffu, r);  // >= 65520 would round to inf: saturate
  r = pick(mask(a == 0x7f800000u), 0x7c00u, r);  // inf
  r = pick(mask(a > 0x7f800000u), 0x7e00u, r);   // NaN
  return static_cast<uint16_t>(r | sign);
}

inline float bf16_to_f32(uint16_t b) { return std::bit_cast<float>(uint32_t{b} << 16); }

inline uint16_t f32_to_bf16(float f) {
  const uint32_t u = std::bit_cast<uint32_t>(f);
  const uint32_t a = u & 0x7fffffffu;
  uint32_t r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;  // round to nearest even
  // Finite values that would round to inf saturate; NaN stays a quiet NaN.
  r = (a >= 0x7f7f8000u && a < 0x7f800000u) ? ((u >> 16) & 0x8000u) | 0x7f7fu : r;
  r = a > 0x7f800000u ? (u >> 16) | 0x40u : r;
  return static_cast<uint16_t>(r);
}

// True for the dtypes the quantizers and codecs accept as KV elements.
inline bool is_float_kv_dtype(DType dtype) {
  return dtype == DType::kFloat16 || dtype == DType::kBFloat16 || dtype == DType::kFloat32;
}

// Element i of a little-endian array of `dtype` (fp16, bf16 or fp32) as fp32.
inline float load_as_f32(DType dtype, const std::byte* base, size_t i) {
  if (dtype == DType::kFloat32) {
    float f;
    std::memcpy(&f, base + 4 * i, 4);
    return f;
  }
  uint16_t h;
  std::memcpy(&h, base + 2 * i, 2);
  return dtype == DType::kFloat16 ? fp16_to_f32(h) : bf16_to_f32(h);
}

// Stores `v` as element i of an array of `dtype`, rounding and saturating as above.
inline void store_from_f32(DType dtype, std::byte* base, size_t i, float v) {
  if (dtype == DType::kFloat32) {
    std::memcpy(base + 4 * i, &v, 4);
    return;
  }
  const uint16_t h = dtype == DType::kFloat16 ? f32_to_fp16(v) : f32_to_bf16(v);
  std::memcpy(base + 2 * i, &h, 2);
}

// Converts n elements of `dtype` at `in` to fp32 (exact).
void convert_to_f32(DType dtype, const std::byte* in, size_t n, float* out);
// Converts n fp32 values to `dtype` at `out` (round to nearest even, saturating).
void convert_from_f32(DType dtype, const float* in, size_t n, std::byte* out);

}  // namespace tierkv::kernels
