#include "staging_pool.h"

#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <string>

namespace tierkv::scheduler {

Result<std::unique_ptr<StagingPool>> StagingPool::create(uint64_t capacity) {
  const uint64_t pages = std::max<uint64_t>(1, (capacity + kPageBytes - 1) / kPageBytes);
  if (pages > UINT32_MAX / 2) {
    return Status::InvalidArgument("nvme.staging_size = " + std::to_string(capacity) +
                                   " bytes is too large");
  }
  void* p = ::mmap(nullptr, pages * kPageBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                   -1, 0);
  if (p == MAP_FAILED) {
    return Status::FromErrno("map " + std::to_string(pages * kPageBytes) +
                                 " bytes of NVMe staging memory (nvme.staging_size)",
                             errno);
  }
  return std::unique_ptr<StagingPool>(
      new StagingPool(static_cast<std::byte*>(p), static_cast<uint32_t>(pages)));
}

StagingPool::StagingPool(std::byte* base, uint32_t pages)
    : base_(base), pages_(pages), used_((pages + 63) / 64, 0) {}

StagingPool::~StagingPool() { ::munmap(base_, capacity_bytes()); }

void StagingPool::mark(uint32_t first, uint32_t pages, bool used) {
  for (uint32_t p = first; p < first + pages; ++p) {
    const uint64_t bit = uint64_t{1} << (p % 64);
    if (used)
      used_[p / 64] |= bit;
    else
      used_[p / 64] &= ~bit;
  }
}

StagingPool::Buffer StagingPool::allocate(uint64_t bytes) {
  const uint64_t want64 = std::max<uint64_t>(1, (bytes + kPageBytes - 1) / kPageBytes);
  if (want64 > pages_ - used_pages_) return {};
  const auto want = static_cast<uint32_t>(want64);
  // First fit, from the hint round to where it started: a run may not wrap past the end. Whole
  // words of used or free pages are stepped over at once.
  for (int pass = 0; pass < 2; ++pass) {
    const uint32_t begin = pass == 0 ? hint_ : 0;
    const uint32_t end = pass == 0 ? pages_ : std::min(pages_, hint_ + want - 1);
    uint32_t run_start = begin, run = 0;
    for (uint32_t p = begin; p < end;) {
      const uint64_t word = used_[p / 64];
      if (p % 64 == 0 && word == ~uint64_t{0}) {  // 64 used pages
        p += 64;
        run = 0;
        run_start = p;
        continue;
      }
      if (p % 64 == 0 && word == 0 && p + 64 <= end) {  // 64 free pages
        if (run == 0) run_start = p;
        run += 64;
        p += 64;
      } else if (is_used(p)) {
        run = 0;
        run_start = ++p;
        continue;
      } else {
        if (run == 0) run_start = p;
        ++run;
        ++p;
      }
      if (run >= want) {
        mark(run_start, want, true);
        used_pages_ += want;
        hint_ = run_start + want == pages_ ? 0 : run_start + want;
        return Buffer{run_start, want};
      }
    }
  }
  return {};
}

void StagingPool::free(Buffer buffer) {
  if (!buffer.valid()) return;
  mark(buffer.first, buffer.pages, false);
  used_pages_ -= buffer.pages;
}

}  // namespace tierkv::scheduler
