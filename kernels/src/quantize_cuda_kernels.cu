// The quantize and dequantize kernels behind quantize_cuda.h: a port of quantize.cc that rounds
// every step the same way (explicit __fadd_rn/__fmul_rn/__fdiv_rn, so nvcc fuses nothing into an
// FMA; integer bit manipulation for the format conversions), so the encoded bytes match the CPU
// reference exactly.
//
// Quantize runs in two launches per batch: (1) per group, its statistics — amax (a warp per row:
// max is order-free) or min/max (a thread per group, in element order like the CPU, since which
// of -0 and +0 a min keeps depends on order) — written as metadata, with the inverse step kept in
// scratch; (2) per 8 elements, the payload. Dequantize is one launch, 8 elements per thread.
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "fp8_auto.h"
#include "quantize_cuda_launch.h"

namespace tierkv::kernels::cuda::detail {
namespace {

constexpr float kFltMax = 3.402823466e+38f;
constexpr uint32_t kThreads = 256;
constexpr uint32_t kPerThread = 8;  // elements per thread in the element-wise kernels

__device__ __forceinline__ float round_even(float v) {
  constexpr float kMagic = 12582912.0f;  // 1.5 * 2^23
  return __fsub_rn(__fadd_rn(v, kMagic), kMagic);
}

__device__ __forceinline__ bool is_finite_value(float x) { return fabsf(x) <= kFltMax; }

__device__ __forceinline__ float pow2(int k) {
  if (k >= -126) return __uint_as_float(static_cast<uint32_t>(k + 127) << 23);
  return __uint_as_float(1u << (k + 149));
}

// Branch-free: the subnormal and NaN forms are computed and selected, since a warp's bytes mix
// all three.
__device__ __forceinline__ float e4m3_value(uint32_t q) {
  const uint32_t sign = (q & 0x80u) << 24;
  const uint32_t e = (q >> 3) & 0xfu;
  const uint32_t m = q & 0x7u;
  const uint32_t normal = sign | ((e + 120u) << 23) | (m << 20);
  // m * 2^-9, exact (m < 8); the sign by its bit, so m = 0 with the sign bit is -0 as on the CPU.
  const uint32_t subnormal = sign | __float_as_uint(__fmul_rn(static_cast<float>(m), 0.001953125f));
  const uint32_t bits = (q & 0x7fu) == 0x7fu ? (sign | 0x7fc00000u) : (e == 0 ? subnormal : normal);
  return __uint_as_float(bits);
}

__device__ __forceinline__ uint32_t f32_to_e4m3(float x) {
  uint32_t u = __float_as_uint(x);
  const uint32_t sign = (u >> 24) & 0x80u;
  u &= 0x7fffffffu;
  if (u > 0x7f800000u) return sign | 0x7fu;
  if (u >= 0x43e00000u) return sign | 0x7eu;
  if (u < 0x3c800000u) {
    const float m = round_even(__fmul_rn(__uint_as_float(u), 512.0f));
    return sign | static_cast<uint32_t>(m);
  }
  u += 0x7ffffu + ((u >> 20) & 1u);
  return (sign | ((u >> 20) - (120u << 3))) & 0xffu;
}

__device__ __forceinline__ int fp8_scale_exponent(float amax) {
  if (!(amax > 0.0f)) return 0;
  if (!(amax <= kFltMax)) return 119;
  int p = 0;
  const float m = frexpf(amax, &p);
  int k = m <= 0.875f ? p - 9 : p - 8;
  k = k < -127 ? -127 : k;
  return k > 119 ? 119 : k;
}

__device__ __forceinline__ float fp16_to_f32(uint32_t h) {
  const uint32_t sign = (h & 0x8000u) << 16;
  const uint32_t em = h & 0x7fffu;
  uint32_t bits = __float_as_uint(__fmul_rn(__uint_as_float(em << 13), 0x1p112f));
  if (em >= 0x7c00u) bits |= 0x7f800000u;
  return __uint_as_float(bits | sign);
}

__device__ __forceinline__ uint32_t f32_to_fp16(float f) {
  uint32_t u = __float_as_uint(f);
  const uint32_t sign = (u >> 16) & 0x8000u;
  u &= 0x7fffffffu;
  if (u > 0x7f800000u) return sign | 0x7e00u;
  if (u == 0x7f800000u) return sign | 0x7c00u;
  if (u >= 0x477ff000u) return sign | 0x7bffu;
  if (u < 0x38800000u) {
    const float t = __fadd_rn(__uint_as_float(u), 0.5f);
    return sign | ((__float_as_uint(t) - 0x3f000000u) & 0xffffu);
  }
  const uint32_t odd = (u >> 13) & 1u;
  u += 0xc8000fffu + odd;
  return sign | ((u >> 13) & 0xffffu);
}

__device__ __forceinline__ uint32_t f32_to_bf16(float f) {
  const uint32_t u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return ((u >> 16) | 0x40u) & 0xffffu;
  if ((u & 0x7fffffffu) == 0x7f800000u) return u >> 16;
  if ((u & 0x7fffffffu) >= 0x7f7f8000u) return ((u >> 16) & 0x8000u) | 0x7f7fu;
  return ((u + 0x7fffu + ((u >> 16) & 1u)) >> 16) & 0xffffu;
}

template <uint32_t kDtype>
__device__ __forceinline__ float load_float(const std::byte* base, uint32_t e) {
  if constexpr (kDtype == kDtypeFp32) {
    return *reinterpret_cast<const float*>(base + 4ull * e);
  } else {
    const uint32_t h = *reinterpret_cast<const uint16_t*>(base + 2ull * e);
    return kDtype == kDtypeFp16 ? fp16_to_f32(h) : __uint_as_float(h << 16);
  }
}

template <uint32_t kDtype>
__device__ __forceinline__ uint32_t to_bits(float v) {
  if constexpr (kDtype == kDtypeFp32) {
    return __float_as_uint(v);
  } else if constexpr (kDtype == kDtypeFp16) {
    return f32_to_fp16(v);
  } else {
    return f32_to_bf16(v);
  }
}

// Metadata floats are stored unaligned (quantize.h); most are aligned in practice.
__device__ __forceinline__ float load_f32_any(const std::byte* p) {
  if ((reinterpret_cast<uintptr_t>(p) & 3u) == 0) return *reinterpret_cast<const float*>(p);
  const auto* b = reinterpret_cast<const uint8_t*>(p);
  return __uint_as_float(uint32_t{b[0]} | (uint32_t{b[1]} << 8) | (uint32_t{b[2]} << 16) |
                         (uint32_t{b[3]} << 24));
}

__device__ __forceinline__ void store_f32_any(std::byte* p, float v) {
  if ((reinterpret_cast<uintptr_t>(p) & 3u) == 0) {
    *reinterpret_cast<float*>(p) = v;
    return;
  }
  const uint32_t u = __float_as_uint(v);
  auto* b = reinterpret_cast<uint8_t*>(p);
  for (int i = 0; i < 4; ++i) b[i] = static_cast<uint8_t>(u >> (8 * i));
}

// The metadata group of element e.
template <uint32_t kScheme>
__device__ __forceinline__ uint32_t group_of(const QuantParams& p, uint32_t e) {
  if constexpr (kScheme == kSchemeInt4Key || kScheme == kSchemeInt8Key) {
    uint32_t c = 0;
    const uint32_t t = p.div_channels.divmod(e, &c);
    return p.div_group.div(t) * p.channels + c;
  } else if constexpr (kScheme == kSchemeInt4Value) {
    uint32_t d = 0;
    const uint32_t row = p.div_row.divmod(e, &d);
    return row * p.groups_per_row + p.div_group.div(d);
  } else {
    return p.div_row.div(e);
  }
}

// --- quantize, launch 1: statistics --------------------------------------------------------------

// fp8 and int8: a warp per row (token, head).
template <uint32_t kScheme, uint32_t kDtype>
__global__ void __launch_bounds__(kThreads) row_stats_kernel(const QuantParams p) {
  const uint32_t row = (blockIdx.x * kThreads + threadIdx.x) / 32;
  const uint32_t lane = threadIdx.x % 32;
  if (row >= p.rows) return;  // whole warps leave together
  const std::byte* in = p.floats + uint64_t{blockIdx.y} * p.float_stride;
  std::byte* out = p.encoded + uint64_t{blockIdx.y} * p.enc_stride;
  float amax = 0.0f;
  for (uint32_t d = lane; d < p.head_dim; d += 32) {
    const float a = fabsf(load_float<kDtype>(in, row * p.head_dim + d));
    if (a <= kFltMax && a > amax) amax = a;
  }
  for (int off = 16; off > 0; off /= 2) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, off));
  if constexpr (kScheme == kSchemeFp8Auto) {
    // Each format's squared error: lane sums in element order, then the butterfly the CPU
    // reference replays (fp8auto::lane_tree_sum); every lane ends with the same sums.
    namespace fa = fp8auto;
    fa::Choice choice;
    for (uint32_t f = fa::kFormats; f-- > 0;) {
      const fa::Candidate c = fa::candidate(amax, f);
      float sse = 0.0f;
      for (uint32_t d = lane; d < p.head_dim; d += 32) {
        const float x = load_float<kDtype>(in, row * p.head_dim + d);
        sse = __fadd_rn(sse, fa::squared_error(__fmul_rn(x, c.inv), f));
      }
      for (int off = 16; off > 0; off /= 2) {
        sse = __fadd_rn(sse, __shfl_xor_sync(0xffffffffu, sse, off));
      }
      choice.offer(c, sse);
    }
    if (lane != 0) return;
    fa::store_metadata(out, row, choice.best.format, choice.best.code);
    p.scratch[uint64_t{blockIdx.y} * p.groups + row] = choice.best.inv;
    return;
  }
  if (lane != 0) return;
  if constexpr (kScheme == kSchemeFp8) {
    out[row] = static_cast<std::byte>(fp8_scale_exponent(amax) + 127);
  } else {
    store_f32_any(out + 4ull * row, __fdiv_rn(amax, 127.0f));
    p.scratch[uint64_t{blockIdx.y} * p.groups + row] = amax > 0.0f ? __fdiv_rn(127.0f, amax) : 0.0f;
  }
}

