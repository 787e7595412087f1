#include "tierkv/stream_copy.h"

#include <cstdint>
#include <cstring>

#if defined(__x86_64__)
#include <emmintrin.h>
#endif

namespace tierkv {

namespace detail {

#if TIERKV_HAVE_AVX512_COPY
void copy_streaming_avx512(std::byte* dst, const std::byte* src, size_t n);  // 64-aligned dst
#endif

namespace {

#if defined(__x86_64__)
void copy_streaming_sse2(std::byte* dst, const std::byte* src, size_t n) {  // 16-aligned dst
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
}
#endif

// Copying into a slot from a source that is not in the cache, 64-byte non-temporal stores ran
// 10-40% faster than 16-byte ones on the Xeon host tierkv-bench was measured on; from the cache
// both reach the same limit. So: the widest this build and CPU have.
CopyIsa select_isa() {
#if TIERKV_HAVE_AVX512_COPY
  if (__builtin_cpu_supports("avx512f")) return CopyIsa::kAvx512;
#endif
#if defined(__x86_64__)
  return CopyIsa::kSse2;
#else
  return CopyIsa::kMemcpy;
#endif
}
const CopyIsa kIsa = select_isa();

}  // namespace

CopyIsa copy_streaming_isa() { return kIsa; }

const char* copy_isa_name(CopyIsa isa) {
  switch (isa) {
    case CopyIsa::kMemcpy:
      return "memcpy";
    case CopyIsa::kSse2:
      return "sse2";
    case CopyIsa::kAvx512:
      return "avx512";
  }
  return "unknown";
}

void copy_streaming_as(CopyIsa isa, std::byte* dst, const std::byte* src, size_t n) {
  if (isa > kIsa) isa = kIsa;
  [[maybe_unused]] const auto at = reinterpret_cast<uintptr_t>(dst);
  if (n >= 4096) {
#if TIERKV_HAVE_AVX512_COPY
    if (isa == CopyIsa::kAvx512 && at % 64 == 0) return copy_streaming_avx512(dst, src, n);
#endif
#if defined(__x86_64__)
    if (isa >= CopyIsa::kSse2 && at % 16 == 0) return copy_streaming_sse2(dst, src, n);
#endif
  }
  std::memcpy(dst, src, n);
}

}  // namespace detail

void copy_streaming(std::byte* dst, const std::byte* src, size_t n) {
  detail::copy_streaming_as(detail::kIsa, dst, src, n);
}

}  // namespace tierkv
