// copy_streaming: a large copy into memory other parties will read later (a shared-memory slot).
//
// Uses non-temporal stores on x86-64 when `dst` is 16-byte aligned and the copy is at least
// 4 KiB: the destination's old lines are not read in (no read-for-ownership) and the copy does
// not evict the caller's working set, which makes it as fast as the machine's best large copy
// even for chunks far smaller than the last-level cache. Elsewhere, memcpy. Ends with a store
// fence, so the bytes are visible to other cores before the caller publishes them.
// Thread safety: a pure function.
#pragma once

#include <cstddef>

namespace tierkv {

void copy_streaming(std::byte* dst, const std::byte* src, size_t n);

}  // namespace tierkv