// int4 and int8 key: a thread per group, its elements in order.
template <uint32_t kScheme, uint32_t kDtype>
__global__ void __launch_bounds__(kThreads) group_stats_kernel(const QuantParams p) {
  const uint32_t g = blockIdx.x * kThreads + threadIdx.x;
  if (g >= p.groups) return;
  const std::byte* in = p.floats + uint64_t{blockIdx.y} * p.float_stride;
  std::byte* out = p.encoded + uint64_t{blockIdx.y} * p.enc_stride;
  float lo = kFltMax;
  float hi = -kFltMax;
  auto take = [&](float x) {
    if (!is_finite_value(x)) return;
    lo = x < lo ? x : lo;
    hi = x > hi ? x : hi;
  };
  if constexpr (kScheme == kSchemeInt4Key || kScheme == kSchemeInt8Key) {
    // Group g = (token group, channel c): tokens [t0, t1) of channel c.
    const uint32_t tg = g / p.channels;
    const uint32_t c = g - tg * p.channels;
    const uint32_t t0 = tg * p.group;
    const uint32_t t1 = min(p.tokens, t0 + p.group);
    for (uint32_t t = t0; t < t1; ++t) take(load_float<kDtype>(in, t * p.channels + c));
  } else {
    // Group g = (row, j): channels [d0, d1) of the row.
    const uint32_t row = g / p.groups_per_row;
    const uint32_t d0 = (g - row * p.groups_per_row) * p.group;
    const uint32_t d1 = min(p.head_dim, d0 + p.group);
    for (uint32_t d = d0; d < d1; ++d) take(load_float<kDtype>(in, row * p.head_dim + d));
  }
  constexpr float kMax = kScheme == kSchemeInt8Key ? 255.0f : 15.0f;
  if (lo > hi) lo = hi = 0.0f;
  store_f32_any(out + 4ull * g, __fdiv_rn(__fsub_rn(hi, lo), kMax));
  store_f32_any(out + p.min_offset + 4ull * g, lo);
  p.scratch[uint64_t{blockIdx.y} * p.groups + g] =
      hi > lo ? __fdiv_rn(kMax, __fsub_rn(hi, lo)) : 0.0f;
}

