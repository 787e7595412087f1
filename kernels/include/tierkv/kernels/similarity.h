// Batched cosine-similarity search: for each query vector, the candidate of greatest cosine
// similarity. The CPU reference of the search the fused codec runs to match a chunk's blocks
// against the representatives of the same (layer, head, K/V).
//
// Vectors are fp32, row-major: queries[num_queries][dim], candidates[num_candidates][dim]. (The
// codec flattens a block — a run of tokens of one head — into one vector of tokens * head_dim.)
// cos(a, b) = dot(a, b) / (|a| |b|), accumulated in fp32 in index order; a zero vector has
// similarity 1 to another zero vector and 0 to anything else. Ties go to the lowest candidate
// index. With no candidates, every best_index is -1 and best_similarity is -infinity.
// Results of a CUDA port may differ in the last bits (a different summation order); callers
// compare similarities to a threshold, so they must not depend on bit-exact values.
//
// Thread safety: pure functions; concurrent calls may share inputs but not outputs.
#pragma once

#include <cstdint>
#include <span>

#include "tierkv/status.h"

namespace tierkv::kernels {

// The building blocks of the searches below, for callers that run their own search (the fused
// codec shortlists, then compares a few candidates): a dot product summed exactly as the
// searches sum it, and the cosine they form from it, so combining them gives the searches'
// similarities bit for bit.
float dot_product(const float* a, const float* b, uint32_t dim);
float cosine_from_dot(float dot, float norm_a, float norm_b);
// out[i] = dot_product(query, candidate i) for i < count, candidate i at candidates + k * dim
// with k = which[i] (which may be null: k = i). Several candidates at a time (independent
// accumulators), each summed as dot_product sums it.
void dot_products(const float* query, const float* candidates, const int32_t* which, uint32_t count,
                  uint32_t dim, float* out);

// Euclidean norms of `count` vectors of `dim` floats: norms[i] = sqrt(sum_j v[i][j]^2).
void vector_norms(const float* vectors, uint32_t count, uint32_t dim, float* norms);

// For each query i: best_index[i] in [0, num_candidates) and best_similarity[i], the cosine
// similarity of query i to that candidate. candidate_norms (num_candidates floats, as
// vector_norms computes them) may be null, in which case they are computed here; passing them
// lets a caller that keeps its candidates across calls compute each norm once.
// Returns InvalidArgument when a span is shorter than the sizes require.
Status best_cosine_match(std::span<const float> queries, uint32_t num_queries,
                         std::span<const float> candidates, uint32_t num_candidates, uint32_t dim,
                         const float* candidate_norms, std::span<int32_t> best_index,
                         std::span<float> best_similarity);

// For one query: the min(k, num_candidates) candidates of greatest cosine similarity, best first
// (ties: lower index first), written to index[0..) and similarity[0..); returns how many.
// candidate_norms as above (may be null). A prefilter: the fused codec shortlists candidates on a
// cheap summary of each block, then compares the shortlist in full.
Result<uint32_t> top_cosine_matches(std::span<const float> query, std::span<const float> candidates,
                                    uint32_t num_candidates, uint32_t dim,
                                    const float* candidate_norms, uint32_t k,
                                    std::span<int32_t> index, std::span<float> similarity);

}  // namespace tierkv::kernels
