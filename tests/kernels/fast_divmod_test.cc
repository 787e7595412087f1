// FastDivmod (kernels/src/fast_divmod.h), the division the CUDA kernels index rows with, against
// plain integer division: every small divisor and numerator, the edges of the 32-bit range, and
// random pairs.
#include "fast_divmod.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <vector>

namespace tierkv::kernels {
namespace {

void expect_divides(uint32_t d, uint32_t n) {
  const FastDivmod f(d);
  uint32_t rem = 0;
  const uint32_t q = f.divmod(n, &rem);
  ASSERT_EQ(q, n / d) << n << " / " << d;
  ASSERT_EQ(rem, n % d) << n << " % " << d;
}

TEST(FastDivmodTest, SmallDivisorsAndNumerators) {
  for (uint32_t d = 1; d <= 300; ++d) {
    for (uint32_t n = 0; n <= 3000; ++n) expect_divides(d, n);
  }
}

TEST(FastDivmodTest, EdgesOfTheRange) {
  const std::vector<uint32_t> edges = {1,
                                       2,
                                       3,
                                       7,
                                       16,
                                       255,
                                       256,
                                       257,
                                       65535,
                                       65536,
                                       65537,
                                       (1u << 31) - 1,
                                       1u << 31,
                                       (1u << 31) + 1,
                                       UINT32_MAX - 1,
                                       UINT32_MAX};
  for (uint32_t d : edges) {
    for (uint32_t n : edges) expect_divides(d, n);
    for (uint32_t k = 0; k < 4; ++k) {
      // Multiples of d and their neighbours, where rounding would go wrong first.
      const uint64_t m = uint64_t{d} * (UINT32_MAX / d - k);
      for (int64_t delta = -1; delta <= 1; ++delta) {
        const uint64_t n = m + delta;
        if (n <= UINT32_MAX) expect_divides(d, static_cast<uint32_t>(n));
      }
    }
  }
}

TEST(FastDivmodTest, RandomPairs) {
  std::mt19937_64 rng(2024);
  for (int i = 0; i < 1000000; ++i) {
    const auto d = static_cast<uint32_t>(rng() >> (32 + rng() % 32));
    expect_divides(d == 0 ? 1 : d, static_cast<uint32_t>(rng()));
  }
}

}  // namespace
}  // namespace tierkv::kernels
