#include "tierkv/scheduler/cache_engine.h"

#include <gtest/gtest.h>

#include <set>

namespace tierkv::scheduler {
namespace {

using proto::PutDisposition;

constexpr uint64_t kKiB = 1024, kMiB = 1024 * 1024;

// 4 MiB of host tier in 1 MiB slabs; 256 KiB chunks: 16 slots.
class CacheEngineTest : public ::testing::Test {
 protected:
  // The engine's load answers through a callback; without an NVMe tier it answers at once.
  Status load_now(SessionId session, const proto::KeysRequest& req, proto::LoadReply& reply) {
    bool called = false;
    Status status = Status::Internal("load did not answer at once");
    engine_->load(session, req, [&](Status s, const proto::LoadReply& r) {
      called = true;
      status = std::move(s);
      reply = r;
    });
    return called ? status : Status::Internal("load did not answer at once");
  }
  void SetUp() override {
    CacheOptions o;
    o.host_capacity_bytes = 4 * kMiB;
    o.slab_bytes = 1 * kMiB;
    o.min_slot_bytes = 64 * kKiB;
    o.prefault = false;
    o.default_chunk_tokens = 16;
    auto e = CacheEngine::create(o);
    ASSERT_TRUE(e.ok()) << e.status().to_string();
    engine_ = std::move(e).value();
    // 2 layers x 2 heads x 128 dim x bf16 x K,V = 2 KiB per token; 128 tokens = 256 KiB.
    auto ns = engine_->register_namespace(Layout{2, 2, 128, DType::kBFloat16, 128}, "t", "");
    ASSERT_TRUE(ns.ok()) << ns.status().to_string();
    ns_ = *ns;
    ASSERT_EQ(ns_.chunk_bytes(), 256 * kKiB);
    session_ = engine_->open_session();
  }

  // Keys of a chain: chunk i of prompt `prompt`.
  static std::vector<ChunkKey> chain(uint64_t prompt, size_t n, size_t first = 0) {
    std::vector<ChunkKey> k;
    for (size_t i = first; i < first + n; ++i) k.push_back(ChunkKey{prompt * 1000 + i + 1, prompt});
    return k;
  }

  // put_begin + commit of every slot granted; returns the dispositions.
  std::vector<PutDisposition> put(const std::vector<ChunkKey>& keys, ChunkKey parent = kRootKey,
                                  SessionId session = 0) {
    if (session == 0) session = session_;
    proto::PutBeginRequest req{ns_.id, parent, ns_.chunk_bytes(), keys};
    proto::PutBeginReply rep;
    EXPECT_TRUE(engine_->put_begin(session, req, rep).ok());
    std::vector<uint32_t> slots;
    std::vector<PutDisposition> d;
    for (const auto& s : rep.slots) {
      d.push_back(s.disposition);
      if (s.disposition == PutDisposition::kWrite) slots.push_back(s.slot);
    }
    uint64_t n = 0;
    EXPECT_TRUE(engine_->put_commit(session, slots, &n).ok());
    EXPECT_EQ(n, slots.size());
    return d;
  }

  size_t cached(const std::vector<ChunkKey>& keys, NamespaceId ns = 0) {
    proto::KeysRequest req{ns == 0 ? ns_.id : ns, keys};
    proto::LookupReply rep;
    EXPECT_TRUE(engine_->lookup(req, rep).ok());
    return rep.tiers.size();
  }

  proto::TierStats host_stats() {
    proto::StatsReply s;
    engine_->fill_stats(s);
    for (const auto& t : s.tiers) {
      if (t.tier == proto::Tier::kHost) return t;
    }
    ADD_FAILURE() << "no host tier in stats";
    return {};
  }

