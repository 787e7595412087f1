// The GPU tier's bookkeeping inside the real CacheEngine, on a host-memory stand-in for the
// device (FakeGpuMemory): promotion after enough loads, lookups in tier GPU, GPU-slot leases and
// their release, leaf-first eviction that never takes a leased slot, GPU copies going with their
// host chunks, copies in flight outliving their host chunk, failed copies, dead sessions.
#include "tierkv/scheduler/gpu_tier.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>

#include "scheduler/fake_gpu_memory.h"
#include "tierkv/scheduler/cache_engine.h"

namespace tierkv::scheduler {
namespace {

using proto::PutDisposition;
using proto::Tier;
using testing::FakeGpuMemory;

constexpr uint64_t kKiB = 1024, kMiB = 1024 * 1024;

// Host tier: 4 MiB in 1 MiB slabs. GPU tier: 1 MiB, one slab. 256 KiB chunks: 16 host slots,
// 4 GPU slots.
class GpuTierTest : public ::testing::Test {
 protected:
  void SetUp() override { start(1 * kMiB, 4); }

  void start(uint64_t gpu_bytes, uint32_t copies_in_flight) {
    CacheOptions o;
    o.host_capacity_bytes = 4 * kMiB;
    o.slab_bytes = 1 * kMiB;
    o.min_slot_bytes = 64 * kKiB;
    o.prefault = false;
    o.gpu.device = 3;
    o.gpu.capacity_bytes = gpu_bytes;
    o.gpu.slab_bytes = 1 * kMiB;
    o.gpu.min_slot_bytes = 64 * kKiB;
    o.gpu.promote_after_loads = 2;
    o.gpu.copies_in_flight = copies_in_flight;
    auto fake = std::make_unique<FakeGpuMemory>(gpu_bytes, 8);
    gpu_ = fake.get();
    auto e = CacheEngine::create(o, std::move(fake));
    ASSERT_TRUE(e.ok()) << e.status().to_string();
    engine_ = std::move(e).value();
    ASSERT_TRUE(engine_->gpu_enabled()) << engine_->gpu_status();
    auto ns = engine_->register_namespace(Layout{2, 2, 128, DType::kBFloat16, 128}, "t", "");
    ASSERT_TRUE(ns.ok()) << ns.status().to_string();
    ns_ = *ns;
    ASSERT_EQ(ns_.chunk_bytes(), 256 * kKiB);
    session_ = engine_->open_session();
  }