// --- quantize, launch 2: payload ----------------------------------------------------------------

template <uint32_t kScheme, uint32_t kDtype>
__global__ void __launch_bounds__(kThreads) payload_kernel(const QuantParams p) {
  const uint32_t e0 = (blockIdx.x * kThreads + threadIdx.x) * kPerThread;
  if (e0 >= p.n) return;
  const std::byte* in = p.floats + uint64_t{blockIdx.y} * p.float_stride;
  std::byte* enc = p.encoded + uint64_t{blockIdx.y} * p.enc_stride;
  const float* inv_of = p.scratch + uint64_t{blockIdx.y} * p.groups;
  uint32_t q[kPerThread];
  uint32_t cached = 0xffffffffu;
  float inv = 0.0f;
  float lo = 0.0f;
  uint32_t format = 0;
#pragma unroll
  for (uint32_t k = 0; k < kPerThread; ++k) {
    const uint32_t e = e0 + k;
    q[k] = 0;
    if (e >= p.n) continue;
    const uint32_t g = group_of<kScheme>(p, e);
    if (g != cached) {
      cached = g;
      if constexpr (kScheme == kSchemeFp8) {
        inv = pow2(127 - static_cast<int>(static_cast<uint8_t>(enc[g])));
      } else if constexpr (kScheme == kSchemeFp8Auto) {
        inv = inv_of[g];
        format = fp8auto::format_of(fp8auto::load_metadata(enc, g));
      } else {
        inv = inv_of[g];
        if constexpr (kScheme == kSchemeInt4Key || kScheme == kSchemeInt4Value ||
                      kScheme == kSchemeInt8Key) {
          lo = load_f32_any(enc + p.min_offset + 4ull * g);
        }
      }
    }
    const float x = load_float<kDtype>(in, e);
    if constexpr (kScheme == kSchemeFp8) {
      // A NaN keeps its own sign (the CPU's product would carry it; the GPU's would not).
      q[k] = f32_to_e4m3(isnan(x) ? x : __fmul_rn(x, inv));
    } else if constexpr (kScheme == kSchemeFp8Auto) {
      q[k] = fp8auto::encode(__fmul_rn(x, inv), format);
    } else if constexpr (kScheme == kSchemeInt8) {
      float v = __fmul_rn(x, inv);
      if (v != v) v = 0.0f;
      v = v > 127.0f ? 127.0f : v;
      v = v < -127.0f ? -127.0f : v;
      q[k] = static_cast<uint32_t>(static_cast<int>(round_even(v))) & 0xffu;
    } else if constexpr (kScheme == kSchemeInt8Key) {
      float v = __fmul_rn(__fsub_rn(x, lo), inv);
      if (v != v) v = 0.0f;
      v = v > 255.0f ? 255.0f : v;
      v = v < 0.0f ? 0.0f : v;
      q[k] = static_cast<uint32_t>(round_even(v));
    } else {
      float v = __fmul_rn(__fsub_rn(x, lo), inv);
      if (v != v) v = 0.0f;
      v = v > 15.0f ? 15.0f : v;
      v = v < 0.0f ? 0.0f : v;
      q[k] = static_cast<uint32_t>(round_even(v));
    }
  }
  std::byte* payload = enc + p.payload_offset;
  if constexpr (kScheme == kSchemeInt4Key || kScheme == kSchemeInt4Value) {
    // Element e in the low nibble of byte e/2 if e is even, else the high nibble; e0 is even.
    const uint32_t bytes = (p.n + 1) / 2;
    std::byte* at = payload + e0 / 2;
    uint32_t word = 0;
#pragma unroll
    for (uint32_t k = 0; k < kPerThread; k += 2) word |= (q[k] | (q[k + 1] << 4)) << (4 * k);
    if (e0 / 2 + 4 <= bytes && (reinterpret_cast<uintptr_t>(at) & 3u) == 0) {
      *reinterpret_cast<uint32_t*>(at) = word;
    } else {
      for (uint32_t b = 0; b < 4 && e0 / 2 + b < bytes; ++b) {
        at[b] = static_cast<std::byte>(word >> (8 * b));
      }
    }
  } else {
    std::byte* at = payload + e0;
    if (e0 + kPerThread <= p.n && (reinterpret_cast<uintptr_t>(at) & 7u) == 0) {
      uint2 w;
      w.x = q[0] | (q[1] << 8) | (q[2] << 16) | (q[3] << 24);
      w.y = q[4] | (q[5] << 8) | (q[6] << 16) | (q[7] << 24);
      *reinterpret_cast<uint2*>(at) = w;
    } else {
      for (uint32_t k = 0; k < kPerThread && e0 + k < p.n; ++k)
        at[k] = static_cast<std::byte>(q[k]);
    }
  }
}

