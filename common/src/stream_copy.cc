#include "tierkv/stream_copy.h"

#include <cstdint>
#include <cstring>

#if defined(__x86_64__)
#include <emmintrin.h>
#endif

namespace tierkv {

void copy_streaming(std::byte* dst, const std::byte* src, size_t n) {
#if defined(__x86_64__)
  if (reinterpret_cast<uintptr_t>(dst) % 16 == 0 && n >= 4096) {
    const size_t body = n & ~size_t{63};
    for (size_t at = 0; at < body; at += 64) {
      const auto* s = reinterpret_cast<const __m128i*>(src + at);
      auto* d = reinterpret_cast<__m128i*>(dst + at);
      const __m128i a = _mm_loadu_si128(s), b = _mm_loadu_si128(s + 1);
      const __m128i c = _mm_loadu_si128(s + 2), e = _mm_loadu_si128(s + 3);
      _mm_stream_si128(d, a);
      _mm_stream_si128(d + 1, b);
      _mm_stream_si128(d + 2, c);
      _mm_stream_si128(d + 3, e);
    }
    _mm_sfence();
    std::memcpy(dst + body, src + body, n - body);
    return;
  }
#endif
  std::memcpy(dst, src, n);
}

}  // namespace tierkv
