#include "tierkv/kernels/similarity.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

namespace tierkv::kernels {
namespace {

double cosine_ref(const float* a, const float* b, uint32_t n) {
  double ab = 0, aa = 0, bb = 0;
  for (uint32_t i = 0; i < n; ++i) {
    ab += double{a[i]} * b[i];
    aa += double{a[i]} * a[i];
    bb += double{b[i]} * b[i];
  }
  if (aa == 0 || bb == 0) return (aa == 0 && bb == 0) ? 1.0 : 0.0;
  return ab / std::sqrt(aa * bb);
}

TEST(Similarity, FindsTheBestCandidate) {
  std::mt19937 rng(1);
  std::normal_distribution<float> n(0.0f, 1.0f);
  const uint32_t dim = 67, nq = 20, nc = 33;
  std::vector<float> cand(nc * dim), queries(nq * dim);
  for (auto& v : cand) v = n(rng);
  // Each query is a noisy copy of some candidate, scaled (cosine ignores scale).
  std::vector<int32_t> source(nq);
  for (uint32_t q = 0; q < nq; ++q) {
    source[q] = static_cast<int32_t>(rng() % nc);
    for (uint32_t j = 0; j < dim; ++j) {
      queries[q * dim + j] = 3.0f * cand[source[q] * dim + j] + 0.3f * n(rng);
    }
  }
  std::vector<int32_t> best(nq);
  std::vector<float> sim(nq);
  ASSERT_TRUE(best_cosine_match(queries, nq, cand, nc, dim, nullptr, best, sim).ok());
  for (uint32_t q = 0; q < nq; ++q) {
    EXPECT_EQ(best[q], source[q]);
    EXPECT_NEAR(sim[q], cosine_ref(&queries[q * dim], &cand[best[q] * dim], dim), 1e-5);
    // Brute force: no candidate is better.
    for (uint32_t c = 0; c < nc; ++c) {
      EXPECT_LE(cosine_ref(&queries[q * dim], &cand[c * dim], dim), sim[q] + 1e-5);
    }
  }
  // Precomputed norms give the same answer.
  std::vector<float> norms(nc);
  vector_norms(cand.data(), nc, dim, norms.data());
  std::vector<int32_t> best2(nq);
  std::vector<float> sim2(nq);
  ASSERT_TRUE(best_cosine_match(queries, nq, cand, nc, dim, norms.data(), best2, sim2).ok());
  EXPECT_EQ(best, best2);
  EXPECT_EQ(sim, sim2);
}

TEST(Similarity, TiesZerosAndEmpty) {
  const uint32_t dim = 3;
  const std::vector<float> cand{0, 0, 0, 1, 0, 0, 2, 0, 0};  // zero, e_x, 2 e_x
  const std::vector<float> queries{5, 0, 0, 0, 0, 0, 0, 1, 0};
  std::vector<int32_t> best(3);
  std::vector<float> sim(3);
  ASSERT_TRUE(best_cosine_match(queries, 3, cand, 3, dim, nullptr, best, sim).ok());
  EXPECT_EQ(best[0], 1);  // ties between 1 and 2 go to the lower index
  EXPECT_FLOAT_EQ(sim[0], 1.0f);
  EXPECT_EQ(best[1], 0);  // zero matches zero
  EXPECT_FLOAT_EQ(sim[1], 1.0f);
  EXPECT_FLOAT_EQ(sim[2], 0.0f);  // orthogonal to all: first candidate with 0
  EXPECT_EQ(best[2], 0);
  ASSERT_TRUE(best_cosine_match(queries, 3, {}, 0, dim, nullptr, best, sim).ok());
  EXPECT_EQ(best[0], -1);
  EXPECT_TRUE(std::isinf(sim[0]) && sim[0] < 0);
}

TEST(Similarity, TopMatchesAreSortedAndAgreeWithBruteForce) {
  std::mt19937 rng(2);
  std::normal_distribution<float> n(0.0f, 1.0f);
  const uint32_t dim = 9, nc = 40;
  std::vector<float> cand(nc * dim), q(dim);
  for (auto& v : cand) v = n(rng);
  for (auto& v : q) v = n(rng);
  std::vector<std::pair<double, int>> ref;
  for (uint32_t c = 0; c < nc; ++c) ref.emplace_back(-cosine_ref(q.data(), &cand[c * dim], dim), c);
  std::sort(ref.begin(), ref.end());
  std::vector<int32_t> idx(5);
  std::vector<float> sim(5);
  auto got = top_cosine_matches(q, cand, nc, dim, nullptr, 5, idx, sim);
  ASSERT_TRUE(got.ok());
  ASSERT_EQ(*got, 5u);
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(idx[i], ref[i].second);
    EXPECT_NEAR(sim[i], -ref[i].first, 1e-5);
  }
  // Fewer candidates than k; ties keep index order.
  const std::vector<float> same{1, 0, 2, 0};
  const std::vector<float> qx{1, 0};
  auto two = top_cosine_matches(qx, same, 2, 2, nullptr, 5, idx, sim);
  ASSERT_TRUE(two.ok());
  EXPECT_EQ(*two, 2u);
  EXPECT_EQ(idx[0], 0);
  EXPECT_EQ(idx[1], 1);
  EXPECT_FALSE(top_cosine_matches(std::span(qx).first(1), same, 2, 2, nullptr, 5, idx, sim).ok());
}

TEST(Similarity, RejectsShortSpans) {
  std::vector<float> q(6), c(6);
  std::vector<int32_t> best(2);
  std::vector<float> sim(2);
  EXPECT_FALSE(best_cosine_match(std::span(q).first(5), 2, c, 2, 3, nullptr, best, sim).ok());
  EXPECT_FALSE(best_cosine_match(q, 2, std::span(c).first(5), 2, 3, nullptr, best, sim).ok());
  EXPECT_FALSE(best_cosine_match(q, 2, c, 2, 3, nullptr, std::span(best).first(1), sim).ok());
}

}  // namespace
}  // namespace tierkv::kernels
