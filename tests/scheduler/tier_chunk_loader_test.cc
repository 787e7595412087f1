// TierChunkLoader over a real CacheEngine with a real NVMe tier (files in a temporary directory,
// io_uring, O_DIRECT) on a fake clock: host chunks leased in place, NVMe chunks read, checked and
// delivered at their reap time and never inside submit(), failed reads delivered as errors,
// cancelled and orphaned reads releasing what they bring, and the read throttles' pacing.
#include "tierkv/scheduler/tier_chunk_loader.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <vector>

#include "support/engine_fixture.h"

namespace tierkv::scheduler {
namespace {

using proto::Tier;

struct Delivery {
  uint32_t chunk = 0;
  bool ok = false;
  proto::SlotRef slot;
  int64_t completed_ns = 0;
  int64_t delivered_ns = 0;
};

class RecordingSink final : public LoadSink {
 public:
  explicit RecordingSink(Clock& clock) : clock_(clock) {}
  void on_loaded(uint32_t chunk, const Result<proto::SlotRef>& slot,
                 int64_t completed_ns) override {
    Delivery d;
    d.chunk = chunk;
    d.ok = slot.ok();
    if (slot.ok()) d.slot = *slot;
    d.completed_ns = completed_ns;
    d.delivered_ns = clock_.now_ns();
    got.push_back(d);
  }
  std::vector<Delivery> got;

 private:
  Clock& clock_;
};

class TierChunkLoaderTest : public testing::EngineFixture<> {
 protected:
  void SetUp() override { make_engine({}); }

  void make_engine(storage::FaultPlan faults) {
    CacheOptions o = nvme_options();
    o.nvme.store.queue_depth = 16;
    o.nvme.store.faults = faults;
    ASSERT_NO_FATAL_FAILURE(start_engine(o));
    lease_session_ = engine_->open_session();
  }

  // Caches `n` chunks with known bytes, all written down to NVMe; returns their keys.
  std::vector<ChunkKey> cache(size_t n) {
    std::vector<ChunkKey> keys;
    for (size_t i = 0; i < n; ++i) keys.push_back(ChunkKey{1000 + i, 7});
    put_and_write_down(keys);
    return keys;
  }

  std::unique_ptr<TierChunkLoader> make_loader(const std::vector<ChunkKey>& keys,
                                               const std::vector<Tier>& tiers,
                                               TierLoaderOptions options = {}) {
    auto l = std::make_unique<TierChunkLoader>(*engine_, clock_, lease_session_, ns_.id,
                                               ns_.chunk_bytes(), keys, tiers, options);
    l->bind(&sink_);
    return l;
  }

