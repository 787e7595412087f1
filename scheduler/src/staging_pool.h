// StagingPool: the NVMe tier's staging memory for encoded chunks — where a chunk is encoded into
// before it is written down, and where an encoded chunk is read into before it is decoded into its
// host slot. (Raw chunks need none: they go by DMA between the host slot and the disk.)
//
// One anonymous mapping of `capacity` bytes, cut into 4 KiB pages; a buffer is a run of whole
// pages, found first-fit in a bitmap, so every buffer is 4 KiB aligned and a multiple of 4 KiB
// long and O_DIRECT I/O goes straight from and to it. The owner registers the mapping with the
// I/O backend (io_uring fixed buffers) once. Bounded: allocate() returns an invalid buffer when no
// run is free and the caller waits for one to be freed (backpressure), the pool never grows.
// Nothing is allocated after construction.
//
// Thread safety: none; one owner thread (the cache engine's) allocates and frees. Worker threads
// only read and write the bytes of buffers handed to them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "tierkv/status.h"

namespace tierkv::scheduler {

class StagingPool {
 public:
  static constexpr uint64_t kPageBytes = 4096;

  // A run of pages; pages == 0 is "no buffer".
  struct Buffer {
    uint32_t first = 0;
    uint32_t pages = 0;
    [[nodiscard]] bool valid() const { return pages != 0; }
    [[nodiscard]] uint64_t bytes() const { return uint64_t{pages} * kPageBytes; }
  };

  // `capacity` is rounded up to whole pages; at least one page.
  static Result<std::unique_ptr<StagingPool>> create(uint64_t capacity);
  ~StagingPool();
  StagingPool(const StagingPool&) = delete;
  StagingPool& operator=(const StagingPool&) = delete;

  // A buffer of at least `bytes` (rounded up to pages), or an invalid one when no free run is
  // that long now (or ever: bytes > capacity_bytes()).
  Buffer allocate(uint64_t bytes);
  // Returns a buffer allocate() gave; freeing an invalid buffer is a no-op.
  void free(Buffer buffer);

  [[nodiscard]] std::byte* data(Buffer buffer) const {
    return base_ + uint64_t{buffer.first} * kPageBytes;
  }
  [[nodiscard]] std::byte* base() const { return base_; }
  [[nodiscard]] uint64_t capacity_bytes() const { return uint64_t{pages_} * kPageBytes; }
  [[nodiscard]] uint64_t used_bytes() const { return uint64_t{used_pages_} * kPageBytes; }

 private:
  StagingPool(std::byte* base, uint32_t pages);
  [[nodiscard]] bool is_used(uint32_t page) const { return (used_[page / 64] >> (page % 64)) & 1; }
  void mark(uint32_t first, uint32_t pages, bool used);

  std::byte* base_;
  uint32_t pages_;
  uint32_t used_pages_ = 0;
  uint32_t hint_ = 0;           // where the next search starts (after the last allocation)
  std::vector<uint64_t> used_;  // one bit per page
};

}  // namespace tierkv::scheduler
