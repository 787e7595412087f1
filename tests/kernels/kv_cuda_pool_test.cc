// The gather/scatter kernels with chunks named by offsets into a pool (ChunkBuffer::chunk_offsets,
// as the daemon's GPU tier hands them out), against the CPU references, byte for byte: chunks at
// scattered offsets, some skipped (kSkipChunk), a layer group at a time. Caches and pool are
// poisoned first and compared whole, so a byte written wrongly, not at all, or for a skipped
// chunk fails. Skips, saying why, where no CUDA device is visible.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "tierkv/kernels/kv_cuda.h"
#include "tierkv/kernels/paged_kv.h"

namespace tierkv::kernels::cuda {
namespace {

constexpr uint32_t kLayers = 2, kHeads = 2, kDim = 64, kElem = 2;
constexpr uint32_t kChunkTokens = 16, kBlockSize = 8, kNumBlocks = 32;
constexpr uint64_t kRow = uint64_t{kHeads} * kDim * kElem;              // 256 bytes
constexpr uint64_t kLayerChunk = 2 * uint64_t{kChunkTokens} * kRow;     // 8 KiB
constexpr uint64_t kChunk = kLayers * kLayerChunk;                      // 16 KiB
constexpr uint64_t kTensor = uint64_t{kNumBlocks} * kBlockSize * kRow;  // 64 KiB
constexpr uint32_t kPoolSlots = 8;
constexpr std::byte kPoison{0xCD};

template <typename T>
T* device_alloc(size_t bytes) {
  void* p = nullptr;
  return cudaMalloc(&p, bytes) == cudaSuccess ? static_cast<T*>(p) : nullptr;
}

class KvCudaPoolTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const Status gpu = device_available();
    if (!gpu.ok()) GTEST_SKIP() << "no GPU: " << gpu.message();
    std::mt19937_64 rng(99);
    for (int i = 0; i < 2 * static_cast<int>(kLayers); ++i) {
      host_.emplace_back(kTensor, kPoison);
      dev_.push_back(device_alloc<std::byte>(kTensor));
      ASSERT_NE(dev_.back(), nullptr);
      ASSERT_EQ(cudaMemset(dev_.back(), static_cast<int>(kPoison), kTensor), cudaSuccess);
    }
    for (uint32_t l = 0; l < kLayers; ++l) {
      hk_.push_back(host_[2 * l].data());
      hv_.push_back(host_[2 * l + 1].data());
      dk_.push_back(dev_[2 * l]);
      dv_.push_back(dev_[2 * l + 1]);
    }
    table_.resize(kNumBlocks);
    std::iota(table_.begin(), table_.end(), 0);
    std::shuffle(table_.begin(), table_.end(), rng);
    table_dev_ = device_alloc<int32_t>(table_.size() * sizeof(int32_t));
    ASSERT_NE(table_dev_, nullptr);
    ASSERT_EQ(cudaMemcpy(table_dev_, table_.data(), table_.size() * sizeof(int32_t),
                         cudaMemcpyHostToDevice),
              cudaSuccess);
    // The pool: kPoolSlots chunk slots, 256 bytes apart beyond their size, random bytes.
    pool_host_.resize(kPoolSlots * (kChunk + 256));
    for (std::byte& b : pool_host_) b = static_cast<std::byte>(rng() & 0xFF);
    pool_ = device_alloc<std::byte>(pool_host_.size());
    ASSERT_NE(pool_, nullptr);
    ASSERT_EQ(cudaMemcpy(pool_, pool_host_.data(), pool_host_.size(), cudaMemcpyHostToDevice),
              cudaSuccess);
    auto cache = DeviceKvCache::create_paged(view(true), 0);
    ASSERT_TRUE(cache.ok()) << cache.status().to_string();
    cache_ = std::make_unique<DeviceKvCache>(std::move(*cache));
  }
  void TearDown() override {
    for (std::byte* p : dev_) (void)cudaFree(p);
    (void)cudaFree(table_dev_);
    (void)cudaFree(pool_);
    (void)cudaFree(offsets_dev_);
  }
  [[nodiscard]] PagedKvView view(bool device) const {
    return {.k_layers = device ? dk_ : hk_,
            .v_layers = device ? dv_ : hv_,
            .block_size = kBlockSize,
            .num_blocks = kNumBlocks,
            .num_kv_heads = kHeads,
            .head_dim = kDim,
            .elem_bytes = kElem};
  }
  // Chunk c of the sequence at pool slot slot_of[c], or skipped where slot_of[c] < 0.
  void upload_offsets(const std::vector<int>& slot_of) {
    offsets_.clear();
    for (int s : slot_of) offsets_.push_back(s < 0 ? kSkipChunk : uint64_t(s) * (kChunk + 256));
    (void)cudaFree(offsets_dev_);
    offsets_dev_ = device_alloc<uint64_t>(offsets_.size() * sizeof(uint64_t));
    ASSERT_NE(offsets_dev_, nullptr);
    ASSERT_EQ(cudaMemcpy(offsets_dev_, offsets_.data(), offsets_.size() * sizeof(uint64_t),
                         cudaMemcpyHostToDevice),
              cudaSuccess);
  }
  void expect_cache_matches_host() {
    std::vector<std::byte> got(kTensor);
    for (size_t i = 0; i < dev_.size(); ++i) {
      ASSERT_EQ(cudaMemcpy(got.data(), dev_[i], kTensor, cudaMemcpyDeviceToHost), cudaSuccess);
      const auto m = std::mismatch(got.begin(), got.end(), host_[i].begin());
      EXPECT_TRUE(m.first == got.end())
          << "tensor " << i << " differs from the CPU reference at byte "
          << (m.first - got.begin());
    }
  }

