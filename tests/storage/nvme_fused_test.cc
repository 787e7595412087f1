// Fused chunks on the NVMe tier: their representatives persist in the RocksDB index beside the
// chunk records, survive a restart (and a kill -9) under the same ids, and go when the last
// chunk that refers to them goes. Real files, real io_uring, real RocksDB.
#include <gtest/gtest.h>
#include <rocksdb/db.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <functional>
#include <map>
#include <random>
#include <set>

#include "codec_test_util.h"
#include "nvme_store_util.h"
#include "support/process.h"
#include "tierkv/storage/codec.h"
#include "tierkv/storage/nvme_store.h"
#include "tierkv/storage/representative_store.h"
#include "tierkv/storage/shm_region.h"

namespace tierkv::storage {
namespace {

using testing::kMiB;
using tierkv::testing::TempDir;

constexpr NamespaceId kNs = 7;
constexpr const char* kSpec = "fused:0.9:b8:rep=int8:res=int4";

Layout layout() {
  Layout l;
  l.num_layers = 2;
  l.num_kv_heads = 2;
  l.head_dim = 32;
  l.dtype = DType::kBFloat16;
  l.chunk_tokens = 32;
  return l;
}

// Chunks that fuse: a few bases, and copies of them with a little noise.
std::vector<std::vector<std::byte>> make_chunks(uint32_t count, uint32_t seed) {
  const Layout l = layout();
  std::vector<std::vector<std::byte>> bases;
  for (uint32_t b = 0; b < 3; ++b) bases.push_back(testing::kv_like_chunk(l, seed * 10 + b));
  std::mt19937 rng(seed);
  std::normal_distribution<float> noise(0.0f, 0.01f);
  std::vector<std::vector<std::byte>> out;
  for (uint32_t i = 0; i < count; ++i) {
    auto x = testing::to_f32(l.dtype, bases[i % bases.size()]);
    if (i >= bases.size()) {
      for (auto& v : x) v += noise(rng);
    }
    std::vector<std::byte> c(l.chunk_bytes());
    kernels::convert_from_f32(l.dtype, x.data(), x.size(), c.data());
    out.push_back(std::move(c));
  }
  return out;
}

ChunkKey key_of(uint32_t i) { return ChunkKey{0x1000 + i, 0xabc}; }

// Waits for `n` I/O completions (deadline 10 s); all must succeed.
void complete(IoBackend& io, size_t n) {
  ASSERT_TRUE(io.submit().ok());
  size_t got = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (got < n && std::chrono::steady_clock::now() < deadline) {
    (void)io.wait(std::chrono::milliseconds(100));
    IoCompletion c[16];
    const size_t k = io.reap(c);
    for (size_t i = 0; i < k; ++i) ASSERT_GE(c[i].result, 0);
    got += k;
  }
  ASSERT_EQ(got, n);
}

// A store open on `dir` with its representatives in `reps`, recovered, `region` registered for
// its I/O.
testing::RecoveredStore open_store(const std::string& dir, RepresentativeStore* reps,
                                   ShmRegion& region, uint64_t capacity = 64 * kMiB) {
  testing::RecoveredStore o = testing::open_and_recover(testing::nvme_options(dir, capacity), reps);
  if (o.store) {
    EXPECT_TRUE(o.store->io().register_memory(region.data(), region.size()).ok());
  }
  return o;
}

// Encodes `chunks` in one batch, writes each to its slot (`slot_for` picks it) and commits them
// with their reference lists. Returns each chunk's decoded bytes, as decoded before any restart;
// `refs`, if given, gets each chunk's reference list.
std::vector<std::vector<std::byte>> write_fused(
    NvmeStore& store, RepresentativeStore& reps, ShmRegion& region,
    const std::vector<std::vector<std::byte>>& chunks, uint32_t first_key,
    const std::function<SlotId(int cls)>& slot_for,
    std::vector<std::vector<RepId>>* refs_out = nullptr) {
  const Layout l = layout();
  auto codec = make_codec(kSpec, &reps);
  EXPECT_TRUE(codec.ok());
  std::vector<ChunkInput> in;
  for (const auto& c : chunks) in.push_back({c, 0});
  std::vector<EncodeBuffer> enc(chunks.size());
  EXPECT_TRUE((*codec)->encode_batch(l, in, enc).ok());
  std::vector<ChunkRecord> records;
  std::vector<std::vector<RepId>> ids;
  std::vector<std::vector<std::byte>> decoded;
  uint64_t at = 0;
  for (size_t i = 0; i < chunks.size(); ++i) {
    const auto bytes = enc[i].bytes();
    auto cls = store.class_for(bytes.size());
    EXPECT_TRUE(cls.ok());
    ChunkRecord r;
    r.ns = kNs;
    r.key = key_of(first_key + static_cast<uint32_t>(i));
    r.slot = slot_for(*cls);
    EXPECT_NE(r.slot, kNoSlot);
    r.file = store.file_of(r.slot);
    r.offset = store.file_offset(r.slot);
    r.stored_bytes = static_cast<uint32_t>(bytes.size());
    r.logical_bytes = static_cast<uint32_t>(l.chunk_bytes());
    r.checksum = NvmeStore::checksum(bytes);
    r.slot_class = static_cast<uint8_t>(*cls);
    std::memcpy(region.data() + at, bytes.data(), bytes.size());
    EXPECT_TRUE(store.queue_write(r.slot, region.data() + at, r.stored_bytes, i));
    at += NvmeStore::io_length(bytes.size());
    records.push_back(r);
    auto refs = fused_chunk_references(bytes);
    EXPECT_TRUE(refs.ok());
    ids.push_back(std::move(refs).value());
    std::vector<std::byte> out(l.chunk_bytes());
    EXPECT_TRUE(ChunkDecoder(&reps).decode(bytes, out).ok());
    decoded.push_back(std::move(out));
  }
  complete(store.io(), chunks.size());
  std::vector<FusedChunkRefs> fused;
  for (size_t i = 0; i < records.size(); ++i) fused.push_back({kNs, records[i].key, ids[i]});
  EXPECT_TRUE(store.commit(records, fused).ok());
  if (refs_out != nullptr) *refs_out = std::move(ids);
  return decoded;
}

// Reads a recorded chunk back and decodes it with `reps`.
std::vector<std::byte> read_and_decode(NvmeStore& store, RepresentativeStore& reps,
                                       ShmRegion& region, const ChunkRecord& r) {
  EXPECT_TRUE(store.queue_read(r.slot, region.data(), r.stored_bytes, 1));
  complete(store.io(), 1);
  const std::span<const std::byte> bytes(region.data(), r.stored_bytes);
  EXPECT_EQ(NvmeStore::checksum(bytes), r.checksum);
  std::vector<std::byte> out(layout().chunk_bytes());
  const Status s = ChunkDecoder(&reps).decode(bytes, out);
  EXPECT_TRUE(s.ok()) << s.to_string();
  return out;
}

// Every reference list's ids, with multiplicity, over the given records.
std::map<RepId, uint32_t> reference_counts(NvmeStore& store, RepresentativeStore& reps,
                                           ShmRegion& region,
                                           const std::vector<ChunkRecord>& records) {
  std::map<RepId, uint32_t> counts;
  for (const ChunkRecord& r : records) {
    EXPECT_TRUE(store.queue_read(r.slot, region.data(), r.stored_bytes, 1));
    complete(store.io(), 1);
    auto ids = fused_chunk_references({region.data(), r.stored_bytes});
    EXPECT_TRUE(ids.ok());
    for (RepId id : *ids) ++counts[id];
  }
  (void)reps;
  return counts;
}

SlotId any_slot(NvmeStore& store, int cls) { return store.allocate(cls); }

// Each test's directory (a store's two NVMe directories lie in it) and the shared-memory region
// chunks are written from and read into.
class NvmeFusedTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto region = ShmRegion::create("nvme-fused", 4 * kMiB, true);
    ASSERT_TRUE(region.ok()) << region.status().to_string();
    region_ = std::move(region).value();
  }

