// The io_uring IoBackend: O_DIRECT files registered as fixed files, the host pool as fixed
// buffers, an eventfd for completions.
#include <liburing.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <vector>

#include "tierkv/storage/io_backend.h"

namespace tierkv::storage {

namespace {

// The kernel caps one fixed buffer at 1 GiB: a larger region is registered in pieces.
constexpr uint64_t kFixedBufferPiece = 1ull << 30;

class UringBackend final : public IoBackend {
 public:
  ~UringBackend() override {
    if (ring_ready_) io_uring_queue_exit(&ring_);
    if (event_fd_ >= 0) ::close(event_fd_);
  }

  Status init(const IoBackendOptions& options) {
    if (options.queue_depth == 0 || options.queue_depth > 4096) {
      return Status::InvalidArgument("nvme.queue_depth = " + std::to_string(options.queue_depth) +
                                     " is out of range [1, 4096]");
    }
    depth_ = options.queue_depth;
    async_min_bytes_ = options.async_min_bytes;
    timeouts_.reserve(depth_);  // pointers into it stay valid until submit()
    // Twice the depth of completion entries: a burst of completions never overflows.
    io_uring_params params{};
    params.flags = IORING_SETUP_CQSIZE;
    params.cq_entries = depth_ * 2;
    const int rc = io_uring_queue_init_params(depth_, &ring_, &params);
    if (rc < 0) return Status::FromErrno("io_uring_queue_init", -rc);
    ring_ready_ = true;
    event_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (event_fd_ < 0) return Status::FromErrno("eventfd", errno);
    const int erc = io_uring_register_eventfd(&ring_, event_fd_);
    if (erc < 0) return Status::FromErrno("io_uring_register_eventfd", -erc);
    return Status::Ok();
  }

  Status register_files(std::span<const int> fds) override {
    const int rc = io_uring_register_files(&ring_, fds.data(), static_cast<unsigned>(fds.size()));
    if (rc < 0) return Status::FromErrno("io_uring_register_files", -rc);
    files_ = static_cast<uint32_t>(fds.size());
    return Status::Ok();
  }

  Result<bool> register_memory(std::byte* base, uint64_t bytes) override {
    std::vector<iovec> pieces;
    for (uint64_t at = 0; at < bytes; at += kFixedBufferPiece) {
      pieces.push_back(iovec{base + at, static_cast<size_t>(std::min(kFixedBufferPiece, bytes - at))});
    }
    const int rc = io_uring_register_buffers(&ring_, pieces.data(),
                                             static_cast<unsigned>(pieces.size()));
    if (rc < 0) return false;  // e.g. ENOMEM under RLIMIT_MEMLOCK: plain reads still go direct
    fixed_base_ = base;
    fixed_bytes_ = bytes;
    return true;
  }

  bool queue(const IoRequest& r) override {
    if (in_flight_ >= depth_) return false;
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    if (sqe == nullptr) return false;
    account_depth();
    const bool fixed = fixed_base_ != nullptr && r.buf >= fixed_base_ &&
                       r.buf + r.length <= fixed_base_ + fixed_bytes_;
    const int piece = fixed ? static_cast<int>((r.buf - fixed_base_) / kFixedBufferPiece) : -1;
    // A request may not straddle two fixed-buffer pieces; slots never do (slabs divide 1 GiB).
    const bool in_one_piece =
        fixed && (r.buf + r.length - 1 - fixed_base_) / kFixedBufferPiece ==
                     static_cast<uint64_t>(piece);
    switch (r.op) {
      case IoOp::kRead:
        if (in_one_piece) io_uring_prep_read_fixed(sqe, static_cast<int>(r.file), r.buf, r.length, r.offset, piece);
        else io_uring_prep_read(sqe, static_cast<int>(r.file), r.buf, r.length, r.offset);
        sqe->flags |= IOSQE_FIXED_FILE;
        break;
      case IoOp::kWrite:
        if (in_one_piece) io_uring_prep_write_fixed(sqe, static_cast<int>(r.file), r.buf, r.length, r.offset, piece);
        else io_uring_prep_write(sqe, static_cast<int>(r.file), r.buf, r.length, r.offset);
        sqe->flags |= IOSQE_FIXED_FILE;
        break;
      case IoOp::kDelay: {
        // (Timeouts never block the submitter: no IOSQE_ASYNC.)
        // The timespec must outlive the submission: keep one per in-flight slot of the ring.
        timeouts_.push_back(__kernel_timespec{static_cast<int64_t>(r.delay_ns / 1000000000),
                                              static_cast<long long>(r.delay_ns % 1000000000)});
        io_uring_prep_timeout(sqe, &timeouts_.back(), 0, 0);
        break;
      }
    }
    if (r.op != IoOp::kDelay && async_min_bytes_ > 0 && r.length >= async_min_bytes_) {
      sqe->flags |= IOSQE_ASYNC;
    }
    io_uring_sqe_set_data64(sqe, r.user_data);
    ++in_flight_;
    ++unsubmitted_;
    return true;
  }