  static std::vector<ChunkKey> chain(uint64_t prompt, size_t n) {
    std::vector<ChunkKey> k;
    for (size_t i = 0; i < n; ++i) k.push_back(ChunkKey{prompt * 1000 + i + 1, prompt});
    return k;
  }
  // Chunk bytes are a function of the key, so a copy can be checked against it.
  static std::byte pattern(const ChunkKey& key, uint64_t i) {
    return static_cast<std::byte>((key.lo * 131 + i * 7 + (i >> 11)) & 0xFF);
  }
  void put(const std::vector<ChunkKey>& keys) {
    proto::PutBeginRequest req{ns_.id, kRootKey, ns_.chunk_bytes(), keys};
    proto::PutBeginReply rep;
    ASSERT_TRUE(engine_->put_begin(session_, req, rep).ok());
    std::vector<uint32_t> slots;
    for (size_t i = 0; i < keys.size(); ++i) {
      ASSERT_EQ(rep.slots[i].disposition, PutDisposition::kWrite);
      std::byte* p = engine_->host_base() + rep.slots[i].offset;
      for (uint64_t b = 0; b < ns_.chunk_bytes(); ++b) p[b] = pattern(keys[i], b);
      slots.push_back(rep.slots[i].slot);
    }
    uint64_t n = 0;
    ASSERT_TRUE(engine_->put_commit(session_, slots, &n).ok());
  }
  // An ordinary load, released at once.
  void load_and_release(const std::vector<ChunkKey>& keys) {
    proto::LoadReply rep;
    ASSERT_TRUE(load(false, keys, rep).ok());
    std::vector<uint32_t> slots;
    for (const auto& s : rep.slots) slots.push_back(s.slot);
    uint64_t n = 0;
    ASSERT_TRUE(engine_->release(session_, slots, &n).ok());
  }
  Status load(bool gpu, const std::vector<ChunkKey>& keys, proto::LoadReply& reply,
              SessionId session = 0) {
    bool called = false;
    Status status;
    auto done = [&](Status s, const proto::LoadReply& r) {
      called = true;
      status = std::move(s);
      reply = r;
    };
    const proto::KeysRequest req{ns_.id, keys};
    if (gpu) {
      engine_->load_gpu(session == 0 ? session_ : session, req, done);
    } else {
      engine_->load(session == 0 ? session_ : session, req, done);
    }
    return called ? status : Status::Internal("load did not answer at once");
  }
  std::vector<Tier> tiers(const std::vector<ChunkKey>& keys) {
    proto::LookupReply rep;
    EXPECT_TRUE(engine_->lookup({ns_.id, keys}, rep).ok());
    return rep.tiers;
  }
  proto::StatsReply stats() {
    proto::StatsReply s;
    engine_->fill_stats(s);
    return s;
  }
  proto::TierStats gpu_tier() {
    for (const auto& t : stats().tiers) {
      if (t.tier == Tier::kGpu) return t;
    }
    ADD_FAILURE() << "no gpu tier in stats";
    return {};
  }
  proto::TierStats host_tier() {
    for (const auto& t : stats().tiers) {
      if (t.tier == Tier::kHost) return t;
    }
    ADD_FAILURE() << "no host tier in stats";
    return {};
  }
  // Loads `keys` twice (the promotion threshold) and lets the copies land.
  void promote(const std::vector<ChunkKey>& keys) {
    load_and_release(keys);
    load_and_release(keys);
    engine_->poll_gpu();
  }
  void attach(SessionId session = 0) {
    proto::GpuAttachReply rep;
    ASSERT_TRUE(engine_->gpu_attach(session == 0 ? session_ : session, rep).ok());
  }
  void expect_gpu_copy(const proto::SlotRef& ref, const ChunkKey& key) {
    ASSERT_EQ(ref.pool, proto::kGpuPool);
    const auto bytes = gpu_->at(ref.offset, ref.bytes);
    for (uint64_t b = 0; b < bytes.size(); ++b) {
      if (bytes[b] != pattern(key, b)) {
        ADD_FAILURE() << "GPU copy of chunk " << key.to_hex() << " differs at byte " << b;
        return;
      }
    }
  }

