// Gather and scatter between an engine's paged KV cache and tierkv's contiguous chunk layout.
//
// The paged layout is vLLM's: per layer, one K and one V tensor, each
//   [num_blocks][block_size][num_kv_heads][head_dim]
// of `elem_bytes`-sized elements, and a per-sequence block table: token t of the prompt lives in
// block block_table[t / block_size], row t % block_size. The chunk layout is tierkv's canonical
// one (tierkv/layout.h): for each layer, K[chunk_tokens][num_kv_heads][head_dim], then V likewise.
//
// These are the CPU references: one memcpy per run of rows within a block. The CUDA kernels, when
// they are added, must produce byte-identical results and be tested against these.
//
// Both functions validate every argument before touching memory, so a rejected call has written
// nothing. Only the block-table entries the chunk covers are checked, so a table may carry padding
// (e.g. -1) past the sequence's end. Thread safety: none needed; calls share no state, but two
// concurrent calls must not write the same bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "tierkv/status.h"

namespace tierkv::kernels {

// A borrowed view of an engine's paged KV cache; the engine owns the memory. Pointers are host
// addresses (for the CPU reference) of each layer's K and V tensor.
struct PagedKvView {
  std::span<std::byte* const> k_layers;  // one base pointer per layer
  std::span<std::byte* const> v_layers;  // same length as k_layers
  uint32_t block_size = 0;               // tokens per block
  uint32_t num_blocks = 0;               // blocks per layer tensor
  uint32_t num_kv_heads = 0;
  uint32_t head_dim = 0;
  uint32_t elem_bytes = 0;  // 1 (fp8, int8), 2 (fp16, bf16) or 4 (fp32)

  [[nodiscard]] uint32_t num_layers() const { return static_cast<uint32_t>(k_layers.size()); }
  // Bytes of one token's K (or V) in one layer: one row of a block.
  [[nodiscard]] uint64_t row_bytes() const {
    return uint64_t{num_kv_heads} * head_dim * elem_bytes;
  }
  // Bytes of a chunk of `chunk_tokens` tokens in the chunk layout: all layers, K and V.
  [[nodiscard]] uint64_t chunk_bytes(uint32_t chunk_tokens) const {
    return 2 * uint64_t{num_layers()} * chunk_tokens * row_bytes();
  }
  // Every field in range, no null layer pointer, sizes fit in 64 bits; names the bad field.
  Status validate() const;
};

// Copies tokens [first_token, first_token + chunk_tokens) of the sequence whose blocks
// `block_table` lists out of `cache` into `chunk_out`, which must be exactly
// cache.chunk_bytes(chunk_tokens) long.
Status gather_chunk(const PagedKvView& cache, std::span<const int32_t> block_table,
                    uint64_t first_token, uint32_t chunk_tokens, std::span<std::byte> chunk_out);

// The inverse: writes `chunk_in` (exactly cache.chunk_bytes(chunk_tokens) long) into the rows of
// `cache` that hold tokens [first_token, first_token + chunk_tokens). Rows of other tokens are not
// touched. Rejects a block table that names the same block twice within the chunk, which would
// make one token's write overwrite another's.
Status scatter_chunk(const PagedKvView& cache, std::span<const int32_t> block_table,
                     uint64_t first_token, uint32_t chunk_tokens,
                     std::span<const std::byte> chunk_in);

}  // namespace tierkv::kernels
