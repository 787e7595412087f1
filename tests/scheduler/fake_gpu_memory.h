// FakeGpuMemory: a storage::GpuMemory in host memory, for testing the GPU tier's bookkeeping on
// machines without a GPU. Like a DMA, a copy reads its source when it completes (at reap()), not
// when it is enqueued, so a source rewritten or freed while the copy is in flight shows up as
// wrong bytes. Tests hold completions back (hold()) and make copies fail (fail_next()).
#pragma once

#include <sys/eventfd.h>
#include <unistd.h>

#include <cstring>
#include <deque>
#include <vector>

#include "tierkv/storage/gpu_memory.h"

namespace tierkv::testing {

class FakeGpuMemory final : public storage::GpuMemory {
 public:
  FakeGpuMemory(uint64_t bytes, uint32_t max_copies)
      : mem_(bytes), max_copies_(max_copies), fd_(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {}
  ~FakeGpuMemory() override { ::close(fd_); }

  [[nodiscard]] uint64_t bytes() const override { return mem_.size(); }
  [[nodiscard]] int device() const override { return 3; }
  [[nodiscard]] std::string description() const override { return "fake GPU (device 3)"; }
  [[nodiscard]] std::array<uint8_t, 16> device_uuid() const override {
    return {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
  }
  [[nodiscard]] std::array<uint8_t, 64> ipc_handle() const override {
    std::array<uint8_t, 64> h{};
    h.fill(0xAB);
    return h;
  }
  [[nodiscard]] int completion_fd() const override { return fd_; }
  [[nodiscard]] uint32_t max_copies() const override { return max_copies_; }
  [[nodiscard]] uint32_t copies_in_flight() const override {
    return static_cast<uint32_t>(copies_.size());
  }

  Status copy_in(uint64_t offset, const std::byte* src, uint64_t bytes, uint64_t token) override {
    if (copies_.size() >= max_copies_) return Status::ResourceExhausted("copies in flight");
    if (offset > mem_.size() || bytes > mem_.size() - offset) {
      return Status::InvalidArgument("copy outside the fake pool");
    }
    copies_.push_back({offset, src, bytes, token, fail_next_});
    fail_next_ = false;
    ++copies_started_;
    const uint64_t one = 1;
    (void)!::write(fd_, &one, sizeof(one));
    return Status::Ok();
  }

  size_t reap(std::span<storage::GpuCopyDone> out) override {
    if (held_) return 0;
    size_t n = 0;
    for (; n < out.size() && !copies_.empty(); ++n) {
      const Copy c = copies_.front();
      copies_.pop_front();
      if (!c.fail) std::memcpy(mem_.data() + c.offset, c.src, c.bytes);
      out[n] = {c.token, !c.fail};
    }
    return n;
  }

  // Test controls.
  void hold(bool held) { held_ = held; }
  void fail_next() { fail_next_ = true; }
  [[nodiscard]] uint64_t copies_started() const { return copies_started_; }
  [[nodiscard]] std::span<const std::byte> at(uint64_t offset, uint64_t bytes) const {
    return {mem_.data() + offset, bytes};
  }

 private:
  struct Copy {
    uint64_t offset;
    const std::byte* src;
    uint64_t bytes;
    uint64_t token;
    bool fail;
  };
  std::vector<std::byte> mem_;
  uint32_t max_copies_;
  int fd_;
  std::deque<Copy> copies_;
  bool held_ = false;
  bool fail_next_ = false;
  uint64_t copies_started_ = 0;
};

}  // namespace tierkv::testing
