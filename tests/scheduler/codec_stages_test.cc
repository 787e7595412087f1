// The NVMe tier's encoded-chunk machinery below the engine: the staging pool (bounded, 4 KiB
// aligned runs, first fit, never overlapping) and the codec stages (encode into staging, decode
// with both checksums checked, completions signalled on an eventfd).
#include "codec_stages.h"

#include <gtest/gtest.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cstring>
#include <random>

#include "staging_pool.h"
#include "support/process.h"
#include "tierkv/storage/nvme_store.h"

namespace tierkv::scheduler {
namespace {

using namespace std::chrono_literals;
constexpr uint64_t kPage = StagingPool::kPageBytes;

TEST(StagingPoolTest, BuffersArePageAlignedRunsAndTheMemoryIsBounded) {
  auto pool = StagingPool::create(8 * kPage);
  ASSERT_TRUE(pool.ok());
  StagingPool& p = **pool;
  EXPECT_EQ(p.capacity_bytes(), 8 * kPage);
  const auto a = p.allocate(1);  // rounded up to a page
  const auto b = p.allocate(kPage + 1);
  ASSERT_TRUE(a.valid() && b.valid());
  EXPECT_EQ(a.bytes(), kPage);
  EXPECT_EQ(b.bytes(), 2 * kPage);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(p.data(a)) % kPage, 0u);
  EXPECT_EQ(p.data(b), p.data(a) + kPage);
  EXPECT_EQ(p.used_bytes(), 3 * kPage);
  EXPECT_FALSE(p.allocate(6 * kPage).valid());  // 5 pages left
  EXPECT_FALSE(p.allocate(9 * kPage).valid());  // more than there is, ever
  const auto c = p.allocate(5 * kPage);
  ASSERT_TRUE(c.valid());
  EXPECT_FALSE(p.allocate(1).valid());  // full: the caller waits
  p.free(b);
  EXPECT_EQ(p.used_bytes(), 6 * kPage);
  const auto d = p.allocate(2 * kPage);  // the hole b left, found by wrapping round
  ASSERT_TRUE(d.valid());
  EXPECT_EQ(d.first, b.first);
  p.free(a);
  p.free(c);
  p.free(d);
  p.free(StagingPool::Buffer{});  // no-op
  EXPECT_EQ(p.used_bytes(), 0u);
  EXPECT_TRUE(p.allocate(8 * kPage).valid());
}

TEST(StagingPoolTest, RandomAllocationsNeverOverlap) {
  constexpr uint32_t kPages = 300;  // not a multiple of 64: the last word is partial
  auto pool = StagingPool::create(kPages * kPage);
  ASSERT_TRUE(pool.ok());
  StagingPool& p = **pool;
  std::vector<int> owner(kPages, -1);
  std::vector<StagingPool::Buffer> live;
  std::mt19937 rng(5);
  uint64_t used = 0, failed = 0;
  for (int step = 0; step < 20000; ++step) {
    if (live.empty() || rng() % 2 == 0) {
      const uint64_t bytes = 1 + rng() % (rng() % 8 == 0 ? 100 * kPage : 6 * kPage);
      const auto b = p.allocate(bytes);
      if (!b.valid()) {
        ++failed;
        continue;
      }
      ASSERT_GE(b.bytes(), bytes);
      ASSERT_LE(b.first + b.pages, kPages);
      for (uint32_t q = b.first; q < b.first + b.pages; ++q) {
        ASSERT_EQ(owner[q], -1) << "page " << q << " handed out twice";
        owner[q] = step;
      }
      used += b.pages;
      live.push_back(b);
    } else {
      const size_t i = rng() % live.size();
      for (uint32_t q = live[i].first; q < live[i].first + live[i].pages; ++q) owner[q] = -1;
      used -= live[i].pages;
      p.free(live[i]);
      live[i] = live.back();
      live.pop_back();
    }
    ASSERT_EQ(p.used_bytes(), used * kPage);
  }
  EXPECT_GT(failed, 0u);  // the pool did fill up now and then
}

// A chunk with KV-like bytes that zstd compresses: bf16 values of a smooth signal.
std::vector<std::byte> compressible_chunk(const Layout& layout, uint32_t seed) {
  std::vector<std::byte> out(layout.chunk_bytes());
  std::mt19937 rng(seed);
  for (size_t i = 0; i + 1 < out.size(); i += 2) {
    out[i] = static_cast<std::byte>(rng() % 8);
    out[i + 1] = static_cast<std::byte>(0x3f);
  }
  return out;
}

class CodecStagesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    efd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    ASSERT_GE(efd_, 0);
  }
  void TearDown() override { ::close(efd_); }

  std::unique_ptr<CodecStages> make(std::vector<std::string> specs, uint32_t threads = 2) {
    CodecStageOptions o;
    for (const auto& s : specs) o.codecs.push_back(*storage::CodecConfig::parse(s));
    o.encode_threads = threads;
    o.decode_threads = threads;
    o.notify_fd = efd_;
    auto s = CodecStages::create(o);
    EXPECT_TRUE(s.ok()) << s.status().to_string();
    return s.ok() ? std::move(s).value() : nullptr;
  }

  // Waits (with a deadline) until `n` jobs finished; the eventfd says when to look.
  std::vector<CodecJob> wait_done(CodecStages& stages, size_t n) {
    std::vector<CodecJob> done;
    EXPECT_TRUE(testing::wait_until(
        [&] {
          uint64_t v;
          (void)!::read(efd_, &v, sizeof(v));
          stages.take_done(done);
          return done.size() >= n;
        },
        30s));
    return done;
  }

  int efd_ = -1;
  const Layout layout_{2, 2, 64, DType::kBFloat16, 64};  // 64 KiB chunks
};

