// ChecksumWorkers: every job's result is NvmeStore::checksum of its bytes, returned once with its
// token; the capacity bounds what is outstanding; results signal the eventfd given (or the pool's
// own); a pool destroyed with jobs outstanding neither hangs nor touches freed memory.
#include "tierkv/storage/checksum_workers.h"

#include <gtest/gtest.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <chrono>
#include <map>
#include <random>
#include <vector>

#include "tierkv/storage/nvme_store.h"

namespace tierkv::storage {
namespace {

using namespace std::chrono_literals;

// Reaps until `want` results came or 10 s passed, waiting on `fd` between tries.
std::vector<ChecksumDone> reap_all(ChecksumWorkers& w, size_t want, int fd) {
  std::vector<ChecksumDone> got, buf(8);
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (got.size() < want && std::chrono::steady_clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    (void)::poll(&p, 1, 10);
    if (p.revents & POLLIN) {
      uint64_t n = 0;
      (void)!::read(fd, &n, sizeof(n));
    }
    const size_t n = w.reap(buf);
    got.insert(got.end(), buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(n));
  }
  return got;
}

TEST(ChecksumWorkersTest, EveryResultIsTheChecksumOfItsJob) {
  auto w = ChecksumWorkers::start(3, 8);
  ASSERT_TRUE(w.ok()) << w.status().to_string();
  std::mt19937_64 rng(42);
  std::vector<std::vector<std::byte>> buffers(100);
  for (auto& b : buffers) {
    b.resize(1 + rng() % (300 << 10));
    for (auto& x : b) x = static_cast<std::byte>(rng());
  }
  std::map<uint64_t, uint64_t> got;  // token -> checksum
  size_t next = 0;
  while (got.size() < buffers.size()) {
    while (next < buffers.size() &&
           (*w)->submit({buffers[next].data(), buffers[next].size(), 1000 + next})) {
      ++next;
    }
    ASSERT_LE((*w)->outstanding(), 8u);
    const auto done = reap_all(**w, 1, (*w)->completion_fd());
    ASSERT_FALSE(done.empty()) << "no result within 10 s";
    for (const ChecksumDone& d : done) {
      EXPECT_TRUE(got.emplace(d.token, d.checksum).second) << "token " << d.token << " twice";
    }
  }
  EXPECT_EQ((*w)->outstanding(), 0u);
  for (size_t i = 0; i < buffers.size(); ++i) {
    EXPECT_EQ(got.at(1000 + i), NvmeStore::checksum(buffers[i])) << "job " << i;
  }
  uint64_t bytes = 0;
  for (const auto& b : buffers) bytes += b.size();
  EXPECT_EQ((*w)->bytes_hashed(), bytes);
}

TEST(ChecksumWorkersTest, CapacityBoundsWhatIsOutstanding) {
  auto w = ChecksumWorkers::start(2, 4);
  ASSERT_TRUE(w.ok());
  std::vector<std::byte> data(4096, std::byte{7});
  (*w)->hold_for_test(true);
  for (uint64_t i = 0; i < 4; ++i) EXPECT_TRUE((*w)->submit({data.data(), data.size(), i}));
  EXPECT_FALSE((*w)->submit({data.data(), data.size(), 99})) << "a fifth job past capacity 4";
  EXPECT_EQ((*w)->outstanding(), 4u);
  std::vector<ChecksumDone> none(4);
  EXPECT_EQ((*w)->reap(none), 0u) << "held workers finished a job";
  (*w)->hold_for_test(false);
  const auto done = reap_all(**w, 4, (*w)->completion_fd());
  ASSERT_EQ(done.size(), 4u);
  for (const ChecksumDone& d : done) EXPECT_EQ(d.checksum, NvmeStore::checksum(data));
  EXPECT_TRUE((*w)->submit({data.data(), data.size(), 5})) << "room again once reaped";
}

TEST(ChecksumWorkersTest, SignalsTheEventfdItIsGiven) {
  const int fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  ASSERT_GE(fd, 0);
  {
    auto w = ChecksumWorkers::start(1, 2, fd);
    ASSERT_TRUE(w.ok());
    EXPECT_EQ((*w)->completion_fd(), fd);
    std::vector<std::byte> data(64 << 10, std::byte{3});
    ASSERT_TRUE((*w)->submit({data.data(), data.size(), 1}));
    pollfd p{fd, POLLIN, 0};
    ASSERT_EQ(::poll(&p, 1, 10000), 1) << "the eventfd never became readable";
    const auto done = reap_all(**w, 1, fd);
    ASSERT_EQ(done.size(), 1u);
    EXPECT_EQ(done[0].token, 1u);
  }
  // Not the pool's to close.
  uint64_t one = 1;
  EXPECT_EQ(::write(fd, &one, sizeof(one)), static_cast<ssize_t>(sizeof(one)));
  ::close(fd);
}

TEST(ChecksumWorkersTest, DestroyedWithJobsOutstandingItLeavesTheirMemoryAlone) {
  auto data = std::make_unique<std::vector<std::byte>>(1 << 20, std::byte{1});
  {
    auto w = ChecksumWorkers::start(2, 16);
    ASSERT_TRUE(w.ok());
    (*w)->hold_for_test(true);
    for (uint64_t i = 0; i < 16; ++i) ASSERT_TRUE((*w)->submit({data->data(), data->size(), i}));
  }              // joins: the jobs not started are dropped
  data.reset();  // under ASan, a worker still reading it would be reported
}

TEST(ChecksumWorkersTest, BadSizesAreRefused) {
  EXPECT_FALSE(ChecksumWorkers::start(0, 4).ok());
  EXPECT_FALSE(ChecksumWorkers::start(65, 4).ok());
  EXPECT_FALSE(ChecksumWorkers::start(1, 0).ok());
}

}  // namespace
}  // namespace tierkv::storage
