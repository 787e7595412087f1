// Loads from NVMe over a real CacheEngine (temporary files, io_uring, O_DIRECT), with the
// checksums checked on the server thread (verify_threads = 0) and on verify workers (2): the bytes
// served are the bytes written; a damaged chunk is a miss, counted and dropped, never served; a
// load cancelled by its client's death while its chunks' checks are outstanding leaves no lease
// behind and no callback run, and the chunks end where their checks say; an engine destroyed
// with checks outstanding shuts down cleanly.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "support/engine_fixture.h"
#include "tierkv/scheduler/cache_engine.h"

namespace tierkv::scheduler {
namespace {

class NvmeVerifyTest : public testing::EngineFixture<::testing::TestWithParam<uint32_t>> {
 protected:
  void SetUp() override {
    CacheOptions o = nvme_options();
    o.nvme.store.queue_depth = 8;
    o.nvme.verify_threads = GetParam();
    start_engine(o);
  }

  // Caches `n` chunks with known bytes, written down to NVMe, then evicts them from host RAM.
  std::vector<ChunkKey> cache_on_nvme_only(size_t n) {
    std::vector<ChunkKey> keys;
    for (size_t i = 0; i < n; ++i) keys.push_back(ChunkKey{500 + i, 9});
    put_and_write_down(keys);
    evict(keys);
    return keys;
  }

  // Flips every byte of the NVMe data file: every chunk on it fails its checksum.
  void damage_every_chunk() {
    const std::string path = dir_->file("tierkv-data.bin");
    const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
    ASSERT_GE(fd, 0) << path;
    std::vector<char> buf(kMiB);
    for (off_t at = 0;; at += static_cast<off_t>(buf.size())) {
      const ssize_t n = ::pread(fd, buf.data(), buf.size(), at);
      ASSERT_GE(n, 0);
      if (n == 0) break;
      for (ssize_t i = 0; i < n; ++i) buf[i] = static_cast<char>(buf[i] ^ 0x5A);
      ASSERT_EQ(::pwrite(fd, buf.data(), static_cast<size_t>(n), at), n);
    }
    ASSERT_EQ(::fsync(fd), 0);  // the tier reads with O_DIRECT
    ::close(fd);
  }

  uint64_t host_used() const { return stats().tiers[1].used_bytes; }