  SessionId lease_session_ = 0;
  FakeClock clock_{1'000'000'000};
  RecordingSink sink_{clock_};
};

TEST_F(TierChunkLoaderTest, HostChunksAreLeasedInPlaceAndDeliveredOnTheNextClockTurn) {
  const auto keys = cache(4);
  const auto tiers = tiers_of(keys);
  ASSERT_EQ(tiers, std::vector<Tier>(4, Tier::kHost));
  auto loader = make_loader(keys, tiers);

  auto handed = loader->hand_over(0);
  ASSERT_TRUE(handed.ok()) << handed.status().to_string();
  EXPECT_TRUE(bytes_match(0, *handed));

  const int64_t t0 = clock_.now_ns();
  loader->submit(2);
  EXPECT_TRUE(sink_.got.empty()) << "a completion inside submit()";
  EXPECT_EQ(stats().read_leases, 2u);
  clock_.advance_by(5000);
  ASSERT_EQ(sink_.got.size(), 1u);
  EXPECT_EQ(sink_.got[0].chunk, 2u);
  ASSERT_TRUE(sink_.got[0].ok);
  EXPECT_EQ(sink_.got[0].completed_ns, t0) << "a host lease completes when it is taken";
  EXPECT_TRUE(bytes_match(2, sink_.got[0].slot));

  loader->release(0, *handed);
  loader->release(2, sink_.got[0].slot);
  EXPECT_EQ(stats().read_leases, 0u);
}

TEST_F(TierChunkLoaderTest, NvmeChunksAreReadCheckedAndDeliveredAtTheirReapTime) {
  const auto keys = cache(6);
  evict(keys);
  const auto tiers = tiers_of(keys);
  ASSERT_EQ(tiers, std::vector<Tier>(6, Tier::kNvme));
  auto loader = make_loader(keys, tiers);
  EXPECT_FALSE(loader->hand_over(1).ok()) << "an NVMe chunk cannot be handed over";

  for (uint32_t c : {5u, 4u, 3u}) loader->submit(c);
  EXPECT_TRUE(sink_.got.empty());
  EXPECT_EQ(loader->engine_reads(), 3u);
  EXPECT_EQ(stats().nvme.reads_in_flight, 3u);
  clock_.advance_by(1000);
  const int64_t reaped = clock_.now_ns();
  ASSERT_TRUE(pump_until([&] { return loader->engine_reads() == 0; }));
  EXPECT_TRUE(sink_.got.empty()) << "delivered from inside the engine's completion";
  clock_.advance_by(20000);  // the delivery turn
  ASSERT_EQ(sink_.got.size(), 3u);
  for (const Delivery& d : sink_.got) {
    ASSERT_TRUE(d.ok) << "chunk " << d.chunk;
    EXPECT_TRUE(bytes_match(d.chunk, d.slot)) << "chunk " << d.chunk;
    EXPECT_EQ(d.completed_ns, reaped) << "not the time the read was submitted, nor delivered";
  }
  EXPECT_EQ(stats().read_leases, 3u);
  // Promoted: chunks 3..5 are in host RAM now.
  const auto after = tiers_of(keys);
  EXPECT_EQ(after[0], Tier::kNvme);
  EXPECT_EQ(after[5], Tier::kHost);
  for (const Delivery& d : sink_.got) loader->release(d.chunk, d.slot);
  EXPECT_EQ(stats().read_leases, 0u);
  EXPECT_EQ(stats().nvme.checksum_failures, 0u);
}

TEST_F(TierChunkLoaderTest, CancelledAndOrphanedReadsReleaseWhatTheyBring) {
  const auto keys = cache(6);
  evict(keys);
  const auto tiers = tiers_of(keys);
  auto loader = make_loader(keys, tiers);

  // NVMe reads in flight when the session ends: their completions give the slots back.
  loader->submit(5);
  loader->submit(4);
  loader->cancel_all();
  EXPECT_EQ(loader->engine_reads(), 2u);
  ASSERT_TRUE(pump_until([&] { return loader->engine_reads() == 0; }));
  clock_.advance_by(1'000'000);
  EXPECT_TRUE(sink_.got.empty()) << "a completion after cancel_all()";
  EXPECT_EQ(stats().read_leases, 0u);

  // A completion queued but not yet delivered is released by cancel_all().
  auto host_loader = make_loader(keys, tiers_of(keys));  // 4 and 5 were promoted
  host_loader->submit(5);
  EXPECT_EQ(stats().read_leases, 1u);
  host_loader->cancel_all();
  clock_.advance_by(1'000'000);
  EXPECT_TRUE(sink_.got.empty());
  EXPECT_EQ(stats().read_leases, 0u);

  // The loader destroyed with a read in flight: the completion must not touch it.
  auto orphan = make_loader(keys, tiers);
  orphan->submit(3);
  orphan.reset();
  ASSERT_TRUE(pump_until([&] { return stats().nvme.reads_in_flight == 0; }));
  clock_.advance_by(1'000'000);
  EXPECT_TRUE(sink_.got.empty());
  EXPECT_EQ(stats().read_leases, 0u);
  EXPECT_EQ(tiers_of(keys)[3], Tier::kHost) << "the read still promoted the chunk";
}

TEST_F(TierChunkLoaderTest, FailedReadsAreDeliveredAsErrors) {
  storage::FaultPlan faults;
  faults.read_eio_every = 1;
  make_engine(faults);
  const auto keys = cache(3);
  evict(keys);
  auto loader = make_loader(keys, tiers_of(keys));
  loader->submit(2);
  ASSERT_TRUE(pump_until([&] { return loader->engine_reads() == 0; }));
  clock_.advance_by(1000);
  ASSERT_EQ(sink_.got.size(), 1u);
  EXPECT_EQ(sink_.got[0].chunk, 2u);
  EXPECT_FALSE(sink_.got[0].ok);
  EXPECT_EQ(stats().nvme.read_errors, 1u);
  EXPECT_EQ(stats().read_leases, 0u);

  // A chunk that is nowhere any more fails too, and still never inside submit().
  uint64_t removed = 0;
  ASSERT_TRUE(
      engine_->remove(proto::DropRequest{ns_.id, proto::Scope::kKeys, {keys[1]}}, &removed).ok());
  loader->submit(1);
  EXPECT_EQ(sink_.got.size(), 1u);
  clock_.advance_by(1000);
  ASSERT_EQ(sink_.got.size(), 2u);
  EXPECT_FALSE(sink_.got[1].ok);
}

TEST_F(TierChunkLoaderTest, ThrottlesPaceReadsToTheirBandwidth) {
  const auto keys = cache(6);
  evict({keys[3], keys[4], keys[5]});
  const auto tiers = tiers_of(keys);
  ASSERT_EQ(tiers[2], Tier::kHost);
  ASSERT_EQ(tiers[3], Tier::kNvme);
  // 64 KiB at 0.065536 GB/s = 1 ms per read, after 100 us (NVMe) or 50 us (host).
  TierLoaderOptions o;
  o.nvme = ReadThrottle{0.065536, 100};
  o.host = ReadThrottle{0.065536, 50};
  auto loader = make_loader(keys, tiers, o);
  const int64_t t0 = clock_.now_ns();
  for (uint32_t c : {5u, 4u, 3u}) loader->submit(c);
  loader->submit(2);
  // Nothing is issued before its transfer would have ended on the emulated device.
  clock_.advance_to(t0 + 1'050'000 - 1);
  EXPECT_EQ(loader->engine_reads(), 0u);
  EXPECT_EQ(stats().nvme.reads_in_flight, 0u);
  EXPECT_TRUE(sink_.got.empty());
  EXPECT_EQ(stats().read_leases, 0u);
  // The host chunk's emulated read ends at 1.05 ms; the first NVMe read is issued at 1.1 ms.
  clock_.advance_to(t0 + 1'050'000);
  ASSERT_EQ(sink_.got.size(), 1u);
  EXPECT_EQ(sink_.got[0].chunk, 2u);
  EXPECT_EQ(sink_.got[0].completed_ns, t0 + 1'050'000);
  EXPECT_EQ(loader->engine_reads(), 0u);
  clock_.advance_to(t0 + 1'100'000);
  EXPECT_EQ(loader->engine_reads(), 1u) << "one NVMe read issued, the others held";
  clock_.advance_to(t0 + 2'100'000 - 1);
  EXPECT_EQ(loader->engine_reads() + sink_.got.size(), 2u);
  clock_.advance_to(t0 + 3'100'000);
  ASSERT_TRUE(pump_until([&] { return loader->engine_reads() == 0; }));
  clock_.advance_by(1);
  ASSERT_EQ(sink_.got.size(), 4u);
  // Each NVMe chunk delivered once, no earlier than its issue (chunk 5 at 1.1 ms, 4 at 2.1 ms,
  // 3 at 3.1 ms); every byte real. Checksums are checked on worker threads, so the three may
  // complete in any order.
  std::vector<uint32_t> delivered;
  for (size_t k = 1; k < sink_.got.size(); ++k) {
    const Delivery& d = sink_.got[k];
    ASSERT_TRUE(d.chunk >= 3 && d.chunk <= 5) << d.chunk;
    delivered.push_back(d.chunk);
    ASSERT_TRUE(d.ok);
    EXPECT_GE(d.completed_ns, t0 + 1'100'000 + int64_t{5 - d.chunk} * 1'000'000);
    EXPECT_TRUE(bytes_match(d.chunk, d.slot));
  }
  std::sort(delivered.begin(), delivered.end());
  EXPECT_EQ(delivered, (std::vector<uint32_t>{3, 4, 5}));
  for (const Delivery& d : sink_.got) loader->release(d.chunk, d.slot);
  EXPECT_EQ(stats().read_leases, 0u);

  // Cancelled while held back: nothing is ever issued.
  evict({keys[3], keys[4], keys[5]});
  auto held = make_loader(keys, tiers_of(keys), o);
  held->submit(5);
  held->cancel_all();
  clock_.advance_by(10'000'000);
  EXPECT_EQ(held->engine_reads(), 0u);
  EXPECT_EQ(stats().nvme.reads_in_flight, 0u);
  EXPECT_EQ(sink_.got.size(), 4u);
}

}  // namespace
}  // namespace tierkv::scheduler
