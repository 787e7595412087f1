#include "tierkv/storage/checksum_workers.h"

#include <pthread.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <string>
#include <system_error>

#include "tierkv/storage/nvme_store.h"

namespace tierkv::storage {

Result<std::unique_ptr<ChecksumWorkers>> ChecksumWorkers::start(uint32_t threads, uint32_t capacity,
                                                                int notify_fd) {
  if (threads == 0 || threads > 64) {
    return Status::InvalidArgument("checksum workers: threads = " + std::to_string(threads) +
                                   " is out of range [1, 64]");
  }
  if (capacity == 0) return Status::InvalidArgument("checksum workers: capacity must be > 0");
  const bool own = notify_fd < 0;
  if (own) {
    notify_fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (notify_fd < 0) return Status::FromErrno("eventfd", errno);
  }
  std::unique_ptr<ChecksumWorkers> w(new ChecksumWorkers(capacity, notify_fd, own));
  for (uint32_t i = 0; i < threads; ++i) {
    try {
      w->threads_.emplace_back([p = w.get()] { p->run(); });
    } catch (const std::system_error& e) {  // the destructor joins those already started
      return Status::Internal("checksum workers: cannot start a thread: " + std::string(e.what()));
    }
  }
  return w;
}

ChecksumWorkers::ChecksumWorkers(uint32_t capacity, int notify_fd, bool own_fd)
    : capacity_(capacity),
      notify_fd_(notify_fd),
      own_fd_(own_fd),
      jobs_(capacity),
      done_(capacity) {}

ChecksumWorkers::~ChecksumWorkers() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    job_count_ = 0;  // not started: dropped
  }
  wake_.notify_all();
  for (std::thread& t : threads_) t.join();
  if (own_fd_) ::close(notify_fd_);
}

bool ChecksumWorkers::submit(const ChecksumJob& job) {
  if (outstanding_ >= capacity_) return false;
  {
    std::lock_guard lock(mu_);
    jobs_[(job_head_ + job_count_) % capacity_] = job;
    ++job_count_;
  }
  ++outstanding_;
  wake_.notify_one();
  return true;
}

size_t ChecksumWorkers::reap(std::span<ChecksumDone> out) {
  std::lock_guard lock(mu_);
  size_t n = 0;
  for (; n < out.size() && done_count_ > 0; ++n) {
    out[n] = done_[done_head_];
    done_head_ = (done_head_ + 1) % capacity_;
    --done_count_;
  }
  outstanding_ -= static_cast<uint32_t>(n);
  return n;
}

uint64_t ChecksumWorkers::busy_ns() const {
  std::lock_guard lock(mu_);
  return busy_ns_;
}

uint64_t ChecksumWorkers::bytes_hashed() const {
  std::lock_guard lock(mu_);
  return bytes_;
}

void ChecksumWorkers::hold_for_test(bool hold) {
  {
    std::lock_guard lock(mu_);
    held_ = hold;
  }
  wake_.notify_all();
}

void ChecksumWorkers::run() {
  (void)pthread_setname_np(pthread_self(), "tierkv-verify");  // for top and perf
  std::unique_lock lock(mu_);
  for (;;) {
    wake_.wait(lock, [this] { return stopping_ || (job_count_ > 0 && !held_); });
    if (stopping_) return;
    const ChecksumJob job = jobs_[job_head_];
    job_head_ = (job_head_ + 1) % capacity_;
    --job_count_;
    lock.unlock();
    const auto t0 = std::chrono::steady_clock::now();
    const uint64_t sum = NvmeStore::checksum({job.data, job.bytes});
    const auto ns =
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0)
            .count();
    lock.lock();
    // Never overflows: outstanding jobs (queued + hashing + done) are at most capacity_.
    done_[(done_head_ + done_count_) % capacity_] = ChecksumDone{job.token, sum};
    ++done_count_;
    busy_ns_ += static_cast<uint64_t>(ns);
    bytes_ += job.bytes;
    const uint64_t one = 1;
    (void)!::write(notify_fd_, &one, sizeof(one));
  }
}

}  // namespace tierkv::storage
