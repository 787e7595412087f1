#include "tierkv/kernels/similarity.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

namespace tierkv::kernels {

namespace {

// Built for baseline x86-64 and for AVX2, chosen at load time.
#if defined(__x86_64__) && !defined(__clang__)
#define TIERKV_DOT_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define TIERKV_DOT_CLONES
#endif

// Eight independent partial sums keep the loop vectorizable without -ffast-math (the order of
// additions is fixed, so the compiler may not reassociate one running sum).
TIERKV_DOT_CLONES float dot(const float* a, const float* b, uint32_t n) {
  float acc[8] = {};
  uint32_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int j = 0; j < 8; ++j) acc[j] += a[i + j] * b[i + j];
  }
  float tail = 0.0f;
  for (; i < n; ++i) tail += a[i] * b[i];
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])) + tail;
}

inline float cosine(float dot_ab, float na, float nb) {
  if (na == 0.0f || nb == 0.0f) return (na == 0.0f && nb == 0.0f) ? 1.0f : 0.0f;
  return dot_ab / (na * nb);
}

}  // namespace

void vector_norms(const float* vectors, uint32_t count, uint32_t dim, float* norms) {
  for (uint32_t i = 0; i < count; ++i) {
    const float* v = vectors + uint64_t{i} * dim;
    norms[i] = std::sqrt(dot(v, v, dim));
  }
}

Status best_cosine_match(std::span<const float> queries, uint32_t num_queries,
                         std::span<const float> candidates, uint32_t num_candidates, uint32_t dim,
                         const float* candidate_norms, std::span<int32_t> best_index,
                         std::span<float> best_similarity) {
  if (queries.size() < uint64_t{num_queries} * dim) {
    return Status::InvalidArgument("queries hold " + std::to_string(queries.size()) +
                                   " floats, need " + std::to_string(uint64_t{num_queries} * dim));
  }
  if (candidates.size() < uint64_t{num_candidates} * dim) {
    return Status::InvalidArgument("candidates hold " + std::to_string(candidates.size()) +
                                   " floats, need " +
                                   std::to_string(uint64_t{num_candidates} * dim));
  }
  if (best_index.size() < num_queries || best_similarity.size() < num_queries) {
    return Status::InvalidArgument("result spans hold " + std::to_string(best_index.size()) +
                                   " and " + std::to_string(best_similarity.size()) +
                                   " entries, need " + std::to_string(num_queries));
  }
  if (num_candidates > static_cast<uint32_t>(std::numeric_limits<int32_t>::max())) {
    return Status::InvalidArgument("num_candidates = " + std::to_string(num_candidates) +
                                   " exceeds the int32 index range");
  }
  std::vector<float> own_norms;
  if (candidate_norms == nullptr) {
    own_norms.resize(num_candidates);
    vector_norms(candidates.data(), num_candidates, dim, own_norms.data());
    candidate_norms = own_norms.data();
  }
  for (uint32_t q = 0; q < num_queries; ++q) {
    const float* qv = queries.data() + uint64_t{q} * dim;
    const float qn = std::sqrt(dot(qv, qv, dim));
    int32_t best = -1;
    float best_sim = -std::numeric_limits<float>::infinity();
    for (uint32_t c = 0; c < num_candidates; ++c) {
      const float* cv = candidates.data() + uint64_t{c} * dim;
      const float sim = cosine(dot(qv, cv, dim), qn, candidate_norms[c]);
      if (sim > best_sim) {
        best_sim = sim;
        best = static_cast<int32_t>(c);
      }
    }
    best_index[q] = best;
    best_similarity[q] = best_sim;
  }
  return Status::Ok();
}

Result<uint32_t> top_cosine_matches(std::span<const float> query, std::span<const float> candidates,
                                    uint32_t num_candidates, uint32_t dim,
                                    const float* candidate_norms, uint32_t k,
                                    std::span<int32_t> index, std::span<float> similarity) {
  if (query.size() < dim || candidates.size() < uint64_t{num_candidates} * dim) {
    return Status::InvalidArgument(
        "top_cosine_matches: query holds " + std::to_string(query.size()) + " floats, candidates " +
        std::to_string(candidates.size()) + "; need " + std::to_string(dim) + " and " +
        std::to_string(uint64_t{num_candidates} * dim));
  }
  const uint32_t n = std::min(k, num_candidates);
  if (index.size() < n || similarity.size() < n) {
    return Status::InvalidArgument(
        "top_cosine_matches: result spans hold " + std::to_string(index.size()) + " and " +
        std::to_string(similarity.size()) + " entries, need " + std::to_string(n));
  }
  const float qn = std::sqrt(dot(query.data(), query.data(), dim));
  uint32_t filled = 0;
  for (uint32_t c = 0; c < num_candidates; ++c) {
    const float* cv = candidates.data() + uint64_t{c} * dim;
    const float cn = candidate_norms != nullptr ? candidate_norms[c] : std::sqrt(dot(cv, cv, dim));
    const float sim = cosine(dot(query.data(), cv, dim), qn, cn);
    if (!(sim == sim)) continue;  // NaN is never a match
    // Insertion into the sorted top list; an equal similarity stays behind the earlier index.
    if (filled == n && !(sim > similarity[n - 1])) continue;
    uint32_t pos = filled < n ? filled++ : n - 1;
    while (pos > 0 && sim > similarity[pos - 1]) {
      similarity[pos] = similarity[pos - 1];
      index[pos] = index[pos - 1];
      --pos;
    }
    similarity[pos] = sim;
    index[pos] = static_cast<int32_t>(c);
  }
  return filled;
}

}  // namespace tierkv::kernels