  TempDir dir_;
  ShmRegion region_;
};

TEST_F(NvmeFusedTest, RestartKeepsFusedChunksDecodableBitForBit) {
  const auto chunks = make_chunks(8, 1);
  std::vector<std::vector<std::byte>> decoded;
  uint64_t reps_before = 0;
  {
    RepresentativeStore reps;
    auto o = open_store(dir_.path(), &reps, region_);
    ASSERT_TRUE(o.store);
    decoded = write_fused(*o.store, reps, region_, chunks, 0,
                          [&](int cls) { return any_slot(*o.store, cls); });
    reps_before = reps.stats().count;
    ASSERT_GT(reps_before, 0u);
    // Fusion happened: fewer representatives than blocks.
    ASSERT_LT(reps_before, chunks.size() * 2 * 2 * 2 * 4);
    EXPECT_EQ(o.store->persisted_representatives(), reps_before);
  }
  RepresentativeStore reps;
  auto o = open_store(dir_.path(), &reps, region_);
  ASSERT_TRUE(o.store);
  ASSERT_EQ(o.records.size(), chunks.size());
  EXPECT_EQ(o.report.fused_chunks, chunks.size());
  EXPECT_EQ(o.report.representatives, reps_before);
  EXPECT_EQ(o.report.orphan_representatives, 0u);
  EXPECT_EQ(reps.stats().count, reps_before);
  for (const ChunkRecord& r : o.records) {
    const uint32_t i = static_cast<uint32_t>(r.key.lo - 0x1000);
    ASSERT_LT(i, decoded.size());
    EXPECT_EQ(read_and_decode(*o.store, reps, region_, r), decoded[i]) << "chunk " << i;
  }
  // Each restored representative holds one reference per entry that names it.
  const auto counts = reference_counts(*o.store, reps, region_, o.records);
  EXPECT_EQ(counts.size(), reps_before);
  for (const auto& [id, n] : counts) EXPECT_EQ(reps.references(id), n) << id;
  // New representatives never take a restored id.
  const RepId fresh = reps.add(RepresentativeInfo{}, {});
  EXPECT_FALSE(counts.contains(fresh));
}