  std::unique_ptr<CacheEngine> engine_;
  Namespace ns_;
  SessionId session_ = 0;
};

TEST_F(CacheEngineTest, PutThenLookupAndLoad) {
  const auto keys = chain(1, 4);
  const auto d = put(keys);
  EXPECT_EQ(d, std::vector<PutDisposition>(4, PutDisposition::kWrite));
  EXPECT_EQ(cached(keys), 4u);
  proto::LoadReply load;
  ASSERT_TRUE(load_now(session_, proto::KeysRequest{ns_.id, keys}, load).ok());
  ASSERT_EQ(load.slots.size(), 4u);
  std::set<uint64_t> offsets;
  for (const auto& s : load.slots) {
    EXPECT_EQ(s.bytes, ns_.chunk_bytes());
    EXPECT_TRUE(offsets.insert(s.offset).second);
  }
  // A second put of the same prompt writes nothing.
  EXPECT_EQ(put(keys), std::vector<PutDisposition>(4, PutDisposition::kCached));
  const auto st = host_stats();
  EXPECT_EQ(st.chunks, 4u);
  EXPECT_EQ(st.bytes_in, 4 * ns_.chunk_bytes());
  EXPECT_EQ(st.bytes_out, 4 * ns_.chunk_bytes());
}

TEST_F(CacheEngineTest, PendingChunksAreInvisibleUntilCommitted) {
  const auto keys = chain(2, 2);
  proto::PutBeginReply rep;
  ASSERT_TRUE(engine_->put_begin(session_, {ns_.id, kRootKey, ns_.chunk_bytes(), keys}, rep).ok());
  EXPECT_EQ(cached(keys), 0u);
  // Another client asking to store the same prompt is told it is in progress.
  const SessionId other = engine_->open_session();
  proto::PutBeginReply rep2;
  ASSERT_TRUE(engine_->put_begin(other, {ns_.id, kRootKey, ns_.chunk_bytes(), keys}, rep2).ok());
  EXPECT_EQ(rep2.slots[0].disposition, PutDisposition::kInProgress);
  // The other client cannot commit our slots.
  uint64_t n = 0;
  Status s = engine_->put_commit(other, std::vector<uint32_t>{rep.slots[0].slot}, &n);
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("not leased for writing"), std::string::npos) << s.message();
  ASSERT_TRUE(engine_->put_commit(session_, std::vector<uint32_t>{rep.slots[0].slot, rep.slots[1].slot}, &n).ok());
  EXPECT_EQ(cached(keys), 2u);
}

TEST_F(CacheEngineTest, LookupStopsAtTheFirstGap) {
  const auto keys = chain(3, 4);
  put({keys[0]});
  put({keys[2], keys[3]}, keys[1]);  // parent absent: allowed
  EXPECT_EQ(cached(keys), 1u);
  put({keys[1]}, keys[0]);
  EXPECT_EQ(cached(keys), 4u);
}

TEST_F(CacheEngineTest, BadRequestsNameTheField) {
  proto::PutBeginReply rep;
  Status s = engine_->put_begin(session_, {ns_.id, kRootKey, 1000, chain(4, 1)}, rep);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("chunk_bytes = 1000"), std::string::npos) << s.message();
  s = engine_->put_begin(session_, {12345, kRootKey, ns_.chunk_bytes(), chain(4, 1)}, rep);
  EXPECT_EQ(s.code(), StatusCode::kNotFound);
  EXPECT_NE(s.message().find("not registered"), std::string::npos);
  uint64_t n = 0;
  s = engine_->put_commit(session_, std::vector<uint32_t>{0xFFFFFFF0u}, &n);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("out of range"), std::string::npos) << s.message();
  s = engine_->release(session_, std::vector<uint32_t>{0}, &n);
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
  auto bad = engine_->register_namespace(Layout{0, 2, 128, DType::kBFloat16, 128}, "t", "");
  EXPECT_NE(bad.status().message().find("num_layers"), std::string::npos);
  bad = engine_->register_namespace(Layout{64, 8, 128, DType::kBFloat16, 1024}, "t", "");
  EXPECT_NE(bad.status().message().find("exceeds the largest host slot"), std::string::npos);
}

TEST_F(CacheEngineTest, CommitIsAllOrNothingPerRequest) {
  proto::PutBeginReply rep;
  ASSERT_TRUE(engine_->put_begin(session_, {ns_.id, kRootKey, ns_.chunk_bytes(), chain(5, 2)}, rep).ok());
  uint64_t n = 0;
  // The second id is bogus: the first must not be committed either.
  Status s = engine_->put_commit(session_, std::vector<uint32_t>{rep.slots[0].slot, 77777}, &n);
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(cached(chain(5, 2)), 0u);
  // Naming a slot twice is refused too.
  s = engine_->put_commit(session_, std::vector<uint32_t>{rep.slots[0].slot, rep.slots[0].slot}, &n);
  EXPECT_NE(s.message().find("named twice"), std::string::npos) << s.message();
  ASSERT_TRUE(engine_->put_commit(session_, std::vector<uint32_t>{rep.slots[0].slot, rep.slots[1].slot}, &n).ok());
  EXPECT_EQ(cached(chain(5, 2)), 2u);
}

