// Layout: the shape of one model's KV cache, and Namespace: where a layout's chunks live.
//
// A chunk holds the KV of `chunk_tokens` consecutive tokens for all layers, K and V. Its canonical
// byte layout, which tierkv's kernels and the client library agree on, is layer-major:
//   for layer in [0, num_layers): K[chunk_tokens][num_kv_heads][head_dim], then V[...] likewise,
// each element of `dtype`. The layout fingerprint is part of every namespace, so two models never
// share chunks. Thread safety: plain values.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "tierkv/status.h"

namespace tierkv {

// Wire-stable values.
enum class DType : uint8_t { kFloat16 = 1, kBFloat16 = 2, kFloat32 = 3, kFloat8E4M3 = 4, kInt8 = 5 };

std::string_view dtype_name(DType dtype);
Result<DType> parse_dtype(std::string_view name);  // "fp16", "bf16", "fp32", "fp8_e4m3", "int8"
uint32_t dtype_bytes(DType dtype);

struct Layout {
  uint32_t num_layers = 0;
  uint32_t num_kv_heads = 0;
  uint32_t head_dim = 0;
  DType dtype = DType::kBFloat16;
  uint32_t chunk_tokens = 0;  // 0 = the daemon's default (cache.chunk_tokens)

  // Upper bounds on each field: far beyond any model, low enough that sizes fit in 64 bits.
  static constexpr uint32_t kMaxLayers = 1024;
  static constexpr uint32_t kMaxKvHeads = 1024;
  static constexpr uint32_t kMaxHeadDim = 16384;
  static constexpr uint32_t kMaxChunkTokens = 65536;

  uint64_t bytes_per_token() const {
    return 2ull * num_layers * num_kv_heads * head_dim * dtype_bytes(dtype);
  }
  uint64_t chunk_bytes() const { return bytes_per_token() * chunk_tokens; }
  // xxh3-64 of the canonical encoding of every field; chunk_tokens included.
  uint64_t fingerprint() const;
  // Every field in range (chunk_tokens must already be resolved, i.e. non-zero); names the bad field.
  Status validate() const;
  // "32 layers x 8 kv heads x 128 dim bf16, 256 tokens/chunk"
  std::string to_string() const;

  friend bool operator==(const Layout&, const Layout&) = default;
};

// Identifies a namespace: hash of (layout fingerprint, tenant, salt). Stable across restarts.
using NamespaceId = uint64_t;

NamespaceId namespace_id(const Layout& layout, std::string_view tenant, std::string_view salt);

// A registered namespace, as the daemon resolved it.
struct Namespace {
  NamespaceId id = 0;
  Layout layout;  // chunk_tokens resolved
  std::string tenant;
  std::string salt;
  uint64_t chunk_bytes() const { return layout.chunk_bytes(); }
};

}  // namespace tierkv
