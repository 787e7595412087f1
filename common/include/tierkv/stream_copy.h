// copy_streaming: a large copy into memory other parties will read later (a shared-memory slot).
//
// Uses non-temporal stores on x86-64 when the copy is at least 4 KiB and `dst` is aligned for
// them (64 bytes for AVX-512, chosen at run time where the CPU has it; else 16 bytes for SSE2):
// the destination's old lines are not read in (no read-for-ownership) and the copy does not evict
// the caller's working set, which makes it as fast as the machine's best large copy even for
// chunks far smaller than the last-level cache. Elsewhere, memcpy. Ends with a store fence, so
// the bytes are visible to other cores before the caller publishes them.
// Thread safety: pure functions.
#pragma once

#include <cstddef>

namespace tierkv {

void copy_streaming(std::byte* dst, const std::byte* src, size_t n);

namespace detail {
// The store widths copy_streaming can use, narrowest first.
enum class CopyIsa { kMemcpy = 0, kSse2 = 1, kAvx512 = 2 };
// The widest this build and CPU can run: the one copy_streaming uses.
CopyIsa copy_streaming_isa();
const char* copy_isa_name(CopyIsa isa);
// copy_streaming limited to `isa` (capped at copy_streaming_isa()), for tests and benchmarks.
void copy_streaming_as(CopyIsa isa, std::byte* dst, const std::byte* src, size_t n);
}  // namespace detail

}  // namespace tierkv