TEST_F(CacheEngineTest, NamespacesIsolate) {
  auto other = engine_->register_namespace(Layout{2, 2, 128, DType::kBFloat16, 128}, "t2", "");
  ASSERT_TRUE(other.ok());
  put(chain(6, 3));
  EXPECT_EQ(cached(chain(6, 3)), 3u);
  EXPECT_EQ(cached(chain(6, 3), other->id), 0u);
}

TEST_F(CacheEngineTest, LeasesBlockEviction) {
  // Fill all 16 slots with one-chunk prompts and lease every one for reading.
  std::vector<ChunkKey> all;
  for (uint64_t p = 0; p < 16; ++p) {
    put(chain(100 + p, 1));
    all.push_back(chain(100 + p, 1)[0]);
  }
  proto::LoadReply held;
  for (uint64_t p = 0; p < 16; ++p) {
    proto::LoadReply one;
    ASSERT_TRUE(load_now(session_, {ns_.id, chain(100 + p, 1)}, one).ok());
    ASSERT_EQ(one.slots.size(), 1u);
    held.slots.push_back(one.slots[0]);
  }
  // No room: every chunk is leased.
  EXPECT_EQ(put(chain(200, 1)), std::vector<PutDisposition>{PutDisposition::kNoSpace});
  for (uint64_t p = 0; p < 16; ++p) EXPECT_EQ(cached(chain(100 + p, 1)), 1u);
  // Release one: now exactly that one can go.
  uint64_t n = 0;
  ASSERT_TRUE(engine_->release(session_, std::vector<uint32_t>{held.slots[7].slot}, &n).ok());
  EXPECT_EQ(put(chain(200, 1)), std::vector<PutDisposition>{PutDisposition::kWrite});
  EXPECT_EQ(cached(chain(107, 1)), 0u);
  for (uint64_t p = 0; p < 16; ++p) {
    if (p != 7) {
      EXPECT_EQ(cached(chain(100 + p, 1)), 1u) << p;
    }
  }
  EXPECT_EQ(host_stats().evictions, 1u);
}

TEST_F(CacheEngineTest, EvictionTakesLeavesBeforeTheChunksOthersDependOn) {
  // Lookups touch what they find, so this test looks up the prefix only at the end.
  const auto prefix = chain(1, 4);
  put({prefix[0]});  // the oldest chunk of all, but others extend it
  for (uint64_t p = 0; p < 12; ++p) put(chain(300 + p, 1));
  put({prefix[1], prefix[2], prefix[3]}, prefix[0]);
  // 16 slots in use. Plain LRU would now drop prefix[0]; leaf-first drops the oldest leaf.
  put(chain(400, 1));
  EXPECT_EQ(cached(chain(300, 1)), 0u);
  // Eleven more single-chunk prompts push out the other eleven old leaves...
  for (uint64_t p = 0; p < 11; ++p) put(chain(500 + p, 1));
  for (uint64_t p = 0; p < 12; ++p) EXPECT_EQ(cached(chain(300 + p, 1)), 0u) << p;
  // ...then the prefix is eaten from its end: its leaf is now the oldest, then its new leaf.
  put(chain(600, 1));
  put(chain(601, 1));
  EXPECT_EQ(cached(prefix), 2u);
  EXPECT_EQ(cached(chain(400, 1)), 1u);
}

TEST_F(CacheEngineTest, RecentlyUsedLeavesStay) {
  for (uint64_t p = 0; p < 16; ++p) put(chain(700 + p, 1));
  EXPECT_EQ(cached(chain(700, 1)), 1u);  // touches the oldest
  put(chain(800, 1));
  EXPECT_EQ(cached(chain(700, 1)), 1u);
  EXPECT_EQ(cached(chain(701, 1)), 0u);  // the least recently used went instead
}

