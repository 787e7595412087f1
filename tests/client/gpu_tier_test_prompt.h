// What the GPU tier's test and its helper process agree on: the layout, the tenant, and the
// prompt a seed names.
#pragma once

#include <cstdint>
#include <vector>

#include "tierkv/chunk_key.h"
#include "tierkv/layout.h"

namespace tierkv::testing {

// 4 layers x 2 kv heads x 64 dim bf16, 32-token chunks: 256-byte rows, 64 KiB chunks.
inline Layout gpu_tier_layout() { return Layout{4, 2, 64, DType::kBFloat16, 32}; }
inline constexpr const char* kGpuTierTenant = "gpu-tier";

inline std::vector<TokenId> gpu_tier_prompt(uint64_t seed, uint64_t chunks) {
  std::vector<TokenId> t(chunks * 32);
  for (size_t i = 0; i < t.size(); ++i) t[i] = static_cast<TokenId>(seed * 100003 + i * 7);
  return t;
}

}  // namespace tierkv::testing
