#include "kv_view_checks.h"

#include <string>

#include "tierkv/layout.h"

namespace tierkv::kernels::detail {

Status out_of_range(const char* field, uint64_t value, uint64_t max) {
  return Status::InvalidArgument(std::string(field) + " " + std::to_string(value) +
                                 " is out of range [1, " + std::to_string(max) + "]");
}

Status check_layer_pointers(const char* cache_kind, std::span<std::byte* const> k_layers,
                            std::span<std::byte* const> v_layers) {
  if (k_layers.empty()) {
    return Status::InvalidArgument(std::string(cache_kind) + " KV cache has no layers");
  }
  if (k_layers.size() != v_layers.size()) {
    return Status::InvalidArgument(std::string(cache_kind) + " KV cache has " +
                                   std::to_string(k_layers.size()) + " K layers but " +
                                   std::to_string(v_layers.size()) + " V layers");
  }
  if (k_layers.size() > Layout::kMaxLayers) {
    return Status::InvalidArgument("num_layers " + std::to_string(k_layers.size()) + " exceeds " +
                                   std::to_string(Layout::kMaxLayers));
  }
  for (size_t i = 0; i < k_layers.size(); ++i) {
    if (k_layers[i] == nullptr || v_layers[i] == nullptr) {
      return Status::InvalidArgument("layer " + std::to_string(i) + ": " +
                                     (k_layers[i] == nullptr ? "K" : "V") + " pointer is null");
    }
  }
  return Status::Ok();
}

Status check_row_shape(uint32_t num_kv_heads, uint32_t head_dim, uint32_t elem_bytes) {
  if (num_kv_heads == 0 || num_kv_heads > Layout::kMaxKvHeads) {
    return out_of_range("num_kv_heads", num_kv_heads, Layout::kMaxKvHeads);
  }
  if (head_dim == 0 || head_dim > Layout::kMaxHeadDim) {
    return out_of_range("head_dim", head_dim, Layout::kMaxHeadDim);
  }
  if (elem_bytes != 1 && elem_bytes != 2 && elem_bytes != 4) {
    return Status::InvalidArgument("elem_bytes " + std::to_string(elem_bytes) +
                                   " must be 1, 2 or 4");
  }
  return Status::Ok();
}

Status check_chunk_tokens(uint32_t chunk_tokens) {
  if (chunk_tokens == 0 || chunk_tokens > Layout::kMaxChunkTokens) {
    return out_of_range("chunk_tokens", chunk_tokens, Layout::kMaxChunkTokens);
  }
  return Status::Ok();
}

Status check_chunk_size(const char* chunk_name, size_t chunk_size, uint64_t want,
                        uint32_t chunk_tokens, uint32_t num_layers) {
  if (chunk_size != want) {
    return Status::InvalidArgument(std::string(chunk_name) + " is " + std::to_string(chunk_size) +
                                   " bytes; a chunk of " + std::to_string(chunk_tokens) +
                                   " tokens x " + std::to_string(num_layers) + " layers needs " +
                                   std::to_string(want));
  }
  return Status::Ok();
}

}  // namespace tierkv::kernels::detail
