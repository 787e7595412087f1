// The gather/scatter kernel behind kv_cuda.h: one template for both directions, both cache
// layouts and every vector width.
//
// Work split: blockIdx.z = chunk, blockIdx.y = segment (one layer's K or V rows of that chunk),
// blockIdx.x strides over the segment's vectors. Consecutive threads take consecutive vectors of
// a row, which are consecutive in memory on both sides, so every warp access is coalesced. Each
// thread issues kUnroll independent loads before its stores, to keep enough bytes in flight to
// cover memory latency. Rows are addressed with FastDivmod, never with integer division.
#include <cuda_runtime.h>

#include <cstdint>

#include "kv_cuda_launch.h"

namespace tierkv::kernels::cuda::detail {
namespace {

template <uint32_t kBytes>
struct VecOf;
template <>
struct VecOf<16> {
  using Type = uint4;
};
template <>
struct VecOf<8> {
  using Type = uint2;
};
template <>
struct VecOf<4> {
  using Type = unsigned int;
};
template <>
struct VecOf<2> {
  using Type = unsigned short;  // NOLINT(google-runtime-int)
};
template <>
struct VecOf<1> {
  using Type = unsigned char;
};

template <uint32_t kVec, bool kPaged, Direction kDir>
__global__ void __launch_bounds__(kThreads) kv_copy_kernel(const KvCopyParams p) {
  using Vec = typename VecOf<kVec>::Type;
  const uint32_t segment = blockIdx.y;
  const uint32_t chunk = blockIdx.z;
  const uint32_t layer = p.layer_begin + segment / 2;
  std::byte* const cache_base = (segment & 1) != 0 ? p.v_layers[layer] : p.k_layers[layer];
  uint64_t chunk_offset = uint64_t{chunk} * p.chunk_stride;
  if (p.chunk_offsets != nullptr) {
    chunk_offset = p.chunk_offsets[chunk];
    if (chunk_offset == kSkipOffset) return;  // the whole block skips: no barrier follows
  }
  std::byte* const chunk_base = p.chunks + chunk_offset + uint64_t{segment} * p.segment_bytes;
  // Rows of this chunk start at (entry, row) = (first_entry, first_row + chunk * chunk_tokens),
  // with the row possibly past the first block; the loop folds it into the entry.
  const uint32_t row0 = p.first_row + chunk * p.chunk_tokens;

  const uint32_t n = p.segment_vecs;
  const uint32_t step = gridDim.x * kThreads * kUnroll;
  for (uint32_t base = blockIdx.x * kThreads * kUnroll + threadIdx.x; base < n; base += step) {
    Vec v[kUnroll];
    std::byte* cache_at[kUnroll];
    bool valid[kUnroll];
#pragma unroll
    for (uint32_t u = 0; u < kUnroll; ++u) {
      const uint32_t i = base + u * kThreads;
      valid[u] = i < n;
      if (!valid[u]) continue;
      uint32_t in_row = 0;
      const uint32_t t = p.row_vecs.divmod(i, &in_row);
      uint32_t in_run = 0;
      const uint32_t run = p.run_vecs.divmod(in_row, &in_run);
      uint64_t token_offset = 0;
      if constexpr (kPaged) {
        uint32_t row = 0;
        const uint32_t entry_delta = p.block_size_div.divmod(row0 + t, &row);
        const int32_t block = p.block_table[p.first_entry + entry_delta];
        if (block < 0 || static_cast<uint32_t>(block) >= p.num_blocks) {
          atomicAdd(p.bad_rows, 1ull);
          valid[u] = false;
          continue;
        }
        token_offset = (uint64_t(block) * p.block_size + row) * p.token_stride;
      } else {
        token_offset = (p.first_entry + row0 + t) * p.token_stride;
      }
      cache_at[u] =
          cache_base + token_offset + uint64_t{run} * p.head_stride + uint64_t{in_run} * kVec;
      std::byte* const chunk_at = chunk_base + uint64_t{i} * kVec;
      if constexpr (kDir == Direction::kScatter) {
        v[u] = __ldcs(reinterpret_cast<const Vec*>(chunk_at));
      } else {
        v[u] = __ldcs(reinterpret_cast<const Vec*>(cache_at[u]));
        cache_at[u] = chunk_at;  // the store goes to the chunk side
      }
    }
#pragma unroll
    for (uint32_t u = 0; u < kUnroll; ++u) {
      if (valid[u]) *reinterpret_cast<Vec*>(cache_at[u]) = v[u];
    }
  }
}

template <uint32_t kVec>
cudaError_t launch_width(const KvCopyParams& p, Direction dir, bool paged, dim3 grid,
                         cudaStream_t stream) {
  if (paged) {
    if (dir == Direction::kScatter) {
      kv_copy_kernel<kVec, true, Direction::kScatter><<<grid, kThreads, 0, stream>>>(p);
    } else {
      kv_copy_kernel<kVec, true, Direction::kGather><<<grid, kThreads, 0, stream>>>(p);
    }
  } else {
    if (dir == Direction::kScatter) {
      kv_copy_kernel<kVec, false, Direction::kScatter><<<grid, kThreads, 0, stream>>>(p);
    } else {
      kv_copy_kernel<kVec, false, Direction::kGather><<<grid, kThreads, 0, stream>>>(p);
    }
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_kv_copy(const KvCopyParams& p, Direction dir, bool paged, uint32_t vector_bytes,
                           dim3 grid, cudaStream_t stream) {
  switch (vector_bytes) {
    case 16:
      return launch_width<16>(p, dir, paged, grid, stream);
    case 8:
      return launch_width<8>(p, dir, paged, grid, stream);
    case 4:
      return launch_width<4>(p, dir, paged, grid, stream);
    case 2:
      return launch_width<2>(p, dir, paged, grid, stream);
    case 1:
      return launch_width<1>(p, dir, paged, grid, stream);
    default:
      return cudaErrorInvalidValue;
  }
}

}  // namespace tierkv::kernels::cuda::detail