TEST_F(CacheEngineTest, ClosingASessionReclaimsLeasesAndDiscardsUncommittedChunks) {
  put(chain(9, 2));
  const SessionId client = engine_->open_session();
  proto::LoadReply load;
  ASSERT_TRUE(load_now(client, {ns_.id, chain(9, 2)}, load).ok());
  proto::PutBeginReply rep;
  ASSERT_TRUE(engine_->put_begin(client, {ns_.id, chain(9, 1, 1)[0], ns_.chunk_bytes(), chain(9, 3, 2)}, rep).ok());
  proto::StatsReply s;
  engine_->fill_stats(s);
  EXPECT_EQ(s.read_leases, 2u);
  EXPECT_EQ(s.pending_writes, 3u);
  const uint64_t used_before = host_stats().used_bytes;

  const auto reclaimed = engine_->close_session(client);
  EXPECT_EQ(reclaimed.read_leases, 2u);
  EXPECT_EQ(reclaimed.pending_writes, 3u);
  engine_->fill_stats(s);
  EXPECT_EQ(s.read_leases, 0u);
  EXPECT_EQ(s.pending_writes, 0u);
  EXPECT_EQ(host_stats().used_bytes, used_before - 3 * ns_.chunk_bytes());
  EXPECT_EQ(cached(chain(9, 5)), 2u);  // the half-written chunks never became visible
  // The committed chunks are evictable again: fill the pool past them.
  for (uint64_t p = 0; p < 16; ++p) put(chain(900 + p, 1));
  EXPECT_EQ(cached(chain(9, 2)), 0u);
}

TEST_F(CacheEngineTest, DroppedChunkStaysWithItsReaderUntilReleased) {
  put(chain(10, 1));
  proto::LoadReply load;
  ASSERT_TRUE(load_now(session_, {ns_.id, chain(10, 1)}, load).ok());
  const uint64_t held = load.slots[0].offset;
  uint64_t removed = 0;
  ASSERT_TRUE(engine_->remove({ns_.id, proto::Scope::kNamespace, {}}, &removed).ok());
  EXPECT_EQ(removed, 1u);
  EXPECT_EQ(cached(chain(10, 1)), 0u);
  // The pool fills around the held slot without reusing it.
  std::set<uint64_t> reused;
  for (uint64_t p = 0; p < 15; ++p) {
    proto::PutBeginReply rep;
    ASSERT_TRUE(engine_->put_begin(session_, {ns_.id, kRootKey, ns_.chunk_bytes(), chain(1000 + p, 1)}, rep).ok());
    ASSERT_EQ(rep.slots[0].disposition, PutDisposition::kWrite);
    EXPECT_NE(rep.slots[0].offset, held);
  }
  uint64_t n = 0;
  ASSERT_TRUE(engine_->release(session_, std::vector<uint32_t>{load.slots[0].slot}, &n).ok());
  proto::PutBeginReply rep;
  ASSERT_TRUE(engine_->put_begin(session_, {ns_.id, kRootKey, ns_.chunk_bytes(), chain(2000, 1)}, rep).ok());
  EXPECT_EQ(rep.slots[0].offset, held);
}

TEST_F(CacheEngineTest, DropByKeys) {
  put(chain(11, 4));
  uint64_t removed = 0;
  ASSERT_TRUE(engine_->remove({ns_.id, proto::Scope::kKeys, {chain(11, 1, 2)}}, &removed).ok());
  EXPECT_EQ(removed, 1u);
  EXPECT_EQ(cached(chain(11, 4)), 2u);
}

TEST_F(CacheEngineTest, AbortFreesTheSlots) {
  const uint64_t used = host_stats().used_bytes;
  proto::PutBeginReply rep;
  ASSERT_TRUE(engine_->put_begin(session_, {ns_.id, kRootKey, ns_.chunk_bytes(), chain(12, 2)}, rep).ok());
  EXPECT_EQ(host_stats().used_bytes, used + 2 * ns_.chunk_bytes());
  uint64_t n = 0;
  ASSERT_TRUE(engine_->put_abort(session_, std::vector<uint32_t>{rep.slots[0].slot, rep.slots[1].slot}, &n).ok());
  EXPECT_EQ(host_stats().used_bytes, used);
  EXPECT_EQ(cached(chain(12, 2)), 0u);
}

}  // namespace
}  // namespace tierkv::scheduler
