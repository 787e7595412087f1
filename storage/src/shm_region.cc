#include "tierkv/storage/shm_region.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <utility>

namespace tierkv::storage {

Result<ShmRegion> ShmRegion::create(const std::string& name, uint64_t bytes, bool prefault) {
  if (bytes == 0) return Status::InvalidArgument("shared-memory region size must be > 0");
  ShmRegion r;
  r.fd_ = ::memfd_create(name.c_str(), MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (r.fd_ < 0) return Status::FromErrno("memfd_create", errno);
  if (::ftruncate(r.fd_, static_cast<off_t>(bytes)) != 0) {
    return Status::FromErrno("ftruncate memfd to " + std::to_string(bytes) + " bytes", errno);
  }
  // Clients must never be able to shrink the region under the daemon (SIGBUS) or grow it.
  if (::fcntl(r.fd_, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
    return Status::FromErrno("seal memfd", errno);
  }
  if (prefault && ::fallocate(r.fd_, 0, 0, static_cast<off_t>(bytes)) != 0) {
    return Status::FromErrno("reserve " + std::to_string(bytes) +
                                 " bytes of shared memory (host.capacity too large for this "
                                 "machine's RAM or /dev/shm limits?)",
                             errno);
  }
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                   MAP_SHARED | (prefault ? MAP_POPULATE : 0), r.fd_, 0);
  if (p == MAP_FAILED) return Status::FromErrno("mmap shared-memory region", errno);
  r.data_ = static_cast<std::byte*>(p);
  r.size_ = bytes;
  return r;
}

ShmRegion::ShmRegion(ShmRegion&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)),
      data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)) {}

ShmRegion& ShmRegion::operator=(ShmRegion&& other) noexcept {
  if (this != &other) {
    reset();
    fd_ = std::exchange(other.fd_, -1);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

ShmRegion::~ShmRegion() { reset(); }

void ShmRegion::reset() {
  if (data_ != nullptr) ::munmap(data_, size_);
  if (fd_ >= 0) ::close(fd_);
  data_ = nullptr;
  fd_ = -1;
  size_ = 0;
}

}  // namespace tierkv::storage
