// The CUDA cosine-similarity search (tierkv/kernels/similarity_cuda.h) against the CPU reference
// (similarity.h): norms, best indices and best similarities equal bit for bit, on Gaussian
// vectors with zero vectors, exact duplicates (ties) and a NaN among the candidates; dims with
// and without a tail past the last multiple of 8. Skips, saying why, without a GPU.
#include "tierkv/kernels/similarity_cuda.h"

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "tierkv/kernels/kv_cuda.h"
#include "tierkv/kernels/similarity.h"

namespace tierkv::kernels::cuda {
namespace {

struct SimCase {
  uint32_t queries;
  uint32_t candidates;
  uint32_t dim;
};

std::string case_name(const SimCase& c) {
  return "q" + std::to_string(c.queries) + "_c" + std::to_string(c.candidates) + "_d" +
         std::to_string(c.dim);
}
void PrintTo(const SimCase& c, std::ostream* os) { *os << case_name(c); }

template <typename T>
T* to_device(const std::vector<T>& v) {
  void* p = nullptr;
  if (cudaMalloc(&p, std::max<size_t>(1, v.size() * sizeof(T))) != cudaSuccess) return nullptr;
  if (!v.empty()) (void)cudaMemcpy(p, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice);
  return static_cast<T*>(p);
}
template <typename T>
std::vector<T> to_host(const T* p, size_t n) {
  std::vector<T> v(n);
  if (n > 0) (void)cudaMemcpy(v.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost);
  return v;
}
uint32_t bits(float f) {
  uint32_t u = 0;
  std::memcpy(&u, &f, 4);
  return u;
}

class SimilarityCudaTest : public ::testing::TestWithParam<SimCase> {
 protected:
  void SetUp() override {
    const Status s = device_available();
    if (!s.ok()) GTEST_SKIP() << "no GPU: " << s.message();
  }
};

TEST_P(SimilarityCudaTest, MatchesCpuBitForBit) {
  const SimCase c = GetParam();
  std::mt19937_64 rng(c.queries * 1000003ull + c.candidates * 1009ull + c.dim);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> q(uint64_t{c.queries} * c.dim);
  std::vector<float> cand(uint64_t{c.candidates} * c.dim);
  for (float& x : q) x = normal(rng);
  for (float& x : cand) x = normal(rng);
  // Queries near some candidates (high similarities), a zero query and a zero candidate, two
  // equal candidates (a tie the lower index must win), a NaN in one candidate.
  for (uint32_t i = 0; i < c.queries && c.candidates > 0; ++i) {
    const uint32_t src = static_cast<uint32_t>(rng() % c.candidates);
    for (uint32_t d = 0; d < c.dim; ++d) {
      q[uint64_t{i} * c.dim + d] = cand[uint64_t{src} * c.dim + d] + 0.05f * normal(rng);
    }
  }
  if (c.queries > 1) std::fill_n(q.begin() + c.dim, c.dim, 0.0f);
  if (c.candidates > 3) {
    std::fill_n(cand.begin() + 2 * uint64_t{c.dim}, c.dim, 0.0f);
    std::copy_n(cand.begin(), c.dim, cand.begin() + 3 * uint64_t{c.dim});
  }
  if (c.candidates > 5) cand[5 * uint64_t{c.dim}] = std::nanf("");

  std::vector<float> want_norms(c.candidates);
  tierkv::kernels::vector_norms(cand.data(), c.candidates, c.dim, want_norms.data());
  std::vector<int32_t> want_idx(c.queries);
  std::vector<float> want_sim(c.queries);
  ASSERT_TRUE(tierkv::kernels::best_cosine_match(q, c.queries, cand, c.candidates, c.dim, nullptr,
                                                 want_idx, want_sim)
                  .ok());

  float* dq = to_device(q);
  float* dc = to_device(cand);
  float* dn = to_device(std::vector<float>(c.candidates, -7.0f));
  int32_t* di = to_device(std::vector<int32_t>(c.queries, -7));
  float* ds = to_device(std::vector<float>(c.queries, -7.0f));
  ASSERT_TRUE(dq && dc && dn && di && ds);
  ASSERT_TRUE(cuda::vector_norms(dc, c.candidates, c.dim, dn, nullptr).ok());
  ASSERT_TRUE(
      cuda::best_cosine_match(dq, c.queries, dc, c.candidates, c.dim, dn, di, ds, nullptr).ok());
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  const auto got_norms = to_host(dn, c.candidates);
  const auto got_idx = to_host(di, c.queries);
  const auto got_sim = to_host(ds, c.queries);
  for (uint32_t i = 0; i < c.candidates; ++i) {
    EXPECT_TRUE(bits(got_norms[i]) == bits(want_norms[i]) ||
                (std::isnan(got_norms[i]) && std::isnan(want_norms[i])))
        << "norm " << i << ": " << got_norms[i] << " vs " << want_norms[i];
  }
  for (uint32_t i = 0; i < c.queries; ++i) {
    EXPECT_EQ(got_idx[i], want_idx[i]) << "query " << i;
    EXPECT_EQ(bits(got_sim[i]), bits(want_sim[i]))
        << "query " << i << ": " << got_sim[i] << " vs " << want_sim[i];
  }
  for (void* p : {static_cast<void*>(dq), static_cast<void*>(dc), static_cast<void*>(dn),
                  static_cast<void*>(di), static_cast<void*>(ds)}) {
    (void)cudaFree(p);
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, SimilarityCudaTest,
                         ::testing::Values(SimCase{16, 64, 2048},  // 16-token blocks of dim 128
                                           SimCase{5, 37, 13}, SimCase{7, 1, 7}, SimCase{3, 0, 8},
                                           SimCase{9, 70, 64}, SimCase{2, 33, 1}),
                         [](const ::testing::TestParamInfo<SimCase>& info) {
                           return case_name(info.param);
                         });

}  // namespace
}  // namespace tierkv::kernels::cuda
