// Loads from NVMe over a real CacheEngine (temporary files, io_uring, O_DIRECT), with the
// checksums checked on the server thread (verify_threads = 0) and on verify workers (2): the bytes
// served are the bytes written; a damaged chunk is a miss, counted and dropped, never served; a
// load cancelled by its client's death while its chunks' checks are outstanding leaves no lease
// behind and no callback run, and the chunks end where their checks say; an engine destroyed
// with checks outstanding shuts down cleanly.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "support/process.h"
#include "tierkv/scheduler/cache_engine.h"

namespace tierkv::scheduler {
namespace {

using namespace std::chrono_literals;
constexpr uint64_t kMiB = 1ull << 20;

class NvmeVerifyTest : public ::testing::TestWithParam<uint32_t> {
 protected:
  void SetUp() override {
    dir_ = std::make_unique<testing::TempDir>();
    CacheOptions o;
    o.host_capacity_bytes = 16 * kMiB;
    o.slab_bytes = 4 * kMiB;
    o.prefault = false;
    o.default_chunk_tokens = 64;
    o.nvme.store.directories = {dir_->path()};
    o.nvme.store.capacity_bytes = 32 * kMiB;
    o.nvme.store.slab_bytes = 4 * kMiB;
    o.nvme.store.queue_depth = 8;
    o.nvme.write_through = true;
    o.nvme.verify_threads = GetParam();
    auto e = CacheEngine::create(o);
    ASSERT_TRUE(e.ok()) << e.status().to_string();
    engine_ = std::move(e).value();
    // 2 layers x 2 heads x 64 dim x bf16 x K,V = 1 KiB per token; 64 tokens = 64 KiB.
    auto ns = engine_->register_namespace(Layout{2, 2, 64, DType::kBFloat16, 64}, "t", "");
    ASSERT_TRUE(ns.ok());
    ns_ = *ns;
    writer_ = engine_->open_session();
  }

  static uint8_t pattern(size_t chunk, size_t byte) {
    return static_cast<uint8_t>(chunk * 131 + byte * 7 + 1);
  }

  // Caches `n` chunks with known bytes, written down to NVMe, then evicts them from host RAM.
  std::vector<ChunkKey> cache_on_nvme_only(size_t n) {
    std::vector<ChunkKey> keys;
    for (size_t i = 0; i < n; ++i) keys.push_back(ChunkKey{500 + i, 9});
    proto::PutBeginRequest req{ns_.id, kRootKey, ns_.chunk_bytes(), keys};
    proto::PutBeginReply rep;
    EXPECT_TRUE(engine_->put_begin(writer_, req, rep).ok());
    std::vector<uint32_t> slots;
    for (size_t i = 0; i < rep.slots.size(); ++i) {
      auto* p = reinterpret_cast<uint8_t*>(engine_->host_base() + rep.slots[i].offset);
      for (size_t b = 0; b < ns_.chunk_bytes(); ++b) p[b] = pattern(i, b);
      slots.push_back(rep.slots[i].slot);
    }
    uint64_t committed = 0;
    EXPECT_TRUE(engine_->put_commit(writer_, slots, &committed).ok());
    EXPECT_TRUE(pump_until([&] {
      const proto::NvmeStats s = stats().nvme;
      return s.dirty_chunks == 0 && s.writes_in_flight == 0;
    })) << "write-down did not finish";
    uint64_t removed = 0;
    EXPECT_TRUE(
        engine_->evict(proto::DropRequest{ns_.id, proto::Scope::kKeys, keys}, &removed).ok());
    EXPECT_EQ(removed, n);
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

  // Runs completions (waiting on the engine's completion fd) until `done`, or 10 s.
  bool pump_until(const std::function<bool()>& done) {
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (!done()) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      pollfd p{engine_->io_fd(), POLLIN, 0};
      (void)::poll(&p, 1, 10);
      if (p.revents & POLLIN) {
        uint64_t n = 0;
        (void)!::read(engine_->io_fd(), &n, sizeof(n));
      }
      engine_->poll_io();
    }
    return true;
  }

  proto::StatsReply stats() const {
    proto::StatsReply s;
    engine_->fill_stats(s);
    return s;
  }

  std::vector<proto::Tier> tiers_of(const std::vector<ChunkKey>& keys) {
    proto::LookupReply r;
    EXPECT_TRUE(engine_->lookup(proto::KeysRequest{ns_.id, keys}, r).ok());
    return r.tiers;
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

  std::unique_ptr<testing::TempDir> dir_;
  std::unique_ptr<CacheEngine> engine_;
  Namespace ns_;
  SessionId writer_ = 0;
};

TEST_P(NvmeVerifyTest, LoadedChunksAreTheBytesWrittenAndEachIsChecked) {
  const auto keys = cache_on_nvme_only(12);  // more than the queue depth of 8
  const SessionId reader = engine_->open_session();
  Loaded got;
  start_load(reader, keys, got);
  ASSERT_TRUE(pump_until([&] { return got.called; }));
  ASSERT_TRUE(got.status.ok()) << got.status.to_string();
  ASSERT_EQ(got.reply.slots.size(), keys.size());
  for (size_t i = 0; i < keys.size(); ++i) {
    const auto* p =
        reinterpret_cast<const uint8_t*>(engine_->host_base() + got.reply.slots[i].offset);
    size_t wrong = 0;
    for (size_t b = 0; b < ns_.chunk_bytes(); ++b) wrong += p[b] != pattern(i, b);
    EXPECT_EQ(wrong, 0u) << "chunk " << i;
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