  Status submit() override {
    if (unsubmitted_ == 0) return Status::Ok();
    const uint64_t t0 = now_ns();
    const int rc = io_uring_submit(&ring_);
    counters_.submit_ns += now_ns() - t0;
    ++counters_.submits;
    if (rc < 0) return Status::FromErrno("io_uring_submit", -rc);
    unsubmitted_ = 0;
    timeouts_.clear();  // the kernel copied the timespecs at submission
    return Status::Ok();
  }

  size_t reap(std::span<IoCompletion> out) override {
    size_t n = 0;
    io_uring_cqe* cqe = nullptr;
    while (n < out.size() && io_uring_peek_cqe(&ring_, &cqe) == 0) {
      if (n == 0) account_depth();
      out[n].user_data = io_uring_cqe_get_data64(cqe);
      // A timeout that fired reports -ETIME: that is a delay completing as planned.
      out[n].result = cqe->res == -ETIME ? 0 : cqe->res;
      io_uring_cqe_seen(&ring_, cqe);
      --in_flight_;
      ++n;
    }
    return n;
  }

  Status wait(std::chrono::milliseconds timeout) override {
    if (in_flight_ == 0) return Status::Ok();
    TIERKV_RETURN_IF_ERROR(submit());
    __kernel_timespec ts{timeout.count() / 1000, (timeout.count() % 1000) * 1000000};
    io_uring_cqe* cqe = nullptr;
    const int rc = io_uring_wait_cqe_timeout(&ring_, &cqe, &ts);
    if (rc < 0 && rc != -ETIME && rc != -EINTR) return Status::FromErrno("io_uring_wait_cqe", -rc);
    return Status::Ok();
  }

  int completion_fd() const override { return event_fd_; }
  uint32_t in_flight() const override { return in_flight_; }
  uint32_t queue_depth() const override { return depth_; }
  IoCounters counters() const override {
    IoCounters c = counters_;
    if (in_flight_ > 0) {  // up to now
      const uint64_t dt = now_ns() - depth_since_ns_;
      c.busy_ns += dt;
      c.depth_ns += dt * in_flight_;
    }
    return c;
  }

 private:
  static uint64_t now_ns() {
    return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                     std::chrono::steady_clock::now().time_since_epoch())
                                     .count());
  }
  // Adds the time since the depth last changed; called before in_flight_ changes. A reap of
  // several completions counts them as leaving at its start (the thread was not there earlier).
  void account_depth() {
    const uint64_t now = now_ns();
    if (in_flight_ > 0) {
      counters_.busy_ns += now - depth_since_ns_;
      counters_.depth_ns += (now - depth_since_ns_) * in_flight_;
    }
    depth_since_ns_ = now;
  }

  io_uring ring_{};
  bool ring_ready_ = false;
  int event_fd_ = -1;
  uint32_t depth_ = 0;
  uint64_t async_min_bytes_ = 0;
  uint32_t files_ = 0;
  uint32_t in_flight_ = 0;
  uint32_t unsubmitted_ = 0;
  std::byte* fixed_base_ = nullptr;
  uint64_t fixed_bytes_ = 0;
  std::vector<__kernel_timespec> timeouts_;
  IoCounters counters_;
  uint64_t depth_since_ns_ = 0;
};

}  // namespace

Result<std::unique_ptr<IoBackend>> make_uring_backend(const IoBackendOptions& options) {
  auto backend = std::make_unique<UringBackend>();
  TIERKV_RETURN_IF_ERROR(backend->init(options));
  return std::unique_ptr<IoBackend>(std::move(backend));
}

}  // namespace tierkv::storage
