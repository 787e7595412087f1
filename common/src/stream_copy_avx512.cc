// The AVX-512 build of copy_streaming's loop (this file is compiled with -mavx512f on x86-64);
// stream_copy.cc calls it only where the CPU has AVX-512F, with `dst` 64-byte aligned.
#include <immintrin.h>

#include <cstddef>
#include <cstring>

namespace tierkv::detail {

void copy_streaming_avx512(std::byte* dst, const std::byte* src, size_t n) {
  const size_t body = n & ~size_t{255};
  for (size_t at = 0; at < body; at += 256) {
    const std::byte* s = src + at;
    std::byte* d = dst + at;
    const __m512i a = _mm512_loadu_si512(s), b = _mm512_loadu_si512(s + 64);
    const __m512i c = _mm512_loadu_si512(s + 128), e = _mm512_loadu_si512(s + 192);
    _mm512_stream_si512(reinterpret_cast<__m512i*>(d), a);
    _mm512_stream_si512(reinterpret_cast<__m512i*>(d + 64), b);
    _mm512_stream_si512(reinterpret_cast<__m512i*>(d + 128), c);
    _mm512_stream_si512(reinterpret_cast<__m512i*>(d + 192), e);
  }
  _mm_sfence();
  std::memcpy(dst + body, src + body, n - body);
}

}  // namespace tierkv::detail
