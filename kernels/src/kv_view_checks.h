// Private: the argument checks that the paged and flat KV views and the copies over them (CPU and
// CUDA) share, so that each check and its message is written once. Each returns Ok or an
// InvalidArgument naming the bad field and value. Thread safety: pure functions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "tierkv/status.h"

namespace tierkv::kernels::detail {

// `value` of `field` lies outside [1, max].
Status out_of_range(const char* field, uint64_t value, uint64_t max);

// Per-layer K and V base pointers: at least one layer, as many V as K, at most Layout::kMaxLayers,
// none null. `cache_kind` names the view in messages ("paged", "flat").
Status check_layer_pointers(const char* cache_kind, std::span<std::byte* const> k_layers,
                            std::span<std::byte* const> v_layers);

// The shape of one token's row: num_kv_heads and head_dim within Layout's limits, elem_bytes 1, 2
// or 4.
Status check_row_shape(uint32_t num_kv_heads, uint32_t head_dim, uint32_t elem_bytes);

// chunk_tokens in [1, Layout::kMaxChunkTokens].
Status check_chunk_tokens(uint32_t chunk_tokens);

// The caller's chunk buffer `chunk_name` holds `chunk_size` bytes; a chunk of `chunk_tokens`
// tokens over `num_layers` layers needs `want`.
Status check_chunk_size(const char* chunk_name, size_t chunk_size, uint64_t want,
                        uint32_t chunk_tokens, uint32_t num_layers);

}  // namespace tierkv::kernels::detail
