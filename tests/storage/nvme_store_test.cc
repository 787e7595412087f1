// NvmeStore and the I/O backends below it, on real files with real io_uring and RocksDB.
#include "tierkv/storage/nvme_store.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>

#include "nvme_store_util.h"
#include "support/process.h"
#include "tierkv/storage/shm_region.h"

namespace tierkv::storage {
namespace {

using testing::kMiB;
using testing::nvme_options;
using testing::open_and_recover;
using tierkv::testing::TempDir;

// Runs the backend until `n` completions arrived (deadline 10 s).
std::vector<IoCompletion> complete(IoBackend& io, size_t n) {
  std::vector<IoCompletion> out;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  EXPECT_TRUE(io.submit().ok());
  while (out.size() < n && std::chrono::steady_clock::now() < deadline) {
    (void)io.wait(std::chrono::milliseconds(100));
    IoCompletion c[16];
    const size_t got = io.reap(c);
    out.insert(out.end(), c, c + got);
  }
  return out;
}

TEST(NvmeStoreTest, WriteReadBackAndRecoverAfterReopen) {
  TempDir dir;
  auto region = ShmRegion::create("nvme-test", 8 * kMiB, true);
  ASSERT_TRUE(region.ok());
  std::byte* buf = region->data();
  std::mt19937_64 rng(1);
  for (size_t i = 0; i < 64 * 1024; i += 8) {
    const uint64_t x = rng();
    std::memcpy(buf + i, &x, 8);
  }
  ChunkRecord rec;
  {
    std::unique_ptr<NvmeStore> store = open_and_recover(nvme_options(dir.path())).store;
    ASSERT_TRUE(store);
    ASSERT_TRUE(store->io().register_memory(region->data(), region->size()).ok());
    auto cls = store->class_for(64 * 1024);
    ASSERT_TRUE(cls.ok());
    // Two slabs: the second lies in the second directory's file (striping).
    const SlotId a = store->allocate(*cls);
    ASSERT_NE(a, kNoSlot);
    EXPECT_EQ(store->file_of(a), 0u);
    ASSERT_TRUE(store->queue_write(a, buf, 64 * 1024, 7));
    const auto done = complete(store->io(), 1);
    ASSERT_EQ(done.size(), 1u);
    EXPECT_EQ(done[0].user_data, 7u);
    EXPECT_EQ(done[0].result, 64 * 1024);
    rec.ns = 42;
    rec.key = ChunkKey{1, 2};
    rec.slot = a;
    rec.slot_class = static_cast<uint8_t>(*cls);
    rec.stored_bytes = rec.logical_bytes = 64 * 1024;
    rec.checksum = NvmeStore::checksum({buf, 64 * 1024});
    ASSERT_TRUE(store->commit(std::span(&rec, 1)).ok());
    // Read it back into another part of the region.
    ASSERT_TRUE(store->queue_read(a, buf + 4 * kMiB, 64 * 1024, 8));
    ASSERT_EQ(complete(store->io(), 1).at(0).result, 64 * 1024);
    EXPECT_EQ(std::memcmp(buf, buf + 4 * kMiB, 64 * 1024), 0);
  }
  auto [store, got, report] = open_and_recover(nvme_options(dir.path()));
  ASSERT_TRUE(store);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].key, rec.key);
  EXPECT_EQ(got[0].checksum, rec.checksum);
  EXPECT_EQ(report.chunks, 1u);
  // The recovered slot is taken: a new allocation of that class gets another one.
  EXPECT_NE(store->allocate(rec.slot_class), rec.slot);
}

TEST(NvmeStoreTest, RecoversAHundredThousandChunksAndNamesEach) {
  // Recovery reads only the index: 100,000 records come back in well under the seconds the
  // daemon logs (timing is the benchmark's business; this checks every record is restored).
  TempDir dir;
  NvmeOptions o = nvme_options(dir.path());
  o.capacity_bytes = 1ull << 30;  // fallocate'd, not written: 100,000 slots of 8 KiB
  o.min_slot_bytes = 8 << 10;
  constexpr uint32_t kChunks = 100000;
  {
    std::unique_ptr<NvmeStore> store = open_and_recover(o).store;
    ASSERT_TRUE(store);
    const int cls = store->class_for(8 * 1024).value();
    std::vector<ChunkRecord> batch;
    for (uint32_t i = 0; i < kChunks; ++i) {
      ChunkRecord r;
      r.ns = 1 + i % 3;
      r.key = ChunkKey{i, ~uint64_t{i}};
      r.slot = store->allocate(cls);
      ASSERT_NE(r.slot, kNoSlot);
      r.slot_class = static_cast<uint8_t>(cls);
      r.file = store->file_of(r.slot);
      r.offset = store->file_offset(r.slot);
      r.stored_bytes = r.logical_bytes = 8 * 1024;
      batch.push_back(r);
      if (batch.size() == 4096 || i + 1 == kChunks) {
        ASSERT_TRUE(store->commit(batch).ok());
        batch.clear();
      }
    }
  }
  auto [store, got, report] = open_and_recover(o);
  ASSERT_TRUE(store);
  std::vector<bool> seen(kChunks);
  for (const ChunkRecord& r : got) seen.at(r.key.lo) = true;
  EXPECT_EQ(report.chunks, kChunks);
  EXPECT_EQ(std::count(seen.begin(), seen.end(), true), kChunks);
  EXPECT_EQ(store->used_bytes(), uint64_t{kChunks} * 8 * 1024);
  std::printf("recovered %u chunks in %llu ms\n", kChunks,
              static_cast<unsigned long long>(report.millis));
}

