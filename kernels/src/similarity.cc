#include "tierkv/kernels/similarity.h"

#include <algorithm>
#include <cmath>
#include <cstring>
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

// Eight lanes of partial sums: lane j sums the products of elements i with i % 8 == j, in index
// order; the lanes are then added pairwise, then the tail. Written with vector types so the
// compiler keeps each accumulator in one register (8 floats: one AVX register, two SSE ones)
// without -ffast-math (the order of additions is fixed, so it may not reassociate).
// (Vector values never cross a function boundary: that would change the ABI between the
// baseline and AVX2 builds of these functions.)
using V8 = float __attribute__((vector_size(32)));
#define TIERKV_LOAD8(v, p) std::memcpy(&(v), (p), sizeof(V8))

inline float reduce8(const float* a, float tail) {
  return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7])) + tail;
}

TIERKV_DOT_CLONES float dot(const float* a, const float* b, uint32_t n) {
  V8 acc = {};
  uint32_t i = 0;
  for (; i + 8 <= n; i += 8) {
    V8 x, y;
    TIERKV_LOAD8(x, a + i);
    TIERKV_LOAD8(y, b + i);
    acc += x * y;
  }
  float tail = 0.0f;
  for (; i < n; ++i) tail += a[i] * b[i];
  float lanes[8];
  std::memcpy(lanes, &acc, sizeof(lanes));
  return reduce8(lanes, tail);
}

// dot() of one query with four candidates at once: four independent chains instead of one, so
// the loop is not bound by the latency of its additions; each candidate's sum is formed exactly
// as dot() forms it.
TIERKV_DOT_CLONES void dot4(const float* __restrict q, const float* __restrict c0,
                            const float* __restrict c1, const float* __restrict c2,
                            const float* __restrict c3, uint32_t n, float* __restrict out) {
  V8 a0 = {}, a1 = {}, a2 = {}, a3 = {};
  uint32_t i = 0;
  for (; i + 8 <= n; i += 8) {
    V8 x, y0, y1, y2, y3;
    TIERKV_LOAD8(x, q + i);
    TIERKV_LOAD8(y0, c0 + i);
    TIERKV_LOAD8(y1, c1 + i);
    TIERKV_LOAD8(y2, c2 + i);
    TIERKV_LOAD8(y3, c3 + i);
    a0 += x * y0;
    a1 += x * y1;
    a2 += x * y2;
    a3 += x * y3;
  }
  float t[4] = {};
  for (; i < n; ++i) {
    t[0] += q[i] * c0[i];
    t[1] += q[i] * c1[i];
    t[2] += q[i] * c2[i];
    t[3] += q[i] * c3[i];
  }
  float lanes[4][8];
  std::memcpy(lanes[0], &a0, sizeof(lanes[0]));
  std::memcpy(lanes[1], &a1, sizeof(lanes[1]));
  std::memcpy(lanes[2], &a2, sizeof(lanes[2]));
  std::memcpy(lanes[3], &a3, sizeof(lanes[3]));
  for (int k = 0; k < 4; ++k) out[k] = reduce8(lanes[k], t[k]);
}
#undef TIERKV_LOAD8

inline float cosine(float dot_ab, float na, float nb) { return cosine_from_dot(dot_ab, na, nb); }

}  // namespace

float cosine_from_dot(float dot_ab, float norm_a, float norm_b) {
  if (norm_a == 0.0f || norm_b == 0.0f) return (norm_a == 0.0f && norm_b == 0.0f) ? 1.0f : 0.0f;
  return dot_ab / (norm_a * norm_b);
}

float dot_product(const float* a, const float* b, uint32_t dim) { return dot(a, b, dim); }

void dot_products(const float* query, const float* candidates, const int32_t* which, uint32_t count,
                  uint32_t dim, float* out) {
  auto at = [&](uint32_t i) {
    return candidates + uint64_t(which != nullptr ? static_cast<uint32_t>(which[i]) : i) * dim;
  };
  uint32_t i = 0;
  for (; i + 4 <= count; i += 4) dot4(query, at(i), at(i + 1), at(i + 2), at(i + 3), dim, out + i);
  for (; i < count; ++i) out[i] = dot(query, at(i), dim);
}

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
  constexpr uint32_t kBatch = 64;
  float dots[kBatch];
  for (uint32_t q = 0; q < num_queries; ++q) {
    const float* qv = queries.data() + uint64_t{q} * dim;
    const float qn = std::sqrt(dot(qv, qv, dim));
    int32_t best = -1;
    float best_sim = -std::numeric_limits<float>::infinity();
    for (uint32_t c = 0; c < num_candidates; ++c) {
      if (c % kBatch == 0) {
        dot_products(qv, candidates.data() + uint64_t{c} * dim, nullptr,
                     std::min(kBatch, num_candidates - c), dim, dots);
      }
      const float sim = cosine(dots[c % kBatch], qn, candidate_norms[c]);
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
  constexpr uint32_t kBatch = 64;
  float dots[kBatch];
  for (uint32_t c = 0; c < num_candidates; ++c) {
    const float* cv = candidates.data() + uint64_t{c} * dim;
    if (c % kBatch == 0) {
      dot_products(query.data(), cv, nullptr, std::min(kBatch, num_candidates - c), dim, dots);
    }
    const float cn = candidate_norms != nullptr ? candidate_norms[c] : std::sqrt(dot(cv, cv, dim));
    const float sim = cosine(dots[c % kBatch], qn, cn);
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