TEST_F(NvmeFusedTest, ErasingChunksFreesTheirRepresentatives) {
  const auto chunks = make_chunks(6, 2);
  {
    RepresentativeStore reps;
    auto o = open_store(dir_.path(), &reps, region_);
    ASSERT_TRUE(o.store);
    (void)write_fused(*o.store, reps, region_, chunks, 0,
                      [&](int cls) { return any_slot(*o.store, cls); });
    const uint64_t all = o.store->persisted_representatives();
    // Chunk 0 shares its representatives with chunk 3 (its noisy copy): erasing 0 keeps them.
    std::vector<std::pair<NamespaceId, ChunkKey>> first{{kNs, key_of(0)}};
    ASSERT_TRUE(o.store->erase(first).ok());
    EXPECT_LE(o.store->persisted_representatives(), all);
    EXPECT_EQ(reps.stats().count, o.store->persisted_representatives());
    std::vector<std::pair<NamespaceId, ChunkKey>> rest;
    for (uint32_t i = 1; i < chunks.size(); ++i) rest.push_back({kNs, key_of(i)});
    ASSERT_TRUE(o.store->erase(rest).ok());
    EXPECT_EQ(o.store->persisted_representatives(), 0u);
    EXPECT_EQ(reps.stats().count, 0u) << "the NVMe copies' references were released";
    EXPECT_EQ(reps.stats().references, 0u);
  }
  RepresentativeStore reps;
  auto o = open_store(dir_.path(), &reps, region_);
  ASSERT_TRUE(o.store);
  EXPECT_TRUE(o.records.empty());
  EXPECT_EQ(o.report.representatives, 0u);
  EXPECT_EQ(o.report.orphan_representatives, 0u) << "the erase batch took them with it";
  EXPECT_EQ(reps.stats().count, 0u);
}

