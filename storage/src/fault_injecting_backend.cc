// The fault-injecting IoBackend decorator (tests, selected by config): EIO, short reads, ENOSPC
// and slow completions, deterministically by request count.
#include <unistd.h>

#include <cerrno>
#include <unordered_map>
#include <vector>

#include "tierkv/storage/io_backend.h"

namespace tierkv::storage {

namespace {

// user_data values the decorator gives the delays it queues in the inner backend. Callers' own
// user_data never has the top bit set (the NVMe tier's tokens are small integers).
constexpr uint64_t kDelayTag = 1ull << 63;

class FaultInjectingBackend final : public IoBackend {
 public:
  FaultInjectingBackend(std::unique_ptr<IoBackend> inner, const FaultPlan& plan)
      : inner_(std::move(inner)), plan_(plan) {}

  Status register_files(std::span<const int> fds) override { return inner_->register_files(fds); }
  Result<bool> register_memory(std::byte* base, uint64_t bytes) override {
    return inner_->register_memory(base, bytes);
  }

  bool queue(const IoRequest& r) override {
    if (in_flight() >= inner_->queue_depth()) return false;
    Fault fault = Fault::kNone;
    if (r.op == IoOp::kRead) {
      ++reads_;
      if (every(plan_.read_eio_every, reads_)) fault = Fault::kEio;
      else if (every(plan_.short_read_every, reads_)) fault = Fault::kShort;
    } else if (r.op == IoOp::kWrite) {
      ++writes_;
      if (every(plan_.write_eio_every, writes_)) fault = Fault::kEio;
      else if (plan_.enospc_after_bytes != 0 && written_ + r.length > plan_.enospc_after_bytes) {
        fault = Fault::kNoSpace;
      } else {
        written_ += r.length;
      }
    }
    ++requests_;
    if (every(plan_.slow_every, requests_) && plan_.slow_ms != 0) {
      const uint64_t tag = kDelayTag | next_tag_++;
      IoRequest delay;
      delay.op = IoOp::kDelay;
      delay.delay_ns = uint64_t{plan_.slow_ms} * 1000000;
      delay.user_data = tag;
      if (!inner_->queue(delay)) return false;
      delayed_.emplace(tag, Held{r, fault});
      return true;
    }
    return pass(r, fault);
  }

  Status submit() override { return inner_->submit(); }

  size_t reap(std::span<IoCompletion> out) override {
    size_t n = 0;
    // Failures decided at queue time complete first; then the inner backend's completions.
    while (n < out.size() && !failed_.empty()) {
      out[n++] = failed_.back();
      failed_.pop_back();
    }
    if (n == out.size()) return n;
    const size_t got = inner_->reap(out.subspan(n));
    size_t kept = n;
    for (size_t i = n; i < n + got; ++i) {
      IoCompletion c = out[i];
      if (c.user_data & kDelayTag) {
        // A delay ran out: now send the request it held back.
        auto it = delayed_.find(c.user_data);
        if (it != delayed_.end()) {
          const Held held = it->second;
          delayed_.erase(it);
          if (!pass(held.request, held.fault)) failed_.push_back({held.request.user_data, -EAGAIN});
          (void)inner_->submit();
        }
        continue;
      }
      auto s = shortened_.find(c.user_data);
      if (s != shortened_.end()) {
        if (c.result > 0) c.result /= 2;
        shortened_.erase(s);
      }
      out[kept++] = c;
    }
    return kept;
  }

  Status wait(std::chrono::milliseconds timeout) override {
    if (!failed_.empty()) return Status::Ok();
    return inner_->wait(timeout);
  }
  int completion_fd() const override { return inner_->completion_fd(); }
  uint32_t in_flight() const override {
    return inner_->in_flight() + static_cast<uint32_t>(failed_.size());
  }
  uint32_t queue_depth() const override { return inner_->queue_depth(); }
  IoCounters counters() const override { return inner_->counters(); }

 private:
  enum class Fault : uint8_t { kNone, kEio, kShort, kNoSpace };
  struct Held {
    IoRequest request;
    Fault fault;
  };
  static bool every(uint32_t n, uint64_t count) { return n != 0 && count % n == 0; }

  bool pass(const IoRequest& r, Fault fault) {
    if (fault == Fault::kEio || fault == Fault::kNoSpace) {
      failed_.push_back({r.user_data, fault == Fault::kEio ? -EIO : -ENOSPC});
      // Wake the owner's event loop as a real completion would.
      const uint64_t one = 1;
      (void)!::write(inner_->completion_fd(), &one, sizeof(one));
      return true;
    }
    if (!inner_->queue(r)) return false;
    if (fault == Fault::kShort) shortened_.emplace(r.user_data, true);
    return true;
  }

  std::unique_ptr<IoBackend> inner_;
  FaultPlan plan_;
  uint64_t reads_ = 0, writes_ = 0, requests_ = 0, written_ = 0;
  uint64_t next_tag_ = 1;
  std::unordered_map<uint64_t, Held> delayed_;
  std::unordered_map<uint64_t, bool> shortened_;
  std::vector<IoCompletion> failed_;
};

}  // namespace

std::unique_ptr<IoBackend> make_fault_injecting_backend(std::unique_ptr<IoBackend> inner,
                                                        const FaultPlan& plan) {
  return std::make_unique<FaultInjectingBackend>(std::move(inner), plan);
}

}  // namespace tierkv::storage
