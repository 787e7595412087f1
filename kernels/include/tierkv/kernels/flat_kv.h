// Gather and scatter between a flat (unpaged) per-layer KV cache and tierkv's chunk layout.
//
// The flat layout is one K and one V tensor per layer, indexed by token position directly (no
// block table): element (token t, head h, dim d) of a layer lives at
//   base + t * token_stride + h * head_stride + d * elem_bytes
// with head_dim contiguous. Two nestings are accepted:
//   - token-major, [capacity_tokens][num_kv_heads][head_dim] (SGLang's token pool, a packed
//     [tokens][heads][dim] tensor): head_stride >= head_dim * elem_bytes,
//     token_stride >= num_kv_heads * head_stride;
//   - head-major, [num_kv_heads][capacity_tokens][head_dim] (Hugging Face transformers' cache for
//   one
//     sequence, [batch = 1][heads][tokens][dim]): token_stride >= head_dim * elem_bytes,
//     head_stride >= capacity_tokens * token_stride.
// Either way no two (token, head) rows overlap. Strides of 0 mean packed token-major.
// The chunk layout is tierkv's canonical one (tierkv/layout.h): per layer, K[chunk_tokens]
// [num_kv_heads][head_dim], then V likewise.
//
// These are the CPU references; the CUDA kernels (tierkv/kernels/kv_cuda.h) are tested against
// them byte for byte. Every argument is validated before memory is touched, so a rejected call has
// written nothing. Thread safety: calls share no state; two concurrent calls must not write the
// same bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "tierkv/status.h"

namespace tierkv::kernels {

// A borrowed view of an engine's flat KV cache; the engine owns the memory. Each layer tensor must
// be at least layer_bytes() long.
struct FlatKvView {
  std::span<std::byte* const> k_layers;  // one base pointer per layer
  std::span<std::byte* const> v_layers;  // same length as k_layers
  uint64_t capacity_tokens = 0;          // token positions each layer tensor holds
  uint32_t num_kv_heads = 0;
  uint32_t head_dim = 0;
  uint32_t elem_bytes = 0;    // 1 (fp8, int8), 2 (fp16, bf16) or 4 (fp32)
  uint64_t token_stride = 0;  // bytes between consecutive tokens; 0 = packed token-major
  uint64_t head_stride = 0;   // bytes between consecutive heads; 0 = packed token-major

  [[nodiscard]] uint32_t num_layers() const { return static_cast<uint32_t>(k_layers.size()); }
  // Bytes of one head of one token: the unit that is contiguous on both sides.
  [[nodiscard]] uint64_t head_bytes() const { return uint64_t{head_dim} * elem_bytes; }
  // Bytes of one token's K (or V) in one layer, in the chunk layout.
  [[nodiscard]] uint64_t row_bytes() const { return uint64_t{num_kv_heads} * head_bytes(); }
  [[nodiscard]] uint64_t token_stride_bytes() const {
    return token_stride != 0 ? token_stride : row_bytes();
  }
  [[nodiscard]] uint64_t head_stride_bytes() const {
    return head_stride != 0 ? head_stride : head_bytes();
  }
  // The extent of one layer tensor: one past its last byte.
  [[nodiscard]] uint64_t layer_bytes() const;
  // Bytes of a chunk of `chunk_tokens` tokens in the chunk layout: all layers, K and V.
  [[nodiscard]] uint64_t chunk_bytes(uint32_t chunk_tokens) const {
    return 2 * uint64_t{num_layers()} * chunk_tokens * row_bytes();
  }
  // Every field in range, no null layer pointer, strides nest one of the two ways above, sizes fit
  // in 64 bits; names the bad field.
  Status validate() const;
};

// Copies tokens [first_token, first_token + chunk_tokens) of `cache` into `chunk_out`, which must
// be exactly cache.chunk_bytes(chunk_tokens) long; the tokens must lie below capacity_tokens.
Status gather_chunk_flat(const FlatKvView& cache, uint64_t first_token, uint32_t chunk_tokens,
                         std::span<std::byte> chunk_out);

// The inverse: writes `chunk_in` into the rows of tokens [first_token, first_token +
// chunk_tokens). Nothing else in the cache is touched (padding between strided rows included).
Status scatter_chunk_flat(const FlatKvView& cache, uint64_t first_token, uint32_t chunk_tokens,
                          std::span<const std::byte> chunk_in);

}  // namespace tierkv::kernels
