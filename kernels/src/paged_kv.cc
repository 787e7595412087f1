#include "tierkv/kernels/paged_kv.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "kv_view_checks.h"

namespace tierkv::kernels {
namespace {

// Checks the arguments shared by gather and scatter; on success, the chunk's tokens are covered by
// the block table and every block they name is in range, so the copy loop needs no checks.
Status validate_call(const PagedKvView& cache, std::span<const int32_t> block_table,
                     uint64_t first_token, uint32_t chunk_tokens, size_t chunk_size,
                     const char* chunk_name) {
  TIERKV_RETURN_IF_ERROR(cache.validate());
  TIERKV_RETURN_IF_ERROR(detail::check_chunk_tokens(chunk_tokens));
  // Tokens the table covers; saturated, since no real table gets near 2^64 tokens anyway.
  uint64_t covered = 0;
  if (__builtin_mul_overflow(uint64_t{block_table.size()}, uint64_t{cache.block_size}, &covered)) {
    covered = UINT64_MAX;
  }
  if (first_token > covered || chunk_tokens > covered - first_token) {
    return Status::InvalidArgument(
        "tokens [" + std::to_string(first_token) + ", " +
        std::to_string(first_token + chunk_tokens) + ") are not covered by a block table of " +
        std::to_string(block_table.size()) + " blocks of " + std::to_string(cache.block_size) +
        " tokens (" + std::to_string(covered) + " tokens)");
  }
  TIERKV_RETURN_IF_ERROR(detail::check_chunk_size(
      chunk_name, chunk_size, cache.chunk_bytes(chunk_tokens), chunk_tokens, cache.num_layers()));
  const uint64_t first_entry = first_token / cache.block_size;
  const uint64_t last_entry = (first_token + chunk_tokens - 1) / cache.block_size;
  for (uint64_t i = first_entry; i <= last_entry; ++i) {
    const int32_t block = block_table[i];
    if (block < 0 || static_cast<uint32_t>(block) >= cache.num_blocks) {
      return Status::InvalidArgument("block_table[" + std::to_string(i) +
                                     "] = " + std::to_string(block) + " is out of range [0, " +
                                     std::to_string(cache.num_blocks) + ")");
    }
  }
  return Status::Ok();
}

// The one copy loop behind both directions: for each layer and each of K and V, walks the chunk's
// tokens in runs that stay within one block, since such a run is contiguous on both sides, and
// calls copy(rows in the cache, offset in the chunk, bytes). Arguments must have passed
// validate_call().
template <typename CopyRun>
void for_each_run(const PagedKvView& cache, std::span<const int32_t> block_table,
                  uint64_t first_token, uint32_t chunk_tokens, CopyRun copy) {
  const uint64_t row_bytes = cache.row_bytes();
  const uint64_t block_bytes = row_bytes * cache.block_size;
  const uint64_t end_token = first_token + chunk_tokens;
  uint64_t chunk_offset = 0;
  for (uint32_t layer = 0; layer < cache.num_layers(); ++layer) {
    for (std::byte* base : {cache.k_layers[layer], cache.v_layers[layer]}) {
      uint64_t token = first_token;
      while (token < end_token) {
        const uint64_t row = token % cache.block_size;
        const uint64_t run = std::min<uint64_t>(cache.block_size - row, end_token - token);
        const auto block = static_cast<uint64_t>(block_table[token / cache.block_size]);
        copy(base + block * block_bytes + row * row_bytes, chunk_offset, run * row_bytes);
        chunk_offset += run * row_bytes;
        token += run;
      }
    }
  }
}

}  // namespace

Status PagedKvView::validate() const {
  TIERKV_RETURN_IF_ERROR(detail::check_layer_pointers("paged", k_layers, v_layers));
  if (block_size == 0) return detail::out_of_range("block_size", block_size, UINT32_MAX);
  if (num_blocks == 0) return detail::out_of_range("num_blocks", num_blocks, UINT32_MAX);
  TIERKV_RETURN_IF_ERROR(detail::check_row_shape(num_kv_heads, head_dim, elem_bytes));
  // row_bytes() < 2^27 by the limits above; the whole layer tensor must be addressable too.
  uint64_t block_bytes = 0;
  uint64_t layer_bytes = 0;
  if (__builtin_mul_overflow(row_bytes(), uint64_t{block_size}, &block_bytes) ||
      __builtin_mul_overflow(block_bytes, uint64_t{num_blocks}, &layer_bytes)) {
    return Status::InvalidArgument("paged KV cache of " + std::to_string(num_blocks) +
                                   " blocks x " + std::to_string(block_size) + " tokens x " +
                                   std::to_string(row_bytes()) + " bytes overflows 64 bits");
  }
  return Status::Ok();
}

Status gather_chunk(const PagedKvView& cache, std::span<const int32_t> block_table,
                    uint64_t first_token, uint32_t chunk_tokens, std::span<std::byte> chunk_out) {
  TIERKV_RETURN_IF_ERROR(
      validate_call(cache, block_table, first_token, chunk_tokens, chunk_out.size(), "chunk_out"));
  std::byte* out = chunk_out.data();
  for_each_run(cache, block_table, first_token, chunk_tokens,
               [out](const std::byte* rows, uint64_t offset, uint64_t bytes) {
                 std::memcpy(out + offset, rows, bytes);
               });
  return Status::Ok();
}

Status scatter_chunk(const PagedKvView& cache, std::span<const int32_t> block_table,
                     uint64_t first_token, uint32_t chunk_tokens,
                     std::span<const std::byte> chunk_in) {
  TIERKV_RETURN_IF_ERROR(
      validate_call(cache, block_table, first_token, chunk_tokens, chunk_in.size(), "chunk_in"));
  // A block named twice would have one token's rows overwrite another's: reject before writing.
  const uint64_t first_entry = first_token / cache.block_size;
  const uint64_t last_entry = (first_token + chunk_tokens - 1) / cache.block_size;
  std::vector<std::pair<int32_t, uint64_t>> blocks;  // (block id, table index)
  blocks.reserve(last_entry - first_entry + 1);
  for (uint64_t i = first_entry; i <= last_entry; ++i) blocks.emplace_back(block_table[i], i);
  std::sort(blocks.begin(), blocks.end());
  for (size_t i = 1; i < blocks.size(); ++i) {
    if (blocks[i].first == blocks[i - 1].first) {
      return Status::InvalidArgument("block_table[" + std::to_string(blocks[i - 1].second) +
                                     "] and block_table[" + std::to_string(blocks[i].second) +
                                     "] both name block " + std::to_string(blocks[i].first));
    }
  }
  const std::byte* in = chunk_in.data();
  for_each_run(cache, block_table, first_token, chunk_tokens,
               [in](std::byte* rows, uint64_t offset, uint64_t bytes) {
                 std::memcpy(rows, in + offset, bytes);
               });
  return Status::Ok();
}

}  // namespace tierkv::kernels