// A daemon killed (SIGKILL) between commits and erases: every chunk it committed and did not
// erase decodes as written; the index holds exactly the representatives they refer to.
TEST_F(NvmeFusedTest, KilledMidwayRecoversWithoutOrphans) {
  const auto batch1 = make_chunks(6, 3);
  const auto batch2 = make_chunks(5, 4);
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    RepresentativeStore reps;
    auto o = open_store(dir_.path(), &reps, region_);
    if (!o.store) ::_exit(2);
    (void)write_fused(*o.store, reps, region_, batch1, 0,
                      [&](int cls) { return any_slot(*o.store, cls); });
    std::vector<std::pair<NamespaceId, ChunkKey>> gone{{kNs, key_of(1)}, {kNs, key_of(4)}};
    if (!o.store->erase(gone).ok()) ::_exit(3);
    (void)write_fused(*o.store, reps, region_, batch2, 100,
                      [&](int cls) { return any_slot(*o.store, cls); });
    ::kill(::getpid(), SIGKILL);
    ::_exit(4);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << status;

  // What the chunks decode to, by the same encoding in this process (it is deterministic).
  std::map<uint64_t, std::vector<std::byte>> expect;
  {
    TempDir scratch;
    RepresentativeStore reps;
    auto o = open_store(scratch.path(), &reps, region_);
    ASSERT_TRUE(o.store);
    auto d1 = write_fused(*o.store, reps, region_, batch1, 0,
                          [&](int cls) { return any_slot(*o.store, cls); });
    auto d2 = write_fused(*o.store, reps, region_, batch2, 100,
                          [&](int cls) { return any_slot(*o.store, cls); });
    for (uint32_t i = 0; i < d1.size(); ++i) {
      if (i != 1 && i != 4) expect[key_of(i).lo] = d1[i];
    }
    for (uint32_t i = 0; i < d2.size(); ++i) expect[key_of(100 + i).lo] = d2[i];
  }
  RepresentativeStore reps;
  auto o = open_store(dir_.path(), &reps, region_);
  ASSERT_TRUE(o.store);
  ASSERT_EQ(o.records.size(), expect.size());
  EXPECT_EQ(o.report.orphan_representatives, 0u);
  for (const ChunkRecord& r : o.records) {
    ASSERT_TRUE(expect.contains(r.key.lo));
    EXPECT_EQ(read_and_decode(*o.store, reps, region_, r), expect[r.key.lo]);
  }
  const auto counts = reference_counts(*o.store, reps, region_, o.records);
  EXPECT_EQ(o.store->persisted_representatives(), counts.size());
  EXPECT_EQ(reps.stats().count, counts.size());
  uint64_t refs = 0;
  for (const auto& [id, n] : counts) refs += n;
  EXPECT_EQ(reps.stats().references, refs);
}

// Records that do not fit a smaller tier are dropped at recovery; the representatives only they
// referred to become orphans and go too, while the chunks that stay keep theirs.
TEST_F(NvmeFusedTest, ChunksDroppedAtRecoveryTakeTheirRepresentativesWithThem) {
  const auto low = make_chunks(3, 5);
  const auto high = make_chunks(3, 6);  // other bases: representatives of their own
  std::vector<std::vector<std::byte>> low_decoded;
  {
    RepresentativeStore reps;
    auto o = open_store(dir_.path(), &reps, region_);
    ASSERT_TRUE(o.store);
    low_decoded = write_fused(*o.store, reps, region_, low, 0,
                              [&](int cls) { return any_slot(*o.store, cls); });
    // Slots in the last slabs, which a 16 MiB tier no longer has.
    std::vector<SlotId> taken;
    const uint64_t cutoff = 16 * kMiB;
    (void)write_fused(*o.store, reps, region_, high, 100, [&](int cls) {
      for (;;) {
        const SlotId s = o.store->allocate(cls);
        if (s == kNoSlot) return s;
        if (o.store->file_offset(s) * 2 >= cutoff) return s;
        taken.push_back(s);
      }
    });
  }
  RepresentativeStore reps;
  auto o = open_store(dir_.path(), &reps, region_, 16 * kMiB);
  ASSERT_TRUE(o.store);
  ASSERT_EQ(o.records.size(), low.size());
  EXPECT_GE(o.report.discarded, high.size());
  EXPECT_GT(o.report.orphan_representatives, 0u);
  for (const ChunkRecord& r : o.records) {
    EXPECT_EQ(read_and_decode(*o.store, reps, region_, r), low_decoded[r.key.lo - 0x1000]);
  }
  const auto counts = reference_counts(*o.store, reps, region_, o.records);
  EXPECT_EQ(reps.stats().count, counts.size());
  EXPECT_EQ(o.store->persisted_representatives(), counts.size());
}

