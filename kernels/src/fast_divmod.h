// Private: division by a run-time divisor that is fixed for a whole launch, as one multiply-high,
// one add and one shift (Granlund and Montgomery's method). Kernels index rows, runs and blocks
// with it instead of the far slower integer division. Usable on the host (tests check it against
// plain division) and on the device. Thread safety: a plain value.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define TIERKV_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define TIERKV_HOST_DEVICE inline
#endif

namespace tierkv::kernels {

struct FastDivmod {
  uint32_t divisor = 1;
  uint32_t multiplier = 1;
  uint32_t shift = 0;

  FastDivmod() = default;
  // divisor must be >= 1.
  explicit FastDivmod(uint32_t d) : divisor(d) {
    while (shift < 32 && (uint64_t{1} << shift) < d) ++shift;
    // m = floor(2^32 * (2^shift - d) / d) + 1 < 2^32 for every d >= 1.
    multiplier =
        static_cast<uint32_t>(((uint64_t{1} << 32) * ((uint64_t{1} << shift) - d)) / d + 1);
  }

  // n / divisor, for every 32-bit n (the add is done in 64 bits, so it cannot overflow).
  [[nodiscard]] TIERKV_HOST_DEVICE uint32_t div(uint32_t n) const {
#if defined(__CUDA_ARCH__)
    const uint32_t hi = __umulhi(n, multiplier);
#else
    const auto hi = static_cast<uint32_t>((uint64_t{n} * multiplier) >> 32);
#endif
    return static_cast<uint32_t>((uint64_t{hi} + n) >> shift);
  }
  // Quotient, and n - quotient * divisor in *rem.
  TIERKV_HOST_DEVICE uint32_t divmod(uint32_t n, uint32_t* rem) const {
    const uint32_t q = div(n);
    *rem = n - q * divisor;
    return q;
  }
};

}  // namespace tierkv::kernels