  FakeGpuMemory* gpu_ = nullptr;
  std::unique_ptr<CacheEngine> engine_;
  Namespace ns_;
  SessionId session_ = 0;
};

TEST_F(GpuTierTest, HotChunksArePromotedAfterEnoughLoads) {
  const auto keys = chain(1, 3);
  put(keys);
  EXPECT_EQ(tiers(keys), std::vector<Tier>(3, Tier::kHost));
  load_and_release(keys);
  engine_->poll_gpu();
  EXPECT_EQ(gpu_->copies_started(), 0u) << "one load is below promote_after_loads = 2";
  load_and_release(keys);
  EXPECT_EQ(gpu_->copies_started(), 3u);
  // Copies in flight: not in tier GPU yet, and the host slots they read are held.
  EXPECT_EQ(tiers(keys), std::vector<Tier>(3, Tier::kHost));
  engine_->poll_gpu();
  EXPECT_EQ(tiers(keys), std::vector<Tier>(3, Tier::kGpu));
  const auto t = gpu_tier();
  EXPECT_EQ(t.enabled, 1);
  EXPECT_EQ(t.capacity_bytes, 1 * kMiB);
  EXPECT_EQ(t.chunks, 3u);
  EXPECT_EQ(t.used_bytes, 3 * ns_.chunk_bytes());
  EXPECT_EQ(t.bytes_in, 3 * ns_.chunk_bytes());
  const auto s = stats();
  EXPECT_EQ(s.gpu.promotions, 3u);
  EXPECT_EQ(s.gpu.promotions_in_flight, 0u);
  EXPECT_EQ(s.gpu.device, 3);
  EXPECT_EQ(s.gpu_status, "on: fake GPU (device 3)");
  // More loads copy nothing again.
  promote(keys);
  EXPECT_EQ(gpu_->copies_started(), 3u);
}

TEST_F(GpuTierTest, GpuLoadLeasesGpuSlotsHoldingTheChunkBytes) {
  const auto keys = chain(2, 4);
  put(keys);
  promote({keys[0], keys[1]});  // only the head is hot
  proto::LoadReply rep;
  Status s = load(true, keys, rep);
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("gpu_attach"), std::string::npos) << s.message();
  attach();
  ASSERT_TRUE(load(true, keys, rep).ok());
  ASSERT_EQ(rep.slots.size(), 4u);
  expect_gpu_copy(rep.slots[0], keys[0]);
  expect_gpu_copy(rep.slots[1], keys[1]);
  EXPECT_EQ(rep.slots[2].pool, proto::kHostPool);
  EXPECT_EQ(rep.slots[3].pool, proto::kHostPool);
  auto st = stats();
  EXPECT_EQ(st.gpu.leases, 2u);
  EXPECT_EQ(st.read_leases, 2u) << "the GPU chunks' host leases are given back";
  EXPECT_EQ(st.gpu.attached_clients, 1u);
  // GPU slots go back with gpu_release, host slots with release; neither takes the other's.
  uint64_t n = 0;
  const std::vector<uint32_t> gpu_slots{rep.slots[0].slot, rep.slots[1].slot};
  const std::vector<uint32_t> host_slots{rep.slots[2].slot, rep.slots[3].slot};
  // All or nothing: a slot it does not hold fails the whole release.
  EXPECT_EQ(engine_->gpu_release(session_, std::vector<uint32_t>{gpu_slots[0], 999}, &n).code(),
            StatusCode::kFailedPrecondition);
  EXPECT_EQ(stats().gpu.leases, 2u);
  ASSERT_TRUE(engine_->gpu_release(session_, gpu_slots, &n).ok());
  EXPECT_EQ(n, 2u);
  ASSERT_TRUE(engine_->release(session_, host_slots, &n).ok());
  s = engine_->gpu_release(session_, gpu_slots, &n);
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("slots[0]"), std::string::npos) << s.message();
  st = stats();
  EXPECT_EQ(st.gpu.leases, 0u);
  EXPECT_EQ(st.read_leases, 0u);
}

TEST_F(GpuTierTest, AttachHandsOutThePool) {
  proto::GpuAttachReply rep;
  ASSERT_TRUE(engine_->gpu_attach(session_, rep).ok());
  EXPECT_EQ(rep.device, 3);
  EXPECT_EQ(rep.pool_bytes, 1 * kMiB);
  EXPECT_EQ(rep.device_uuid[15], 16);
  EXPECT_EQ(rep.ipc_handle[63], 0xAB);
  EXPECT_GT(rep.slot_align, 0u);
}

TEST_F(GpuTierTest, EvictionIsLeafFirstAndSparesLeasedSlots) {
  // Four GPU slots. Chain A (3 chunks) is promoted, then chain B (2): B's second chunk needs room,
  // and A gives up its leaf, not the chunks its leaf extends.
  const auto a = chain(3, 3);
  const auto b = chain(4, 2);
  put(a);
  put(b);
  promote(a);
  EXPECT_EQ(tiers(a), std::vector<Tier>(3, Tier::kGpu));
  attach();
  proto::LoadReply head;
  ASSERT_TRUE(load(true, {a[0]}, head).ok());  // a client reads A's head on the GPU
  ASSERT_EQ(head.slots[0].pool, proto::kGpuPool);
  promote(b);
  EXPECT_EQ(tiers(b), std::vector<Tier>(2, Tier::kGpu));
  EXPECT_EQ(tiers(a), (std::vector<Tier>{Tier::kGpu, Tier::kGpu, Tier::kHost}));
  EXPECT_EQ(gpu_tier().evictions, 1u);
  // Chain C (4 chunks): the leaves go one after the other (A's, then B's, then B's head once it
  // is a leaf); A's head, leased, stays, so C's last chunk finds no room.
  const auto c = chain(5, 4);
  put(c);
  promote(c);
  EXPECT_EQ(tiers(a), (std::vector<Tier>{Tier::kGpu, Tier::kHost, Tier::kHost}));
  EXPECT_EQ(tiers(b), (std::vector<Tier>{Tier::kHost, Tier::kHost}));
  EXPECT_EQ(tiers(c), (std::vector<Tier>{Tier::kGpu, Tier::kGpu, Tier::kGpu, Tier::kHost}));
  EXPECT_EQ(gpu_tier().evictions, 4u);
  EXPECT_EQ(stats().gpu.promotion_failures, 1u);
  expect_gpu_copy(head.slots[0], a[0]);
}