// A chunk whose representative record is missing from the index (lost some other way) is not
// served: recovery removes it rather than decode it wrong.
TEST_F(NvmeFusedTest, AChunkMissingARepresentativeIsDropped) {
  const auto a = make_chunks(1, 7);
  const auto b = make_chunks(1, 8);
  RepId victim = kNoRep;
  {
    RepresentativeStore reps;
    auto o = open_store(dir_.path(), &reps, region_);
    ASSERT_TRUE(o.store);
    std::vector<std::vector<RepId>> a_refs, b_refs;
    (void)write_fused(
        *o.store, reps, region_, a, 0, [&](int c) { return any_slot(*o.store, c); }, &a_refs);
    (void)write_fused(
        *o.store, reps, region_, b, 1, [&](int c) { return any_slot(*o.store, c); }, &b_refs);
    // A representative only chunk b refers to.
    const std::set<RepId> of_a(a_refs[0].begin(), a_refs[0].end());
    for (RepId id : b_refs[0]) {
      if (!of_a.contains(id)) victim = id;
    }
    ASSERT_NE(victim, kNoRep);
  }
  {
    // Delete that representative's record behind the store's back.
    rocksdb::DB* raw = nullptr;
    ASSERT_TRUE(rocksdb::DB::Open(rocksdb::Options(), dir_.path() + "/a/index", &raw).ok());
    std::unique_ptr<rocksdb::DB> db(raw);
    std::string k(9, '\0');
    k[0] = 'r';
    for (int i = 0; i < 8; ++i) k[1 + i] = static_cast<char>(victim >> (56 - 8 * i));
    std::string v;
    ASSERT_TRUE(db->Get(rocksdb::ReadOptions(), k, &v).ok()) << "the record exists";
    ASSERT_TRUE(db->Delete(rocksdb::WriteOptions(), k).ok());
  }
  RepresentativeStore reps;
  auto o = open_store(dir_.path(), &reps, region_);
  ASSERT_TRUE(o.store);
  ASSERT_EQ(o.records.size(), 1u);
  EXPECT_EQ(o.records[0].key, key_of(0));
  EXPECT_EQ(o.report.discarded, 1u);
  (void)read_and_decode(*o.store, reps, region_, o.records[0]);
  EXPECT_EQ(reps.stats().count, o.store->persisted_representatives());
}

TEST_F(NvmeFusedTest, CommitRefusesFusedChunksItCannotPersist) {
  RepresentativeStore reps;
  auto o = open_store(dir_.path(), nullptr, region_);
  ASSERT_TRUE(o.store);
  ChunkRecord r;
  r.ns = kNs;
  r.key = key_of(0);
  const RepId id = reps.add(RepresentativeInfo{}, {});
  const RepId ids[] = {id};
  const FusedChunkRefs refs{kNs, key_of(0), ids};
  EXPECT_FALSE(o.store->commit({&r, 1}, {&refs, 1}).ok()) << "no representative store";
  o.store->set_representatives(&reps);
  const FusedChunkRefs other{kNs, key_of(9), ids};
  EXPECT_FALSE(o.store->commit({&r, 1}, {&other, 1}).ok()) << "names no record";
  const RepId missing[] = {id + 1};
  const FusedChunkRefs gone{kNs, key_of(0), missing};
  EXPECT_FALSE(o.store->commit({&r, 1}, {&gone, 1}).ok()) << "not in the store";
  EXPECT_EQ(o.store->persisted_representatives(), 0u);
  EXPECT_TRUE(o.store->commit({&r, 1}, {&refs, 1}).ok());
  EXPECT_EQ(o.store->persisted_representatives(), 1u);
}

}  // namespace
}  // namespace tierkv::storage