TEST_F(CodecStagesTest, EncodesIntoStagingAndDecodesBackExactly) {
  auto stages = make({"raw", "zstd"});
  ASSERT_TRUE(stages);
  auto pool = StagingPool::create(16 << 20);
  ASSERT_TRUE(pool.ok());
  constexpr int kChunks = 12;
  std::vector<std::vector<std::byte>> chunks;
  std::vector<StagingPool::Buffer> bufs;
  for (int i = 0; i < kChunks; ++i) {
    chunks.push_back(compressible_chunk(layout_, i));
    const auto b = (*pool)->allocate(staging_bytes_for_encode(layout_.chunk_bytes()));
    ASSERT_TRUE(b.valid());
    std::memset((*pool)->data(b), 0xEE, b.bytes());  // stale bytes the padding must not keep
    bufs.push_back(b);
    CodecJob job;
    job.kind = CodecJob::Kind::kEncode;
    job.codec = 1;
    job.layout = layout_;
    job.src = chunks.back().data();
    job.src_bytes = chunks.back().size();
    job.dst = (*pool)->data(b);
    job.dst_bytes = b.bytes();
    job.token = static_cast<uint64_t>(i);
    ASSERT_TRUE(stages->submit(std::move(job)).ok());
  }
  auto encoded = wait_done(*stages, kChunks);
  ASSERT_EQ(encoded.size(), static_cast<size_t>(kChunks));
  std::vector<std::vector<std::byte>> decoded(kChunks,
                                              std::vector<std::byte>(layout_.chunk_bytes()));
  for (CodecJob& e : encoded) {
    ASSERT_TRUE(e.status.ok()) << e.status.to_string();
    ASSERT_FALSE(e.as_is);
    EXPECT_EQ(e.out_codec, storage::CodecId::kZstd);
    EXPECT_LT(e.out_bytes, layout_.chunk_bytes() / 2);
    EXPECT_EQ(e.checksum, storage::NvmeStore::checksum({e.dst, e.out_bytes}));
    // The page-rounded tail the O_DIRECT write covers is zeros.
    const uint64_t padded = storage::NvmeStore::io_length(e.out_bytes);
    for (uint64_t k = e.out_bytes; k < padded; ++k) ASSERT_EQ(e.dst[k], std::byte{0});
    CodecJob d;
    d.kind = CodecJob::Kind::kDecode;
    d.src = e.dst;
    d.src_bytes = e.out_bytes;
    d.dst = decoded[e.token].data();
    d.dst_bytes = decoded[e.token].size();
    d.checksum = e.checksum;
    d.token = e.token;
    ASSERT_TRUE(stages->submit(std::move(d)).ok());
  }
  auto done = wait_done(*stages, kChunks);
  for (const CodecJob& d : done) {
    ASSERT_TRUE(d.status.ok()) << d.status.to_string();
    EXPECT_EQ(decoded[d.token], chunks[d.token]) << "chunk " << d.token;
  }
  const auto st = stages->stats();
  ASSERT_EQ(st.size(), 2u);
  EXPECT_EQ(st[0].stage.name, "encode");
  EXPECT_EQ(st[0].stage.items, static_cast<uint64_t>(kChunks));
  EXPECT_EQ(st[0].workers, 2u);
  EXPECT_GE(st[0].stage.batch_size, 1u);
  EXPECT_EQ(st[1].stage.name, "decode");
  EXPECT_EQ(st[1].stage.items, static_cast<uint64_t>(kChunks));
}