TEST_F(GpuTierTest, GpuCopiesGoWithTheirHostChunk) {
  const auto keys = chain(6, 2);
  put(keys);
  promote(keys);
  attach();
  proto::LoadReply rep;
  ASSERT_TRUE(load(true, keys, rep).ok());
  uint64_t removed = 0;
  ASSERT_TRUE(engine_->evict({ns_.id, proto::Scope::kKeys, keys}, &removed).ok());
  EXPECT_EQ(removed, 2u);
  EXPECT_TRUE(tiers(keys).empty());
  // The leased GPU copies linger (a client is reading them) until released.
  EXPECT_EQ(gpu_tier().chunks, 0u);
  EXPECT_EQ(gpu_tier().used_bytes, 2 * ns_.chunk_bytes());
  expect_gpu_copy(rep.slots[1], keys[1]);
  EXPECT_EQ(stats().gpu.dropped_with_host, 2u);
  uint64_t n = 0;
  ASSERT_TRUE(
      engine_
          ->gpu_release(session_, std::vector<uint32_t>{rep.slots[0].slot, rep.slots[1].slot}, &n)
          .ok());
  EXPECT_EQ(gpu_tier().used_bytes, 0u);
}

TEST_F(GpuTierTest, ACopyInFlightOutlivesItsHostChunkAndIsDiscarded) {
  const auto keys = chain(7, 1);
  put(keys);
  gpu_->hold(true);
  load_and_release(keys);
  load_and_release(keys);
  ASSERT_EQ(gpu_->copies_started(), 1u);
  uint64_t removed = 0;
  ASSERT_TRUE(engine_->remove({ns_.id, proto::Scope::kKeys, keys}, &removed).ok());
  EXPECT_EQ(removed, 1u);
  // The host slot is still read by the copy: it stays allocated until the copy lands.
  EXPECT_EQ(host_tier().used_bytes, ns_.chunk_bytes());
  gpu_->hold(false);
  engine_->poll_gpu();
  EXPECT_EQ(host_tier().used_bytes, 0u);
  EXPECT_EQ(gpu_tier().used_bytes, 0u);
  EXPECT_EQ(gpu_tier().chunks, 0u);
  EXPECT_EQ(stats().gpu.promotions, 0u);
}

TEST_F(GpuTierTest, AFailedCopyLeavesTheChunkInHostRamOnly) {
  const auto keys = chain(8, 1);
  put(keys);
  gpu_->fail_next();
  promote(keys);
  EXPECT_EQ(tiers(keys), std::vector<Tier>{Tier::kHost});
  EXPECT_EQ(stats().gpu.promotion_failures, 1u);
  EXPECT_EQ(gpu_tier().used_bytes, 0u);
  EXPECT_EQ(host_tier().chunks, 1u);
  // It takes promote_after_loads more loads to try again, and then it works.
  promote(keys);
  EXPECT_EQ(tiers(keys), std::vector<Tier>{Tier::kGpu});
}

TEST_F(GpuTierTest, CopiesInFlightAreLimitedAndTheRestQueue) {
  start(1 * kMiB, 2);
  const auto keys = chain(9, 4);
  put(keys);
  gpu_->hold(true);
  load_and_release(keys);
  load_and_release(keys);
  EXPECT_EQ(gpu_->copies_started(), 2u);
  auto st = stats();
  EXPECT_EQ(st.gpu.promotions_in_flight, 2u);
  EXPECT_EQ(st.gpu.promotions_queued, 2u);
  gpu_->hold(false);
  engine_->poll_gpu();  // the first two land; the next two start
  EXPECT_EQ(gpu_->copies_started(), 4u);
  engine_->poll_gpu();
  EXPECT_EQ(tiers(keys), std::vector<Tier>(4, Tier::kGpu));
  EXPECT_EQ(stats().gpu.promotions_queued, 0u);
}

