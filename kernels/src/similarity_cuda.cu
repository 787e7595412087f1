// The kernels behind similarity_cuda.h. A group of 8 lanes computes one dot product: lane j owns
// the reference's partial sum acc[j] (elements j, j + 8, j + 16, ...), lane 0 also the tail, and
// the sums are combined in the reference's order through shuffles.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>

#include "tierkv/kernels/similarity_cuda.h"

namespace tierkv::kernels::cuda {
namespace {

constexpr uint32_t kThreads = 256;
constexpr uint32_t kGroups = kThreads / 8;  // dot products in flight per block

// The reference's dot(a, b, n), computed by the 8 lanes of this thread's group; every lane of the
// warp must call it (it shuffles), each with its own a and b.
__device__ __forceinline__ float group_dot(const float* a, const float* b, uint32_t n) {
  const uint32_t j = threadIdx.x % 8;
  const uint32_t full = n / 8 * 8;
  float acc = 0.0f;
  for (uint32_t i = 0; i < full; i += 8) acc = __fadd_rn(acc, __fmul_rn(a[i + j], b[i + j]));
  float tail = 0.0f;
  if (j == 0) {
    for (uint32_t i = full; i < n; ++i) tail = __fadd_rn(tail, __fmul_rn(a[i], b[i]));
  }
  float s[8];
#pragma unroll
  for (int k = 0; k < 8; ++k) s[k] = __shfl_sync(0xffffffffu, acc, k, 8);
  tail = __shfl_sync(0xffffffffu, tail, 0, 8);
  const float lo = __fadd_rn(__fadd_rn(s[0], s[1]), __fadd_rn(s[2], s[3]));
  const float hi = __fadd_rn(__fadd_rn(s[4], s[5]), __fadd_rn(s[6], s[7]));
  return __fadd_rn(__fadd_rn(lo, hi), tail);
}

__global__ void __launch_bounds__(kThreads)
    norms_kernel(const float* vectors, uint32_t count, uint32_t dim, float* norms) {
  const uint32_t group = (blockIdx.x * kThreads + threadIdx.x) / 8;
  // Whole warps stay in step for the shuffles; groups past the end compute on vector 0.
  const bool valid = group < count;
  const float* v = vectors + uint64_t{valid ? group : 0} * dim;
  const float d = group_dot(v, v, dim);
  if (valid && threadIdx.x % 8 == 0) norms[group] = __fsqrt_rn(d);
}

// One block per query; groups stride over the candidates, then the block merges their bests.
__global__ void __launch_bounds__(kThreads)
    best_match_kernel(const float* queries, const float* candidates, uint32_t num_candidates,
                      uint32_t dim, const float* candidate_norms, int32_t* best_index,
                      float* best_similarity) {
  __shared__ float query_norm;
  __shared__ float group_sim[kGroups];
  __shared__ int32_t group_idx[kGroups];
  const float* q = queries + uint64_t{blockIdx.x} * dim;
  const uint32_t group = threadIdx.x / 8;
  if (threadIdx.x < 32) {
    const float d = group_dot(q, q, dim);  // every group of warp 0 computes it; group 0 keeps it
    if (threadIdx.x == 0) query_norm = __fsqrt_rn(d);
  }
  __syncthreads();
  const float qn = query_norm;
  float best_sim = -INFINITY;
  int32_t best = -1;
  for (uint32_t base = 0; base < num_candidates; base += kGroups) {
    const uint32_t c = base + group;
    const bool valid = c < num_candidates;
    const float d = group_dot(q, candidates + uint64_t{valid ? c : 0} * dim, dim);
    if (!valid) continue;
    const float cn = candidate_norms[c];
    float sim = 0.0f;
    if (qn == 0.0f || cn == 0.0f) {
      sim = (qn == 0.0f && cn == 0.0f) ? 1.0f : 0.0f;
    } else {
      sim = __fdiv_rn(d, __fmul_rn(qn, cn));
    }
    // Candidates come in increasing order per group: strictly greater keeps the lowest index.
    if (sim > best_sim) {
      best_sim = sim;
      best = static_cast<int32_t>(c);
    }
  }
  if (threadIdx.x % 8 == 0) {
    group_sim[group] = best_sim;
    group_idx[group] = best;
  }
  __syncthreads();
  if (threadIdx.x != 0) return;
  for (uint32_t g = 0; g < kGroups; ++g) {
    const float s = group_sim[g];
    const int32_t i = group_idx[g];
    if (i < 0) continue;
    if (s > best_sim || (s == best_sim && (best < 0 || i < best))) {
      best_sim = s;
      best = i;
    }
  }
  best_index[blockIdx.x] = best;
  best_similarity[blockIdx.x] = best_sim;
}

Status launch_status(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return Status::Ok();
  return Status::Internal(std::string(what) + ": " + cudaGetErrorName(e) + " (" +
                          cudaGetErrorString(e) + ")");
}

}  // namespace

Status vector_norms(const float* vectors, uint32_t count, uint32_t dim, float* norms,
                    Stream stream) {
  if (count == 0) return Status::Ok();
  if (vectors == nullptr || norms == nullptr) {
    return Status::InvalidArgument("vector_norms: vectors or norms is null");
  }
  const uint64_t blocks = (uint64_t{count} * 8 + kThreads - 1) / kThreads;
  norms_kernel<<<static_cast<unsigned>(blocks), kThreads, 0,
                 reinterpret_cast<cudaStream_t>(stream)>>>(vectors, count, dim, norms);
  return launch_status(cudaGetLastError(), "vector_norms launch");
}

Status best_cosine_match(const float* queries, uint32_t num_queries, const float* candidates,
                         uint32_t num_candidates, uint32_t dim, const float* candidate_norms,
                         int32_t* best_index, float* best_similarity, Stream stream) {
  if (num_queries == 0) return Status::Ok();
  if (queries == nullptr || best_index == nullptr || best_similarity == nullptr) {
    return Status::InvalidArgument("best_cosine_match: queries or a result pointer is null");
  }
  if (num_candidates > 0 && (candidates == nullptr || candidate_norms == nullptr)) {
    return Status::InvalidArgument(
        "best_cosine_match: candidates or candidate_norms is null (compute the norms with "
        "vector_norms)");
  }
  if (num_candidates > static_cast<uint32_t>(std::numeric_limits<int32_t>::max())) {
    return Status::InvalidArgument("num_candidates = " + std::to_string(num_candidates) +
                                   " exceeds the int32 index range");
  }
  best_match_kernel<<<num_queries, kThreads, 0, reinterpret_cast<cudaStream_t>(stream)>>>(
      queries, candidates, num_candidates, dim, candidate_norms, best_index, best_similarity);
  return launch_status(cudaGetLastError(), "best_cosine_match launch");
}

}  // namespace tierkv::kernels::cuda