// --- dequantize --------------------------------------------------------------------------------

// Eight consecutive metadata floats at p: two vector loads where aligned.
__device__ __forceinline__ void load8_f32(const std::byte* p, float* out) {
  if ((reinterpret_cast<uintptr_t>(p) & 15u) == 0) {
    const float4 a = __ldg(reinterpret_cast<const float4*>(p));
    const float4 b = __ldg(reinterpret_cast<const float4*>(p) + 1);
    out[0] = a.x, out[1] = a.y, out[2] = a.z, out[3] = a.w;
    out[4] = b.x, out[5] = b.y, out[6] = b.z, out[7] = b.w;
    return;
  }
  for (int k = 0; k < 8; ++k) out[k] = load_f32_any(p + 4 * k);
}

// A kFp8Auto row's scale, and its format as a float (dequant_kernel's per-element "min").
__device__ __forceinline__ void fp8_auto_meta(const std::byte* enc, uint32_t g, float* scale,
                                              float* format) {
  const uint32_t m = fp8auto::load_metadata(enc, g);
  *scale = fp8auto::scale_value(fp8auto::code_of(m));
  *format = static_cast<float>(fp8auto::format_of(m));
}

// kUniform (QuantParams::uniform): a thread's 8 elements lie in one row and one group (fp8,
// int8, int4 value) or in one token with consecutive groups (int4 key, int8 key), so the
// metadata is looked up once per thread instead of once per element.
template <uint32_t kScheme, uint32_t kDtype, bool kUniform>
__global__ void __launch_bounds__(kThreads) dequant_kernel(const QuantParams p) {
  constexpr bool kInt4 = kScheme == kSchemeInt4Key || kScheme == kSchemeInt4Value;
  constexpr bool kKeyGroups = kScheme == kSchemeInt4Key || kScheme == kSchemeInt8Key;
  constexpr bool kHasMin = kInt4 || kScheme == kSchemeInt8Key;
  const uint32_t e0 = (blockIdx.x * kThreads + threadIdx.x) * kPerThread;
  if (e0 >= p.n) return;
  const std::byte* enc = p.encoded + uint64_t{blockIdx.y} * p.enc_stride;
  std::byte* out = p.floats + uint64_t{blockIdx.y} * p.float_stride;
  const std::byte* payload = enc + p.payload_offset;
  const bool full = e0 + kPerThread <= p.n;

  // The payload bytes of these elements: 8 (fp8, int8) or 4 (int4).
  uint32_t raw[2] = {0, 0};
  if constexpr (kInt4) {
    const std::byte* at = payload + e0 / 2;
    const uint32_t bytes = (p.n + 1) / 2;
    if (e0 / 2 + 4 <= bytes && (reinterpret_cast<uintptr_t>(at) & 3u) == 0) {
      raw[0] = __ldg(reinterpret_cast<const unsigned int*>(at));
    } else {
      for (uint32_t b = 0; b < 4 && e0 / 2 + b < bytes; ++b) {
        raw[0] |= uint32_t{static_cast<uint8_t>(at[b])} << (8 * b);
      }
    }
  } else {
    const std::byte* at = payload + e0;
    if (full && (reinterpret_cast<uintptr_t>(at) & 7u) == 0) {
      const uint2 w = __ldg(reinterpret_cast<const uint2*>(at));
      raw[0] = w.x;
      raw[1] = w.y;
    } else {
      for (uint32_t k = 0; k < kPerThread && e0 + k < p.n; ++k) {
        raw[k / 4] |= uint32_t{static_cast<uint8_t>(at[k])} << (8 * (k % 4));
      }
    }
  }

  // Per element: scale and min of its group.
  float scale[kPerThread];
  float mn[kPerThread];
  if constexpr (kUniform) {
    const uint32_t g = group_of<kScheme>(p, e0);
    if constexpr (kKeyGroups) {
      load8_f32(enc + 4ull * g, scale);
      load8_f32(enc + p.min_offset + 4ull * g, mn);
    } else {
      float s0 = 0.0f;
      float m0 = 0.0f;
      if constexpr (kScheme == kSchemeFp8) {
        const int kk = static_cast<int>(static_cast<uint8_t>(enc[g])) - 127;
        s0 = pow2(kk > 127 ? 127 : kk);
      } else if constexpr (kScheme == kSchemeFp8Auto) {
        fp8_auto_meta(enc, g, &s0, &m0);
      } else {
        s0 = load_f32_any(enc + 4ull * g);
        if constexpr (kHasMin) m0 = load_f32_any(enc + p.min_offset + 4ull * g);
      }
#pragma unroll
      for (uint32_t k = 0; k < kPerThread; ++k) scale[k] = s0, mn[k] = m0;
    }
  } else {
    uint32_t cached = 0xffffffffu;
    float s0 = 0.0f;
    float m0 = 0.0f;
#pragma unroll
    for (uint32_t k = 0; k < kPerThread; ++k) {
      const uint32_t e = e0 + k < p.n ? e0 + k : e0;
      const uint32_t g = group_of<kScheme>(p, e);
      if (g != cached) {
        cached = g;
        if constexpr (kScheme == kSchemeFp8) {
          const int kk = static_cast<int>(static_cast<uint8_t>(enc[g])) - 127;
          s0 = pow2(kk > 127 ? 127 : kk);
        } else if constexpr (kScheme == kSchemeFp8Auto) {
          fp8_auto_meta(enc, g, &s0, &m0);
        } else {
          s0 = load_f32_any(enc + 4ull * g);
          if constexpr (kHasMin) m0 = load_f32_any(enc + p.min_offset + 4ull * g);
        }
      }
      scale[k] = s0;
      mn[k] = m0;
    }
  }

  uint32_t bits[kPerThread];
#pragma unroll
  for (uint32_t k = 0; k < kPerThread; ++k) {
    float v = 0.0f;
    if constexpr (kScheme == kSchemeFp8) {
      v = __fmul_rn(e4m3_value((raw[k / 4] >> (8 * (k % 4))) & 0xffu), scale[k]);
    } else if constexpr (kScheme == kSchemeFp8Auto) {
      // mn carries the row's format (as a float: 0..3).
      const uint32_t code = (raw[k / 4] >> (8 * (k % 4))) & 0xffu;
      v = fp8auto::dequantize(code, static_cast<uint32_t>(mn[k]), scale[k]);
    } else if constexpr (kScheme == kSchemeInt8) {
      const auto q = static_cast<int8_t>((raw[k / 4] >> (8 * (k % 4))) & 0xffu);
      v = __fmul_rn(static_cast<float>(q), scale[k]);
    } else if constexpr (kScheme == kSchemeInt8Key) {
      const float q = static_cast<float>((raw[k / 4] >> (8 * (k % 4))) & 0xffu);
      v = __fadd_rn(__fmul_rn(q, scale[k]), mn[k]);
    } else {
      const float q = static_cast<float>((raw[0] >> (4 * k)) & 0xfu);
      v = __fadd_rn(__fmul_rn(q, scale[k]), mn[k]);
    }
    bits[k] = to_bits<kDtype>(v);
  }

  if constexpr (kDtype == kDtypeFp32) {
    auto* at = reinterpret_cast<uint32_t*>(out + 4ull * e0);
    if (full && (reinterpret_cast<uintptr_t>(at) & 15u) == 0) {
      reinterpret_cast<uint4*>(at)[0] = make_uint4(bits[0], bits[1], bits[2], bits[3]);
      reinterpret_cast<uint4*>(at)[1] = make_uint4(bits[4], bits[5], bits[6], bits[7]);
    } else {
      for (uint32_t k = 0; k < kPerThread && e0 + k < p.n; ++k) at[k] = bits[k];
    }
  } else {
    auto* at = reinterpret_cast<uint16_t*>(out + 2ull * e0);
    if (full && (reinterpret_cast<uintptr_t>(at) & 15u) == 0) {
      *reinterpret_cast<uint4*>(at) =
          make_uint4(bits[0] | (bits[1] << 16), bits[2] | (bits[3] << 16),
                     bits[4] | (bits[5] << 16), bits[6] | (bits[7] << 16));
    } else {
      for (uint32_t k = 0; k < kPerThread && e0 + k < p.n; ++k) {
        at[k] = static_cast<uint16_t>(bits[k]);
      }
    }
  }
}

