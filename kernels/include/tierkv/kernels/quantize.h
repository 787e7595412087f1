// Quantization of KV slabs: fp8 (e4m3, or a format per row), int8 and int4 — the CPU reference.
//
// A *slab* is one layer's K or V of a chunk: [tokens][heads][head_dim] elements of fp16, bf16 or
// fp32, in that order (innermost head_dim), little-endian — exactly the K (or V) block of one layer
// in tierkv's chunk layout (tierkv/layout.h). A slab is quantized into one contiguous *encoded
// slab*: a metadata region (scales, zero points) followed by a payload region. The CUDA kernels
// that mirror these functions must produce byte-identical encoded slabs and byte-identical
// dequantized slabs; the semantics below are specified to make that possible (only exactly
// rounded IEEE fp32 operations, no fused multiply-add, a fixed order of operations).
//
// Common rules
//   - All arithmetic is IEEE fp32, round to nearest even. Input elements are first converted to
//     fp32 (exact). rint() below means round to nearest, ties to even.
//   - amax, min and max are taken over the finite elements of the group only; a group with no
//     finite element behaves as if all its elements were 0. NaN elements quantize as stated per
//     scheme; infinities saturate.
//   - Dequantized values are computed in fp32 and converted to the output dtype with round to
//     nearest even, saturating at the dtype's largest finite value (tierkv/kernels/half.h).
//   - Multi-byte metadata values are little-endian and stored unaligned (read with memcpy).
//
// Schemes and byte layouts (T = tokens, H = heads, D = head_dim, G = group size):
//
// kFp8E4M3 — per-token-per-head power-of-two scale, OCP FP8 E4M3 ("FN": no infinities, max 448,
//   NaN = S.1111.111) payload.
//   metadata: uint8 exp[T][H]           scale s = 2^(exp - 127) (the OCP MX "E8M0" encoding)
//   payload:  uint8 q[T][H][D]          e4m3 bit patterns
//   exp is the smallest k in [-127, 127] with amax <= 448 * 2^k (amax = 0: k = 0). Since s is a
//   power of two, x / s is exact; q = e4m3_rne(x / s), saturating finite values to +-448; NaN
//   -> 0x7f with the sign bit of x. Dequantized: e4m3_value(q) * s (exact in fp32).
//   Error bound, per element: |x' - x| <= 2^-4 |x| + 2^(k-10) (+ the output dtype's rounding,
//   which is exact for bf16/fp32 and for fp16 within its normal range).
//
// kFp8Auto — 8-bit floats whose split between exponent and mantissa bits is chosen per row
//   (token, head): E4M3, E3M4, E2M5 or E1M6 (format f has 4 - f exponent and 3 + f mantissa
//   bits), with a per-row scale. A row of real KV spans a few binades, so e4m3's 16 exponents
//   waste a bit a row could spend on its mantissa; a row with a far outlier keeps the exponents.
//   Same size as kFp8E4M3 plus one byte a row; on real KV a quarter of its attention-output error.
//   metadata: uint16 meta[T][H]          format f = meta >> 14, scale code c = meta & 0x3fff
//   payload:  uint8 q[T][H][D]           sign bit, then E exponent bits e and M mantissa bits m
//   Codes are normalized: q's value is 2^(e + 1 - 2^E) * (1 + m / 2^M) for e >= 1 and
//   2^(2 - 2^E) * m / 2^M for e = 0, so the largest is max_f = 2 - 2^-M; every code is finite.
//   The scale is the fp32 whose bits are c << 17 (8 exponent, 6 mantissa bits).
//   Per row and format: c_f = amax / max_f rounded up to the scale's 14 bits (at most
//   0x3fbf), s_f = that scale, inv = 1 / s_f (0 if s_f == 0), y = x * inv, q =
//   the nearest code to y (ties to even; magnitudes saturate at max_f; NaN -> 0). The row's error
//   in format f is S_f * s_f * s_f, where S_f sums (value(q) - y)^2 over the row's elements with a
//   finite y as a warp does: lane l (0..31) sums elements l, l + 32, ... in order from 0, then
//   lane l += lane l + w for w = 16, 8, 4, 2, 1; S_f is lane 0's. The format with the least
//   error wins, ties to the one with more mantissa bits. Dequantized: value(q) * scale.
//   Error bound, per element, with the row's chosen format (E, M) and scale s:
//   |x' - x| <= 2^-(M+1) |x| + 2^(1 - 2^E - M) s + max(0, |x| - max_f s) + 2^-20 |x|, plus the
//   output dtype's rounding (the third term covers saturation at the largest scale code).
//
// kInt8 — symmetric, per-token-per-head scale.
//   metadata: fp32 scale[T][H]          scale = amax / 127
//   payload:  int8 q[T][H][D]
//   inv = 127 / amax (0 if amax == 0); q = clamp(rint(x * inv), -127, 127); NaN -> 0.
//   Dequantized: q * scale.
//   Error bound, per element: |x' - x| <= 0.5 * scale * (1 + 2^-20) + 2^-23 |x'|, plus the output
//   dtype's rounding (u |x'|, u = 2^-8 bf16, 2^-11 fp16, 0 fp32).
//
// kInt4Key / kInt4Value — asymmetric (min/max) 4-bit, grouped in the KIVI style: keys per channel
//   (a group is G consecutive tokens of one (head, channel)), values per token (a group is G
//   consecutive channels of one (token, head)). Groups at the end may be shorter (ceil division).
//   Let NG = number of groups: kInt4Key: ceil(T/G) * H * D, indexed [t/G][h][d];
//                              kInt4Value: T * H * ceil(D/G), indexed [t][h][d/G].
//   metadata: fp32 scale[NG], then fp32 min[NG]     scale = (max - min) / 15
//   payload:  uint8 packed[ceil(T*H*D / 2)]         element e (in [t][h][d] order) in the low
//                                                   nibble of byte e/2 if e is even, else the high
//                                                   nibble; a trailing unused nibble is 0.
//   inv = 15 / (max - min) (0 if max == min); q = clamp(rint((x - min) * inv), 0, 15); NaN -> 0.
//   Dequantized: q * scale + min (a product, then a sum: two roundings, never an FMA).
//   Error bound, per element: |x' - x| <= 0.5 * scale * (1 + 2^-20) + 2^-23 (|x'| + |min|), plus
//   the output dtype's rounding. Inputs must be finite with (max - min) finite.
//
// kInt8Key — kInt4Key's layout and rules with 8 bits: asymmetric (min/max), groups of G
//   consecutive tokens of one (head, channel) (keys per channel, as KIVI quantizes keys: real
//   keys have outlier channels whose range spans few values across tokens, so a per-channel step
//   is far finer than a per-token one). NG = ceil(T/G) * H * D, indexed [t/G][h][d].
//   metadata: fp32 scale[NG], then fp32 min[NG]     scale = (max - min) / 255
//   payload:  uint8 q[T][H][D]
//   inv = 255 / (max - min) (0 if max == min); q = clamp(rint((x - min) * inv), 0, 255); NaN -> 0.
//   Dequantized: q * scale + min (two roundings, never an FMA).
//   Error bound, per element: as kInt4Key's, with this scale.
//
// Thread safety: pure functions; concurrent calls may share inputs but not outputs.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "tierkv/layout.h"
#include "tierkv/status.h"

