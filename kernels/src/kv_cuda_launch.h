// Private: what the host side of kv_cuda (kv_cuda.cc, compiled as C++) hands the kernels
// (kv_cuda_kernels.cu) — one plain struct of launch parameters, validated before it gets here.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "fast_divmod.h"

namespace tierkv::kernels::cuda::detail {

struct KvCopyParams {
  // Cache side.
  std::byte* const* k_layers = nullptr;  // device arrays of layer base pointers
  std::byte* const* v_layers = nullptr;
  const int32_t* block_table = nullptr;  // paged only
  uint64_t token_stride = 0;             // bytes between tokens (paged: between rows of a block)
  uint64_t head_stride = 0;              // bytes between contiguous runs within a token
  uint32_t block_size = 1;               // paged
  uint32_t num_blocks = 0;               // paged
  // The first chunk's first token, split into block table entry and row (paged), or the token
  // itself (flat, in first_entry with first_row 0).
  uint64_t first_entry = 0;
  uint32_t first_row = 0;
  uint32_t chunk_tokens = 0;
  uint32_t layer_begin = 0;
  // Chunk side: chunk c, segment s = 2 * (layer - layer_begin) + (V ? 1 : 0) starts at
  // chunks + c * chunk_stride + s * segment_bytes.
  std::byte* chunks = nullptr;
  uint64_t chunk_stride = 0;
  // If set (device memory): chunk c starts at chunks + chunk_offsets[c]; kSkipOffset skips it.
  const uint64_t* chunk_offsets = nullptr;
  uint64_t segment_bytes = 0;
  uint32_t segment_vecs = 0;               // vectors per segment, < 2^31
  FastDivmod row_vecs;                     // vectors per token row
  FastDivmod run_vecs;                     // vectors per contiguous cache-side run
  FastDivmod block_size_div;               // paged; divides rows within a chunk into entries
  unsigned long long* bad_rows = nullptr;  // NOLINT(google-runtime-int)
};

inline constexpr uint64_t kSkipOffset = UINT64_MAX;  // = kv_cuda.h's kSkipChunk

enum class Direction { kScatter, kGather };

// grid = (x blocks per segment, 2 * layers, chunks); kThreads threads per block.
inline constexpr uint32_t kThreads = 256;
inline constexpr uint32_t kUnroll = 4;  // vectors in flight per thread

cudaError_t launch_kv_copy(const KvCopyParams& p, Direction dir, bool paged, uint32_t vector_bytes,
                           dim3 grid, cudaStream_t stream);

}  // namespace tierkv::kernels::cuda::detail