TEST_F(CodecStagesTest, IncompressibleChunksAreStoredAsTheyAre) {
  auto stages = make({"raw", "zstd"}, 1);
  ASSERT_TRUE(stages);
  std::vector<std::byte> noise(layout_.chunk_bytes());
  std::mt19937_64 rng(3);
  for (size_t i = 0; i + 8 <= noise.size(); i += 8) {
    const uint64_t x = rng();
    std::memcpy(noise.data() + i, &x, 8);
  }
  std::vector<std::byte> staging(staging_bytes_for_encode(noise.size()));
  CodecJob job;
  job.codec = 1;
  job.layout = layout_;
  job.src = noise.data();
  job.src_bytes = noise.size();
  job.dst = staging.data();
  job.dst_bytes = staging.size();
  ASSERT_TRUE(stages->submit(std::move(job)).ok());
  auto done = wait_done(*stages, 1);
  ASSERT_EQ(done.size(), 1u);
  ASSERT_TRUE(done[0].status.ok());
  EXPECT_TRUE(done[0].as_is);
  EXPECT_EQ(done[0].out_bytes, noise.size());
  EXPECT_EQ(done[0].checksum, storage::NvmeStore::checksum(noise));
}

TEST_F(CodecStagesTest, DecodeRejectsDamagedOrMismatchedBytes) {
  auto stages = make({"raw", "fp8"}, 1);
  ASSERT_TRUE(stages);
  const auto chunk = compressible_chunk(layout_, 9);
  storage::EncodeBuffer enc;
  auto codec = storage::make_codec("fp8");
  ASSERT_TRUE(codec.ok());
  ASSERT_TRUE((*codec)->encode(layout_, chunk, enc).ok());
  std::vector<std::byte> stored(enc.bytes().begin(), enc.bytes().end());
  std::vector<std::byte> out(chunk.size(), std::byte{0x55});
  const auto decode = [&](uint64_t checksum) {
    CodecJob d;
    d.kind = CodecJob::Kind::kDecode;
    d.src = stored.data();
    d.src_bytes = stored.size();
    d.dst = out.data();
    d.dst_bytes = out.size();
    d.checksum = checksum;
    EXPECT_TRUE(stages->submit(std::move(d)).ok());
    auto done = wait_done(*stages, 1);
    return done.empty() ? Status::Internal("no completion") : done[0].status;
  };
  // The index's checksum does not match the bytes read: refused before decoding.
  EXPECT_FALSE(decode(storage::NvmeStore::checksum(stored) ^ 1).ok());
  EXPECT_EQ(out, std::vector<std::byte>(chunk.size(), std::byte{0x55}));
  // A flipped payload byte under a checksum that matches it (damage before the record was
  // written): the chunk's own payload checksum catches it.
  stored[storage::kChunkHeaderBytes + 100] ^= std::byte{0x10};
  const Status s = decode(storage::NvmeStore::checksum(stored));
  EXPECT_FALSE(s.ok());
  stored[storage::kChunkHeaderBytes + 100] ^= std::byte{0x10};
  EXPECT_TRUE(decode(storage::NvmeStore::checksum(stored)).ok());
}

TEST_F(CodecStagesTest, RefusesABadCodecTable) {
  CodecStageOptions o;
  EXPECT_FALSE(CodecStages::create(o).ok());  // no codecs
  o.codecs.push_back(storage::CodecConfig{});
  o.encode_threads = 0;
  EXPECT_FALSE(CodecStages::create(o).ok());
}

TEST(StagingBytesTest, CoverTheHeaderAndZstdsWorstCase) {
  for (uint64_t logical : {uint64_t{4096}, uint64_t{65536}, uint64_t{73728}, uint64_t{32} << 20}) {
    const uint64_t s = staging_bytes_for_encode(logical);
    EXPECT_EQ(s % 4096, 0u);
    EXPECT_GE(s, storage::kChunkHeaderBytes + logical + logical / 256 + 64 + 32);
  }
}

}  // namespace
}  // namespace tierkv::scheduler