TEST_F(GpuTierTest, AClosedSessionsGpuLeasesAreReclaimed) {
  const auto keys = chain(10, 3);
  put(keys);
  promote(keys);
  const SessionId other = engine_->open_session();
  attach(other);
  proto::LoadReply rep;
  ASSERT_TRUE(load(true, keys, rep, other).ok());
  EXPECT_EQ(stats().gpu.leases, 3u);
  const auto reclaimed = engine_->close_session(other);
  EXPECT_EQ(reclaimed.gpu_leases, 3u);
  const auto st = stats();
  EXPECT_EQ(st.gpu.leases, 0u);
  EXPECT_EQ(st.gpu.attached_clients, 0u);
  // Unleased now, so another chain can evict them.
  const auto more = chain(11, 4);
  put(more);
  promote(more);
  EXPECT_EQ(tiers(more), std::vector<Tier>(4, Tier::kGpu));
}

TEST(GpuTierOffTest, OffWhenCapacityIsZero) {
  CacheOptions o;
  o.host_capacity_bytes = 4 * kMiB;
  o.slab_bytes = 1 * kMiB;
  o.prefault = false;
  auto e = CacheEngine::create(o);
  ASSERT_TRUE(e.ok()) << e.status().to_string();
  CacheEngine& engine = **e;
  EXPECT_FALSE(engine.gpu_enabled());
  EXPECT_EQ(engine.gpu_status(), "off (gpu.capacity = 0)");
  EXPECT_EQ(engine.gpu_fd(), -1);
  const SessionId s = engine.open_session();
  proto::GpuAttachReply rep;
  const Status st = engine.gpu_attach(s, rep);
  EXPECT_EQ(st.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(st.message().find("off (gpu.capacity = 0)"), std::string::npos) << st.message();
  proto::StatsReply stats;
  engine.fill_stats(stats);
  EXPECT_EQ(stats.gpu_status, "off (gpu.capacity = 0)");
  EXPECT_EQ(stats.gpu.device, -1);
  for (const auto& t : stats.tiers) {
    if (t.tier == Tier::kGpu) {
      EXPECT_EQ(t.enabled, 0);
    }
  }
}

TEST(GpuTierOffTest, OffWithoutADeviceAndTheEngineRunsOn) {
  // No GPU memory given: the engine opens the CUDA device itself. Without CUDA in the build, or
  // without the device, the tier is off and says why; the host tier works regardless.
  CacheOptions o;
  o.host_capacity_bytes = 4 * kMiB;
  o.slab_bytes = 1 * kMiB;
  o.prefault = false;
  o.gpu.capacity_bytes = 64 * kMiB;
  o.gpu.device = 1000;  // no machine has it
  auto e = CacheEngine::create(o);
  ASSERT_TRUE(e.ok()) << e.status().to_string();
  EXPECT_FALSE((*e)->gpu_enabled());
  EXPECT_EQ((*e)->gpu_status().rfind("off (", 0), 0u) << (*e)->gpu_status();
  EXPECT_GT((*e)->gpu_status().size(), 6u);
  if (storage::cuda_gpu_memory_built()) {
    const std::string& why = (*e)->gpu_status();
    EXPECT_TRUE(why.find("no CUDA device") != std::string::npos ||
                why.find("gpu.device = 1000 does not exist") != std::string::npos)
        << why;
  } else {
    EXPECT_NE((*e)->gpu_status().find("built without CUDA"), std::string::npos);
  }
}

TEST(GpuTierOptionsTest, ValidateNamesTheBadOption) {
  GpuTierOptions o;
  o.capacity_bytes = 1 * kMiB;  // smaller than the 64 MiB default slab
  Status s = o.validate();
  EXPECT_NE(s.message().find("gpu.capacity"), std::string::npos) << s.message();
  o.capacity_bytes = 128 * kMiB;
  o.promote_after_loads = 0;
  s = o.validate();
  EXPECT_NE(s.message().find("gpu.promote_after_loads"), std::string::npos) << s.message();
  o.promote_after_loads = 1;
  o.copies_in_flight = 0;
  s = o.validate();
  EXPECT_NE(s.message().find("gpu.copies_in_flight"), std::string::npos) << s.message();
  o.copies_in_flight = 16;
  EXPECT_TRUE(o.validate().ok());
}

}  // namespace
}  // namespace tierkv::scheduler
