// ShmRegion: one memfd-backed shared-memory region, mapped into this process.
//
// The daemon creates it once for the host tier; its fd is passed to every client (SCM_RIGHTS),
// which maps the same pages, so chunk bytes are written and read in place by both sides.
// Owns the fd and the mapping; move-only. Thread safety: the object is immutable once created.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "tierkv/status.h"

namespace tierkv::storage {

class ShmRegion {
 public:
  // Creates a sealed-size memfd of `bytes`. With `prefault`, reserves every page (fallocate) and
  // populates the mapping, so that the tier's memory is committed up front — failing at start-up
  // rather than with SIGBUS under load — and the first write into a slot does not page-fault.
  static Result<ShmRegion> create(const std::string& name, uint64_t bytes, bool prefault);

  ShmRegion() = default;
  ShmRegion(ShmRegion&& other) noexcept;
  ShmRegion& operator=(ShmRegion&& other) noexcept;
  ShmRegion(const ShmRegion&) = delete;
  ShmRegion& operator=(const ShmRegion&) = delete;
  ~ShmRegion();

  int fd() const { return fd_; }
  std::byte* data() const { return data_; }
  uint64_t size() const { return size_; }

 private:
  void reset();

  int fd_ = -1;
  std::byte* data_ = nullptr;
  uint64_t size_ = 0;
};

}  // namespace tierkv::storage