TEST(NvmeStoreTest, RecoveryAcceptsEncodedChunksAndDropsRecordsNamingAnotherPlace) {
  TempDir dir;
  ChunkRecord encoded, misplaced;
  {
    std::unique_ptr<NvmeStore> store = open_and_recover(nvme_options(dir.path())).store;
    ASSERT_TRUE(store);
    // An encoded chunk: 30 KiB of zstd for a 64 KiB chunk, in a slot of the smallest class.
    const int cls = store->class_for(30 << 10).value();
    encoded.ns = 1;
    encoded.key = ChunkKey{1, 1};
    encoded.slot = store->allocate(cls);
    encoded.slot_class = static_cast<uint8_t>(cls);
    encoded.file = store->file_of(encoded.slot);
    encoded.offset = store->file_offset(encoded.slot);
    encoded.stored_bytes = 30 << 10;
    encoded.logical_bytes = 64 << 10;
    encoded.codec = Codec::kZstd;
    // A record whose offset is not where its slot lies (an index written under other slab or
    // size-class settings): it must not be trusted.
    misplaced = encoded;
    misplaced.key = ChunkKey{2, 2};
    misplaced.slot = store->allocate(cls);
    misplaced.file = store->file_of(misplaced.slot);
    misplaced.offset = store->file_offset(misplaced.slot) + 4096;
    const ChunkRecord both[] = {encoded, misplaced};
    ASSERT_TRUE(store->commit(both).ok());
  }
  auto [store, got, report] = open_and_recover(nvme_options(dir.path()));
  ASSERT_TRUE(store);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].key, encoded.key);
  EXPECT_EQ(got[0].codec, Codec::kZstd);
  EXPECT_EQ(got[0].stored_bytes, 30u << 10);
  EXPECT_EQ(got[0].logical_bytes, 64u << 10);
  EXPECT_EQ(report.encoded, 1u);
  EXPECT_EQ(report.discarded, 1u);
  EXPECT_EQ(stored_codec_name(Codec::kZstd), "zstd");
}

TEST(NvmeStoreTest, RejectsBadOptionsWithTheirNames) {
  TempDir dir;
  NvmeOptions o = nvme_options(dir.path());
  o.capacity_bytes = 1 * kMiB;  // less than a slab per directory
  auto s = NvmeStore::open(o);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("nvme.capacity"), std::string::npos) << s.status().message();
}

class FaultBackendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = dir_.path() + "/f.bin";
    fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_DIRECT, 0600);
    ASSERT_GE(fd_, 0);
    ASSERT_EQ(::posix_fallocate(fd_, 0, 4 * kMiB), 0);
    buf_ = static_cast<std::byte*>(std::aligned_alloc(4096, 1 * kMiB));
    std::memset(buf_, 0x5C, 1 * kMiB);
  }
  void TearDown() override {
    ::close(fd_);
    std::free(buf_);
  }
  std::unique_ptr<IoBackend> backend(const FaultPlan& plan) {
    auto inner = make_uring_backend({16});
    EXPECT_TRUE(inner.ok());
    auto io = make_fault_injecting_backend(std::move(*inner), plan);
    EXPECT_TRUE(io->register_files(std::span(&fd_, 1)).ok());
    return io;
  }
  IoRequest request(IoOp op, uint64_t offset, uint64_t user) {
    return IoRequest{op, 0, offset, buf_, 64 * 1024, user, 0};
  }

  TempDir dir_;
  std::string path_;
  int fd_ = -1;
  std::byte* buf_ = nullptr;
};

TEST_F(FaultBackendTest, EveryNthReadFailsWithEio) {
  FaultPlan plan;
  plan.read_eio_every = 2;
  auto io = backend(plan);
  for (uint64_t i = 1; i <= 4; ++i) ASSERT_TRUE(io->queue(request(IoOp::kRead, 0, i)));
  auto done = complete(*io, 4);
  ASSERT_EQ(done.size(), 4u);
  for (const auto& c : done) {
    EXPECT_EQ(c.result, c.user_data % 2 == 0 ? -EIO : 64 * 1024) << "request " << c.user_data;
  }
}

TEST_F(FaultBackendTest, ShortReadsReturnHalf) {
  FaultPlan plan;
  plan.short_read_every = 1;
  auto io = backend(plan);
  ASSERT_TRUE(io->queue(request(IoOp::kRead, 0, 1)));
  EXPECT_EQ(complete(*io, 1).at(0).result, 32 * 1024);
}