  std::vector<std::vector<std::byte>> host_;
  std::vector<std::byte*> dev_, hk_, hv_, dk_, dv_;
  std::vector<int32_t> table_;
  int32_t* table_dev_ = nullptr;
  std::vector<std::byte> pool_host_;
  std::byte* pool_ = nullptr;
  std::vector<uint64_t> offsets_;
  uint64_t* offsets_dev_ = nullptr;
  std::unique_ptr<DeviceKvCache> cache_;
};

TEST_F(KvCudaPoolTest, ScatterFromPoolOffsetsOneLayerAtATimeSkippingHostChunks) {
  // Chunks 0..5 of the sequence starting at token 16: 0, 2, 3, 5 from pool slots 6, 1, 4, 0;
  // 1 and 4 skipped (they would come from elsewhere).
  const std::vector<int> slot_of{6, -1, 1, 4, -1, 0};
  upload_offsets(slot_of);
  const uint64_t first = kChunkTokens;
  for (uint32_t l = 0; l < kLayers; ++l) {
    const CopyRange range{.first_token = first,
                          .chunk_tokens = kChunkTokens,
                          .num_chunks = static_cast<uint32_t>(slot_of.size()),
                          .layer_begin = l,
                          .layer_end = l + 1};
    ASSERT_TRUE(scatter(*cache_, {table_dev_, table_.size()}, range,
                        ChunkBuffer{.data = pool_ + l * kLayerChunk, .chunk_offsets = offsets_dev_},
                        nullptr)
                    .ok());
  }
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  for (size_t c = 0; c < slot_of.size(); ++c) {
    if (slot_of[c] < 0) continue;
    const std::span<const std::byte> chunk(pool_host_.data() + offsets_[c], kChunk);
    ASSERT_TRUE(
        scatter_chunk(view(false), table_, first + c * kChunkTokens, kChunkTokens, chunk).ok());
  }
  expect_cache_matches_host();
  auto bad = cache_->take_bad_rows(nullptr);
  ASSERT_TRUE(bad.ok());
  EXPECT_EQ(*bad, 0u);
}

TEST_F(KvCudaPoolTest, GatherIntoPoolOffsetsLeavesSkippedSlotsAlone) {
  // Random cache contents, then chunks 0..3 gathered into slots 3, 7, (skipped), 2.
  std::mt19937_64 rng(5);
  for (size_t i = 0; i < dev_.size(); ++i) {
    for (std::byte& b : host_[i]) b = static_cast<std::byte>(rng() & 0xFF);
    ASSERT_EQ(cudaMemcpy(dev_[i], host_[i].data(), kTensor, cudaMemcpyHostToDevice), cudaSuccess);
  }
  const std::vector<int> slot_of{3, 7, -1, 2};
  upload_offsets(slot_of);
  const CopyRange range{.first_token = 0,
                        .chunk_tokens = kChunkTokens,
                        .num_chunks = static_cast<uint32_t>(slot_of.size())};
  ASSERT_TRUE(gather(*cache_, {table_dev_, table_.size()}, range,
                     ChunkBuffer{.data = pool_, .chunk_offsets = offsets_dev_}, nullptr)
                  .ok());
  std::vector<std::byte> got(pool_host_.size());
  ASSERT_EQ(cudaMemcpy(got.data(), pool_, got.size(), cudaMemcpyDeviceToHost), cudaSuccess);
  std::vector<std::byte> want = pool_host_;
  for (size_t c = 0; c < slot_of.size(); ++c) {
    if (slot_of[c] < 0) continue;
    ASSERT_TRUE(gather_chunk(view(false), table_, c * kChunkTokens, kChunkTokens,
                             std::span(want).subspan(offsets_[c], kChunk))
                    .ok());
  }
  const auto m = std::mismatch(got.begin(), got.end(), want.begin());
  EXPECT_TRUE(m.first == got.end()) << "pool differs at byte " << (m.first - got.begin());
}

}  // namespace
}  // namespace tierkv::kernels::cuda