  struct Loaded {
    bool called = false;
    Status status;
    proto::LoadReply reply;
  };
  // Starts a load of `keys` for `session`; `out` fills in when its callback runs.
  void start_load(SessionId session, const std::vector<ChunkKey>& keys, Loaded& out) {
    engine_->load(session, proto::KeysRequest{ns_.id, keys},
                  [&out](Status st, const proto::LoadReply& r) {
                    out.called = true;
                    out.status = st;
                    out.reply = r;
                  });
  }
};

TEST_P(NvmeVerifyTest, LoadedChunksAreTheBytesWrittenAndEachIsChecked) {
  const auto keys = cache_on_nvme_only(12);  // more than the queue depth of 8
  const SessionId reader = engine_->open_session();
  Loaded got;
  start_load(reader, keys, got);
  ASSERT_TRUE(pump_until([&] { return got.called; }));
  ASSERT_TRUE(got.status.ok()) << got.status.to_string();
  ASSERT_EQ(got.reply.slots.size(), keys.size());
  for (uint32_t i = 0; i < keys.size(); ++i) {
    EXPECT_TRUE(bytes_match(i, got.reply.slots[i])) << "chunk " << i;
  }
  const proto::StatsReply s = stats();
  EXPECT_EQ(s.nvme.checksum_failures, 0u);
  EXPECT_EQ(s.nvme_io.reads_verified, keys.size());
  EXPECT_EQ(s.nvme_io.verify_threads, GetParam());
  // Workers have room for 4 queues' worth of checks: none falls back to the server thread.
  EXPECT_EQ(s.nvme_io.verified_inline, GetParam() == 0 ? keys.size() : 0u);
  EXPECT_EQ(s.nvme_io.verifies_in_flight, 0u);
  EXPECT_GT(s.nvme_io.busy_ns, 0u);
  EXPECT_GE(s.nvme_io.depth_ns, s.nvme_io.busy_ns) << "mean depth below 1 while busy";
  EXPECT_GT(s.nvme_io.submits, 0u);
  EXPECT_EQ(s.nvme.reads_in_flight, 0u);
  for (proto::Tier t : tiers_of(keys)) EXPECT_EQ(t, proto::Tier::kHost);
}

TEST_P(NvmeVerifyTest, ADamagedChunkIsAMissNeverServed) {
  const auto keys = cache_on_nvme_only(6);
  damage_every_chunk();
  const SessionId reader = engine_->open_session();
  Loaded got;
  start_load(reader, keys, got);
  ASSERT_TRUE(pump_until([&] { return got.called; }));
  ASSERT_TRUE(got.status.ok());
  EXPECT_TRUE(got.reply.slots.empty()) << "a damaged chunk was served";
  ASSERT_TRUE(pump_until([&] { return stats().nvme.reads_in_flight == 0; }));
  const proto::StatsReply s = stats();
  EXPECT_EQ(s.nvme.checksum_failures, keys.size());
  EXPECT_EQ(s.tiers[2].chunks, 0u) << "damaged chunks stay on NVMe";
  EXPECT_EQ(host_used(), 0u) << "host slots of damaged chunks were not freed";
  EXPECT_EQ(s.read_leases, 0u);
  EXPECT_TRUE(tiers_of(keys).empty());
}

// Only with workers: without them no check is ever outstanding.
using NvmeVerifyWorkersTest = NvmeVerifyTest;

TEST_P(NvmeVerifyWorkersTest, ALoadCancelledWhileItsChecksAreOutstandingLeavesNothingBehind) {
  for (const bool damaged : {false, true}) {
    SCOPED_TRACE(damaged ? "damaged" : "intact");
    const auto keys = cache_on_nvme_only(4);
    if (damaged) damage_every_chunk();
    const uint64_t failures0 = stats().nvme.checksum_failures;
    engine_->hold_verification_for_test(true);
    const SessionId reader = engine_->open_session();
    Loaded got;
    start_load(reader, keys, got);
    // Every read done, every check handed to a worker and held there.
    ASSERT_TRUE(pump_until([&] { return stats().nvme_io.verifies_in_flight == keys.size(); }));
    EXPECT_EQ(stats().nvme.reads_in_flight, keys.size()) << "a chunk was promoted unchecked";
    EXPECT_FALSE(got.called);
    // The client dies.
    const auto reclaimed = engine_->close_session(reader);
    EXPECT_EQ(reclaimed.loads_cancelled, 1u);
    engine_->hold_verification_for_test(false);
    ASSERT_TRUE(pump_until([&] {
      const proto::StatsReply s = stats();
      return s.nvme_io.verifies_in_flight == 0 && s.nvme.reads_in_flight == 0;
    }));
    EXPECT_FALSE(got.called) << "a cancelled load's callback ran";
    const proto::StatsReply s = stats();
    EXPECT_EQ(s.read_leases, 0u);
    if (damaged) {
      EXPECT_EQ(s.nvme.checksum_failures - failures0, keys.size());
      EXPECT_TRUE(tiers_of(keys).empty());
      EXPECT_EQ(host_used(), 0u);
    } else {
      // The reads were good: the chunks stay cached in host RAM, unleased and evictable.
      const auto tiers = tiers_of(keys);
      ASSERT_EQ(tiers.size(), keys.size());
      for (proto::Tier t : tiers) EXPECT_EQ(t, proto::Tier::kHost);
      uint64_t removed = 0;
      ASSERT_TRUE(
          engine_->evict(proto::DropRequest{ns_.id, proto::Scope::kKeys, keys}, &removed).ok());
      EXPECT_EQ(removed, keys.size());
      ASSERT_TRUE(
          engine_->remove(proto::DropRequest{ns_.id, proto::Scope::kNamespace, {}}, &removed).ok());
    }
    EXPECT_EQ(host_used(), 0u);
  }
}

TEST_P(NvmeVerifyTest, AnEngineDestroyedWithChecksOutstandingShutsDownCleanly) {
  const auto keys = cache_on_nvme_only(4);
  engine_->hold_verification_for_test(true);
  const SessionId reader = engine_->open_session();
  Loaded got;
  start_load(reader, keys, got);
  if (GetParam() > 0) {
    ASSERT_TRUE(pump_until([&] { return stats().nvme_io.verifies_in_flight == keys.size(); }));
  }
  engine_.reset();  // under ASan: no worker reads the unmapped host region, nothing leaks
  EXPECT_FALSE(got.called && GetParam() > 0);
}

std::string param_name(const ::testing::TestParamInfo<uint32_t>& p) {
  return p.param == 0 ? std::string("Inline") : "Workers" + std::to_string(p.param);
}
INSTANTIATE_TEST_SUITE_P(VerifyThreads, NvmeVerifyTest, ::testing::Values(0u, 2u), param_name);
INSTANTIATE_TEST_SUITE_P(VerifyThreads, NvmeVerifyWorkersTest, ::testing::Values(2u), param_name);

}  // namespace
}  // namespace tierkv::scheduler