namespace tierkv::kernels {

// Wire-stable: stored in encoded chunk headers.
enum class QuantScheme : uint8_t {
  kFp8E4M3 = 1,
  kInt8 = 2,
  kInt4Key = 3,    // int4, groups of G tokens per (head, channel)
  kInt4Value = 4,  // int4, groups of G channels per (token, head)
  kInt8Key = 5,    // int8 asymmetric, groups of G tokens per (head, channel)
  kFp8Auto = 6,    // 8-bit float, exponent/mantissa split and scale per (token, head)
};

// The shape of one slab: [tokens][heads][head_dim].
struct SlabShape {
  uint32_t tokens = 0;
  uint32_t heads = 0;
  uint32_t head_dim = 0;
  [[nodiscard]] uint64_t elements() const { return uint64_t{tokens} * heads * head_dim; }
};

// How one slab is quantized. group_size is used by the grouped schemes only (int4, int8 key;
// >= 1).
struct QuantSpec {
  QuantScheme scheme = QuantScheme::kFp8E4M3;
  uint32_t group_size = 32;
};

// Sizes of an encoded slab's two regions; total() bytes are laid out metadata then payload.
struct QuantSizes {
  uint64_t metadata = 0;
  uint64_t payload = 0;
  [[nodiscard]] uint64_t total() const { return metadata + payload; }
};

// Checks the spec (known scheme, group size in [1, 65536] for the grouped schemes) and the shape
// (every field non-zero).
Status validate_quant(const QuantSpec& spec, const SlabShape& shape);

// Region sizes for `spec` and `shape`; both must be valid (validate_quant).
QuantSizes quant_sizes(const QuantSpec& spec, const SlabShape& shape);

// fp32 scratch quantize_slab needs for `spec` and `shape` (both valid): at most 3 * heads *
// head_dim.
uint64_t quant_scratch_floats(const QuantSpec& spec, const SlabShape& shape);

// Quantizes the slab `in` (shape.elements() elements of `dtype`: fp16, bf16 or fp32) into `out`,
// which must be exactly quant_sizes(spec, shape).total() bytes, using `scratch` (at least
// quant_scratch_floats(spec, shape) floats, caller-owned so a hot path allocates nothing).
// Validates every argument before writing anything.
Status quantize_slab(const QuantSpec& spec, const SlabShape& shape, DType dtype,
                     std::span<const std::byte> in, std::span<std::byte> out,
                     std::span<float> scratch);
// The same with scratch allocated per call (tests, tools).
Status quantize_slab(const QuantSpec& spec, const SlabShape& shape, DType dtype,
                     std::span<const std::byte> in, std::span<std::byte> out);

// The inverse: reads an encoded slab (exactly quant_sizes(...).total() bytes) and writes
// shape.elements() elements of `dtype` to `out`. Any bit pattern of `in` decodes to some values
// (never out-of-bounds); corrupt metadata gives wrong values, which is why encoded chunks carry a
// checksum.
Status dequantize_slab(const QuantSpec& spec, const SlabShape& shape, std::span<const std::byte> in,
                       DType dtype, std::span<std::byte> out);

// Scalar building blocks, exposed so tests and the CUDA port can check single values.
// fp32 -> OCP e4m3 bits, round to nearest even, finite values saturate to +-448, NaN -> 0x7f|sign.
uint8_t f32_to_e4m3(float x);
// e4m3 bits -> fp32 (exact); 0x7f / 0xff are NaN.
float e4m3_to_f32(uint8_t q);
// The fp8 scale exponent k (scale 2^k) chosen for a group whose finite amax is `amax` (>= 0).
int fp8_scale_exponent(float amax);
// kFp8Auto's formats (0..3: E4M3, E3M4, E2M5, E1M6): a scaled value -> its nearest code (ties to
// even, saturating, NaN -> 0), and a code -> its normalized value (exact).
uint8_t fp8_auto_encode(float y, uint32_t format);
float fp8_auto_decode(uint8_t q, uint32_t format);
// kFp8Auto's 14-bit scale code for a row of finite amax `amax` in `format`, and its value.
uint32_t fp8_auto_scale_code(float amax, uint32_t format);
float fp8_auto_scale(uint32_t code);

}  // namespace tierkv::kernels