dim3 element_grid(const QuantParams& p) {
  const uint64_t threads = (uint64_t{p.n} + kPerThread - 1) / kPerThread;
  return dim3(static_cast<unsigned>((threads + kThreads - 1) / kThreads), p.count);
}

template <uint32_t kScheme, uint32_t kDtype>
cudaError_t quantize_typed(const QuantParams& p, cudaStream_t stream) {
  if constexpr (kScheme == kSchemeFp8 || kScheme == kSchemeFp8Auto || kScheme == kSchemeInt8) {
    const uint64_t threads = uint64_t{p.rows} * 32;
    const dim3 grid(static_cast<unsigned>((threads + kThreads - 1) / kThreads), p.count);
    row_stats_kernel<kScheme, kDtype><<<grid, kThreads, 0, stream>>>(p);
  } else {
    const dim3 grid((p.groups + kThreads - 1) / kThreads, p.count);
    group_stats_kernel<kScheme, kDtype><<<grid, kThreads, 0, stream>>>(p);
  }
  if (cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;
  payload_kernel<kScheme, kDtype><<<element_grid(p), kThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

template <uint32_t kScheme, uint32_t kDtype>
cudaError_t dequantize_typed(const QuantParams& p, cudaStream_t stream) {
  if (p.uniform) {
    dequant_kernel<kScheme, kDtype, true><<<element_grid(p), kThreads, 0, stream>>>(p);
  } else {
    dequant_kernel<kScheme, kDtype, false><<<element_grid(p), kThreads, 0, stream>>>(p);
  }
  return cudaGetLastError();
}

// Calls f.template operator()<scheme, dtype>() for the run-time pair.
template <typename F>
cudaError_t dispatch(uint32_t scheme, uint32_t dtype, F f) {
  auto by_dtype = [&](auto scheme_tag) -> cudaError_t {
    constexpr uint32_t kScheme = decltype(scheme_tag)::value;
    switch (dtype) {
      case kDtypeFp16:
        return f.template operator()<kScheme, kDtypeFp16>();
      case kDtypeBf16:
        return f.template operator()<kScheme, kDtypeBf16>();
      case kDtypeFp32:
        return f.template operator()<kScheme, kDtypeFp32>();
      default:
        return cudaErrorInvalidValue;
    }
  };
  switch (scheme) {
    case kSchemeFp8:
      return by_dtype(std::integral_constant<uint32_t, kSchemeFp8>{});
    case kSchemeInt8:
      return by_dtype(std::integral_constant<uint32_t, kSchemeInt8>{});
    case kSchemeInt4Key:
      return by_dtype(std::integral_constant<uint32_t, kSchemeInt4Key>{});
    case kSchemeInt4Value:
      return by_dtype(std::integral_constant<uint32_t, kSchemeInt4Value>{});
    case kSchemeInt8Key:
      return by_dtype(std::integral_constant<uint32_t, kSchemeInt8Key>{});
    case kSchemeFp8Auto:
      return by_dtype(std::integral_constant<uint32_t, kSchemeFp8Auto>{});
    default:
      return cudaErrorInvalidValue;
  }
}

struct Quantize {
  const QuantParams& p;
  cudaStream_t stream;
  template <uint32_t kScheme, uint32_t kDtype>
  cudaError_t operator()() const {
    return quantize_typed<kScheme, kDtype>(p, stream);
  }
};

struct Dequantize {
  const QuantParams& p;
  cudaStream_t stream;
  template <uint32_t kScheme, uint32_t kDtype>
  cudaError_t operator()() const {
    return dequantize_typed<kScheme, kDtype>(p, stream);
  }
};

}  // namespace

cudaError_t launch_quantize(const QuantParams& p, cudaStream_t stream) {
  return dispatch(p.scheme, p.dtype, Quantize{p, stream});
}

cudaError_t launch_dequantize(const QuantParams& p, cudaStream_t stream) {
  return dispatch(p.scheme, p.dtype, Dequantize{p, stream});
}

}  // namespace tierkv::kernels::cuda::detail
