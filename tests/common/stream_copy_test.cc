// copy_streaming and each store width it can use: exact bytes for any size and alignment, nothing
// written outside the destination.
#include "tierkv/stream_copy.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <vector>

namespace tierkv {
namespace {

using detail::CopyIsa;

std::vector<CopyIsa> runnable_isas() {
  std::vector<CopyIsa> out;
  for (CopyIsa isa : {CopyIsa::kMemcpy, CopyIsa::kSse2, CopyIsa::kAvx512}) {
    if (isa <= detail::copy_streaming_isa()) out.push_back(isa);
  }
  return out;
}

// Copies n bytes at src_off into a buffer at dst_off with `isa` and checks every byte of the
// buffer: the copy where it belongs, the guard pattern everywhere else.
void check_copy(CopyIsa isa, size_t n, size_t src_off, size_t dst_off) {
  constexpr size_t kGuard = 320;
  std::vector<std::byte> src(n + src_off + 64);
  for (size_t i = 0; i < src.size(); ++i) src[i] = static_cast<std::byte>((i * 131 + 7) & 0xFF);
  // 64-byte aligned base, so that dst_off alone decides the alignment.
  std::vector<std::byte> storage(n + dst_off + 2 * kGuard + 64, std::byte{0xEE});
  const auto base_addr = reinterpret_cast<uintptr_t>(storage.data());
  std::byte* base = storage.data() + ((64 - base_addr % 64) % 64);
  std::byte* dst = base + kGuard + dst_off;
  detail::copy_streaming_as(isa, dst, src.data() + src_off, n);
  if (n > 0 && std::memcmp(dst, src.data() + src_off, n) != 0) {
    size_t i = 0;
    while (dst[i] == src[src_off + i]) ++i;
    FAIL() << detail::copy_isa_name(isa) << ": byte " << i << " of " << n << " differs (src+"
           << src_off << ", dst+" << dst_off << ")";
  }
  const auto untouched = [](const std::byte* p, const std::byte* end) {
    for (; p < end; ++p) {
      if (*p != std::byte{0xEE}) return false;
    }
    return true;
  };
  ASSERT_TRUE(untouched(storage.data(), dst)) << detail::copy_isa_name(isa) << ": written before";
  ASSERT_TRUE(untouched(dst + n, storage.data() + storage.size()))
      << detail::copy_isa_name(isa) << ": written past the end";
}

TEST(StreamCopyTest, EveryStoreWidthCopiesExactlyAnySizeAndAlignment) {
  for (CopyIsa isa : runnable_isas()) {
    for (size_t n :
         {size_t{0}, size_t{1}, size_t{63}, size_t{4095}, size_t{4096}, size_t{4097},
          size_t{4096 + 255}, size_t{65536}, size_t{65536 + 64 + 17}, size_t{(1 << 20) + 200}}) {
      for (size_t src_off : {size_t{0}, size_t{3}, size_t{64}}) {
        // 64-aligned (the widest stores), 16-aligned, unaligned (memcpy).
        for (size_t dst_off : {size_t{0}, size_t{16}, size_t{5}}) {
          check_copy(isa, n, src_off, dst_off);
          if (::testing::Test::HasFatalFailure()) return;
        }
      }
    }
  }
}

TEST(StreamCopyTest, CopyStreamingUsesTheWidestWidthAndMatchesIt) {
  const CopyIsa widest = detail::copy_streaming_isa();
  EXPECT_STRNE(detail::copy_isa_name(widest), "unknown");
#if defined(__x86_64__)
  EXPECT_GE(widest, CopyIsa::kSse2);  // SSE2 is part of x86-64
#endif
  std::vector<std::byte> src(1 << 16), a(1 << 16), b(1 << 16);
  for (size_t i = 0; i < src.size(); ++i) src[i] = static_cast<std::byte>(i * 13);
  copy_streaming(a.data(), src.data(), src.size());
  detail::copy_streaming_as(widest, b.data(), src.data(), src.size());
  EXPECT_EQ(a, src);
  EXPECT_EQ(b, src);
}

}  // namespace
}  // namespace tierkv
