// Helpers shared by the codec tests: KV-like chunk generation and per-codec error checks that
// follow the bounds stated in tierkv/kernels/quantize.h and fused_codec.cc.
#pragma once

#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <random>
#include <vector>

#include "tierkv/kernels/half.h"
#include "tierkv/kernels/quantize.h"
#include "tierkv/layout.h"
#include "tierkv/storage/codec.h"

namespace tierkv::storage::testing {

inline std::vector<float> to_f32(DType dtype, std::span<const std::byte> b) {
  std::vector<float> out(b.size() / dtype_bytes(dtype));
  kernels::convert_to_f32(dtype, b.data(), out.size(), out.data());
  return out;
}

// A chunk with KV-like statistics: per-channel offsets, a few outlier channels, per-token scale.
inline std::vector<std::byte> kv_like_chunk(const Layout& layout, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> n(0.0f, 1.0f);
  const uint64_t row = uint64_t{layout.num_kv_heads} * layout.head_dim;
  std::vector<float> v(layout.chunk_bytes() / dtype_bytes(layout.dtype));
  for (uint64_t slab = 0; slab < 2ull * layout.num_layers; ++slab) {
    std::vector<float> offset(row);
    for (auto& o : offset) o = n(rng) * ((rng() % 16 == 0) ? 6.0f : 0.5f);
    for (uint32_t t = 0; t < layout.chunk_tokens; ++t) {
      const float s = std::exp2(0.5f * n(rng));
      for (uint64_t c = 0; c < row; ++c) {
        v[(slab * layout.chunk_tokens + t) * row + c] = offset[c] + s * n(rng);
      }
    }
  }
  std::vector<std::byte> out(layout.chunk_bytes());
  kernels::convert_from_f32(layout.dtype, v.data(), v.size(), out.data());
  return out;
}

inline double out_ulp(DType dtype) {
  return dtype == DType::kBFloat16 ? 0x1p-8 : dtype == DType::kFloat16 ? 0x1p-11 : 0x1p-23;
}

// Checks every element of `decoded` against `original` with the bound of the codec that made it.
// Returns the number of violations (0 expected).
inline uint64_t count_bound_violations(const CodecConfig& config, const Layout& layout,
                                       std::span<const std::byte> original,
                                       std::span<const std::byte> decoded) {
  const CodecId codec = config.id;
  const auto x = to_f32(layout.dtype, original);
  const auto y = to_f32(layout.dtype, decoded);
  const uint32_t T = layout.chunk_tokens, H = layout.num_kv_heads, D = layout.head_dim;
  const double u = out_ulp(layout.dtype);
  uint64_t bad = 0;
  for (uint64_t slab = 0; slab < 2ull * layout.num_layers; ++slab) {
    const bool is_key = slab % 2 == 0;
    const uint64_t base = slab * uint64_t{T} * H * D;
    auto at = [&](uint32_t t, uint32_t h, uint32_t d) {
      return base + (uint64_t{t} * H + h) * D + d;
    };
    for (uint32_t t = 0; t < T; ++t) {
      for (uint32_t h = 0; h < H; ++h) {
        for (uint32_t d = 0; d < D; ++d) {
          const uint64_t i = at(t, h, d);
          double bound = 0;
          // Grouped asymmetric schemes: int4 (keys per channel, values per token), int8 keys
          // per channel.
          const bool int8_key = codec == CodecId::kInt8 && is_key && config.int8_key_group > 0;
          const uint32_t group = int8_key ? config.int8_key_group : config.int4_group;
          if ((codec == CodecId::kFp8 || codec == CodecId::kInt8) && !int8_key) {
            double amax = 0;
            for (uint32_t dd = 0; dd < D; ++dd)
              amax = std::max(amax, std::fabs(double{x[at(t, h, dd)]}));
            if (codec == CodecId::kFp8 && config.fp8_format == Fp8Format::kAuto) {
              // kFp8Auto, whichever format the row took: at most e4m3's relative step, or
              // e1m6's absolute step 2^-7 of a scale <= amax / 1.875 * (1 + 2^-6).
              bound = std::fabs(x[i]) * (0x1p-4 + 0x1p-20 + u) + amax * 0x1p-7 * 0.55 + 1e-30;
            } else if (codec == CodecId::kFp8) {
              const int k = kernels::fp8_scale_exponent(static_cast<float>(amax));
              bound = std::fabs(x[i]) * (0x1p-4 + u) + std::exp2(k - 10) + 1e-30;
            } else {
              const double scale = amax / 127;
              bound = 0.5 * scale * (1 + 0x1p-20) + (0x1p-23 + u) * (std::fabs(y[i]) + scale);
            }
          } else if (codec == CodecId::kInt4 || int8_key) {
            double lo = INFINITY, hi = -INFINITY;
            if (is_key) {
              const uint32_t t0 = t / group * group, t1 = std::min(T, t0 + group);
              for (uint32_t tt = t0; tt < t1; ++tt) {
                lo = std::min(lo, double{x[at(tt, h, d)]});
                hi = std::max(hi, double{x[at(tt, h, d)]});
              }
            } else {
              const uint32_t d0 = d / group * group, d1 = std::min(D, d0 + group);
              for (uint32_t dd = d0; dd < d1; ++dd) {
                lo = std::min(lo, double{x[at(t, h, dd)]});
                hi = std::max(hi, double{x[at(t, h, dd)]});
              }
            }
            const double scale = (hi - lo) / (int8_key ? 255 : 15);
            bound = 0.5 * scale * (1 + 0x1p-20) +
                    (0x1p-23 + u) * (std::fabs(y[i]) + std::fabs(lo) + scale);
          }
          if (std::fabs(double{y[i]} - x[i]) > bound) ++bad;
        }
      }
    }
  }
  return bad;
}

// Relative L2 error of `decoded` against `original`.
inline double rel_l2(DType dtype, std::span<const std::byte> original,
                     std::span<const std::byte> decoded) {
  const auto x = to_f32(dtype, original);
  const auto y = to_f32(dtype, decoded);
  double num = 0, den = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    num += (double{y[i]} - x[i]) * (double{y[i]} - x[i]);
    den += double{x[i]} * x[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

// The fused codec's stated bound: per block (layer, K/V, head, run of `block` tokens),
// ||y - x|| <= (sqrt(1 - t^2) + e_rep + e_out) ||x|| (+ a tiny absolute slack).
// Returns the worst ratio of a block's error to its bound (<= 1 expected).
inline double fused_worst_block(const Layout& layout, uint32_t block, float threshold, double e_rep,
                                std::span<const std::byte> original,
                                std::span<const std::byte> decoded) {
  const auto x = to_f32(layout.dtype, original);
  const auto y = to_f32(layout.dtype, decoded);
  const uint32_t T = layout.chunk_tokens, H = layout.num_kv_heads, D = layout.head_dim;
  const double t2 = std::min(1.0, double{threshold} * threshold);
  const double rel = (threshold < 0 ? 2.0 : std::sqrt(1 - t2)) + e_rep + 2 * out_ulp(layout.dtype);
  double worst = 0;
  for (uint64_t slab = 0; slab < 2ull * layout.num_layers; ++slab) {
    const uint64_t base = slab * uint64_t{T} * H * D;
    for (uint32_t h = 0; h < H; ++h) {
      for (uint32_t t0 = 0; t0 < T; t0 += block) {
        double num = 0, den = 0;
        for (uint32_t t = t0; t < t0 + block; ++t) {
          for (uint32_t d = 0; d < D; ++d) {
            const uint64_t i = base + (uint64_t{t} * H + h) * D + d;
            num += (double{y[i]} - x[i]) * (double{y[i]} - x[i]);
            den += double{x[i]} * x[i];
          }
        }
        const double bound = rel * std::sqrt(den) + 1e-6;
        worst = std::max(worst, std::sqrt(num) / bound);
      }
    }
  }
  return worst;
}

}  // namespace tierkv::storage::testing
