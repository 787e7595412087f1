// CUDA batched cosine-similarity search: the GPU counterpart of vector_norms and
// best_cosine_match (similarity.h), for the fused codec's matching of blocks against
// representatives.
//
// Every dot product is summed in the CPU reference's exact order (eight strided partial sums, a
// sequential tail, then the same pairwise combination), each step rounded alone, so norms, best
// indices and best similarities equal the reference's bit for bit (similarity.h allows a port to
// differ in the last bits; this one does not). Ties go to the lowest candidate index; a NaN
// similarity is never chosen; with no candidates every index is -1 and similarity -infinity.
//
// All pointers are device memory. Only built with CUDA (target tierkv::kernels_cuda). Thread
// safety: pure functions of their arguments.
#pragma once

#include <cstdint>

#include "tierkv/kernels/cuda_stream.h"
#include "tierkv/status.h"

namespace tierkv::kernels::cuda {

// norms[i] = sqrt(dot(v_i, v_i)) for `count` vectors of `dim` floats, row-major.
Status vector_norms(const float* vectors, uint32_t count, uint32_t dim, float* norms,
                    Stream stream);

// For each query q: best_index[q] and best_similarity[q] over the candidates. candidate_norms
// (num_candidates floats, from vector_norms) is required: a caller keeps its candidates' norms
// across calls.
Status best_cosine_match(const float* queries, uint32_t num_queries, const float* candidates,
                         uint32_t num_candidates, uint32_t dim, const float* candidate_norms,
                         int32_t* best_index, float* best_similarity, Stream stream);

}  // namespace tierkv::kernels::cuda