TEST_F(FaultBackendTest, WritesFailWithEnospcPastTheLimit) {
  FaultPlan plan;
  plan.enospc_after_bytes = 128 * 1024;
  auto io = backend(plan);
  for (uint64_t i = 0; i < 4; ++i) ASSERT_TRUE(io->queue(request(IoOp::kWrite, i * 65536, i)));
  auto done = complete(*io, 4);
  ASSERT_EQ(done.size(), 4u);
  for (const auto& c : done) EXPECT_EQ(c.result, c.user_data < 2 ? 64 * 1024 : -ENOSPC);
}

TEST_F(FaultBackendTest, SlowCompletionsArriveLateButRight) {
  FaultPlan plan;
  plan.slow_every = 1;
  plan.slow_ms = 30;
  auto io = backend(plan);
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(io->queue(request(IoOp::kWrite, 0, 1)));
  auto done = complete(*io, 1);
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].user_data, 1u);
  EXPECT_EQ(done[0].result, 64 * 1024);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(30));
}

// Requests at or above async_min_bytes go to the kernel's I/O workers (IOSQE_ASYNC); below it,
// inline. Both kinds, mixed in one batch, land the bytes where they belong.
TEST_F(FaultBackendTest, AsyncAndInlineRequestsMoveTheSameBytes) {
  IoBackendOptions o;
  o.queue_depth = 16;
  o.async_min_bytes = 128 * 1024;
  auto io = make_uring_backend(o);
  ASSERT_TRUE(io.ok());
  ASSERT_TRUE((*io)->register_files(std::span(&fd_, 1)).ok());
  auto* back = static_cast<std::byte*>(std::aligned_alloc(4096, 1 * kMiB));
  std::mt19937_64 rng(3);
  for (size_t i = 0; i < 1 * kMiB; i += 8) {
    const uint64_t x = rng();
    std::memcpy(buf_ + i, &x, 8);
  }
  // 64 KiB (inline) at 0, 256 KiB (async) at 64 KiB, 704 KiB (async) at 320 KiB.
  const uint32_t lens[3] = {64 << 10, 256 << 10, 704 << 10};
  uint64_t at = 0;
  for (uint64_t i = 0; i < 3; ++i) {
    ASSERT_TRUE((*io)->queue(IoRequest{IoOp::kWrite, 0, at, buf_ + at, lens[i], i, 0}));
    at += lens[i];
  }
  auto done = complete(**io, 3);
  ASSERT_EQ(done.size(), 3u);
  for (const auto& c : done) EXPECT_EQ(c.result, static_cast<int32_t>(lens[c.user_data]));
  at = 0;
  for (uint64_t i = 0; i < 3; ++i) {
    ASSERT_TRUE((*io)->queue(IoRequest{IoOp::kRead, 0, at, back + at, lens[i], 10 + i, 0}));
    at += lens[i];
  }
  done = complete(**io, 3);
  ASSERT_EQ(done.size(), 3u);
  for (const auto& c : done) EXPECT_EQ(c.result, static_cast<int32_t>(lens[c.user_data - 10]));
  EXPECT_EQ(std::memcmp(buf_, back, 1 * kMiB), 0);
  const IoCounters n = (*io)->counters();
  EXPECT_EQ(n.submits, 2u);
  EXPECT_GT(n.busy_ns, 0u);
  EXPECT_GE(n.depth_ns, n.busy_ns);
  std::free(back);
}

TEST(SlabSlotPoolRestoreTest, RestoresExactlyTheNamedSlots) {
  SlabSlotPool pool(SlotPoolOptions{"nvme", 16 * kMiB, 4 * kMiB, 64 * 1024});
  const int cls = pool.class_for(64 * 1024).value();
  const SlotId a = 3, b = 70;  // slab 0 and slab 1
  const SlabSlotPool::RestoredSlot slots[] = {{a, cls}, {b, cls}};
  ASSERT_TRUE(pool.restore(slots).ok());
  EXPECT_TRUE(pool.is_allocated(a));
  EXPECT_TRUE(pool.is_allocated(b));
  EXPECT_EQ(pool.used_bytes(), 2 * 64 * 1024u);
  // Every other slot of the class can still be had, and never a restored one.
  for (int i = 0; i < 2 * 64 - 2; ++i) {
    const SlotId s = pool.allocate(cls);
    ASSERT_NE(s, kNoSlot);
    ASSERT_NE(s, a);
    ASSERT_NE(s, b);
  }
  // A slot named twice is rejected and leaves the pool empty.
  SlabSlotPool fresh(SlotPoolOptions{"nvme", 16 * kMiB, 4 * kMiB, 64 * 1024});
  const SlabSlotPool::RestoredSlot twice[] = {{a, cls}, {a, cls}};
  EXPECT_FALSE(fresh.restore(twice).ok());
  EXPECT_EQ(fresh.used_bytes(), 0u);
}

}  // namespace
}  // namespace tierkv::storage
