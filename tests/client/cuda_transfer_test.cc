// The engine-side GPU path (tierkv/cuda_transfer.h) against a real tierkvd: stores from a paged or
// flat cache on the GPU into leased shm slots, loads leased chunks back into another cache, and
// compares every byte with the CPU references (gather_chunk / scatter_chunk) applied to a host
// mirror of each cache. Caches are poisoned before a load, so a byte the load did not write, or
// wrote where it should not have, fails. Runs with the default staging and with a ring of two
// one-layer slots (many pieces, every slot reused). GPU tests skip, saying why, without a GPU.
#include "tierkv/cuda_transfer.h"

#include <cuda_runtime.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <numeric>
#include <ostream>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "support/test_daemon.h"
#include "tierkv/client.h"
#include "tierkv/kernels/flat_kv.h"
#include "tierkv/kernels/kv_cuda.h"
#include "tierkv/kernels/paged_kv.h"

namespace tierkv {

// gtest prints parameters through this (found by argument-dependent lookup in tierkv).
void PrintTo(const GpuTransferOptions& o, std::ostream* os) {
  *os << o.staging_bytes << " staging bytes in " << o.staging_slots
      << " slots, copies of >= " << o.min_copy_bytes << " bytes"
      << (o.batch_copies ? ", batched" : "");
}

namespace {

using ::testing::HasSubstr;
using testing::TestDaemon;

constexpr std::byte kPoison{0xCD};

// 4 layers x 2 kv heads x 64 dim bf16, 32-token chunks: 256-byte rows, 64 KiB chunks.
Layout test_layout() {
  Layout l;
  l.num_layers = 4;
  l.num_kv_heads = 2;
  l.head_dim = 64;
  l.dtype = DType::kBFloat16;
  l.chunk_tokens = 32;
  return l;
}
constexpr uint32_t kBlockSize = 16;
constexpr uint32_t kNumBlocks = 64;
constexpr uint32_t kRowBytes = 2 * 64 * 2;

void fill_random(std::span<std::byte> bytes, std::mt19937_64& rng) {
  for (std::byte& b : bytes) b = static_cast<std::byte>(rng() & 0xFF);
}

// One KV cache on the device and its mirror on the host; per layer one K and one V tensor.
class MirroredCache {
 public:
  MirroredCache(uint32_t layers, size_t tensor_bytes) : bytes_(tensor_bytes) {
    for (uint32_t i = 0; i < 2 * layers; ++i) {
      host_.emplace_back(tensor_bytes);
      void* p = nullptr;
      if (cudaMalloc(&p, tensor_bytes) != cudaSuccess) p = nullptr;
      dev_.push_back(static_cast<std::byte*>(p));
    }
    for (uint32_t l = 0; l < layers; ++l) {
      host_k_.push_back(host_[2 * l].data());
      host_v_.push_back(host_[2 * l + 1].data());
      dev_k_.push_back(dev_[2 * l]);
      dev_v_.push_back(dev_[2 * l + 1]);
    }
  }
  ~MirroredCache() {
    for (std::byte* p : dev_) (void)cudaFree(p);
  }
  MirroredCache(const MirroredCache&) = delete;
  MirroredCache& operator=(const MirroredCache&) = delete;

  [[nodiscard]] bool allocated() const {
    return std::none_of(dev_.begin(), dev_.end(), [](std::byte* p) { return p == nullptr; });
  }
  void randomize(std::mt19937_64& rng) {
    for (size_t i = 0; i < host_.size(); ++i) {
      fill_random(host_[i], rng);
      ASSERT_EQ(cudaMemcpy(dev_[i], host_[i].data(), bytes_, cudaMemcpyHostToDevice), cudaSuccess);
    }
  }
  void poison() {
    for (size_t i = 0; i < host_.size(); ++i) {
      std::fill(host_[i].begin(), host_[i].end(), kPoison);
      ASSERT_EQ(cudaMemset(dev_[i], static_cast<int>(kPoison), bytes_), cudaSuccess);
    }
  }
  void expect_device_matches_host() const {
    std::vector<std::byte> got(bytes_);
    for (size_t i = 0; i < host_.size(); ++i) {
      ASSERT_EQ(cudaMemcpy(got.data(), dev_[i], bytes_, cudaMemcpyDeviceToHost), cudaSuccess);
      const auto m = std::mismatch(got.begin(), got.end(), host_[i].begin());
      EXPECT_TRUE(m.first == got.end())
          << "tensor " << i << " (layer " << i / 2 << (i % 2 ? " V" : " K")
          << ") differs from the CPU reference first at byte " << (m.first - got.begin());
    }
  }
  [[nodiscard]] kernels::PagedKvView paged(bool device) const {
    return {.k_layers = device ? dev_k_ : host_k_,
            .v_layers = device ? dev_v_ : host_v_,
            .block_size = kBlockSize,
            .num_blocks = kNumBlocks,
            .num_kv_heads = 2,
            .head_dim = 64,
            .elem_bytes = 2};
  }

  std::vector<std::vector<std::byte>> host_;
  std::vector<std::byte*> dev_;
  std::vector<std::byte*> host_k_, host_v_, dev_k_, dev_v_;

 private:
  size_t bytes_;
};

std::vector<int32_t> random_table(uint32_t used, std::mt19937_64& rng) {
  std::vector<int32_t> t(kNumBlocks);
  std::iota(t.begin(), t.end(), 0);
  std::shuffle(t.begin(), t.end(), rng);
  t.resize(used);
  t.insert(t.end(), 3, -1);  // padding past the sequence
  return t;
}

std::vector<TokenId> random_tokens(size_t n, std::mt19937_64& rng) {
  std::vector<TokenId> t(n);
  for (auto& x : t) x = static_cast<TokenId>(rng() % 150000);
  return t;
}

class GpuTransferTest : public ::testing::TestWithParam<GpuTransferOptions> {
 protected:
  void SetUp() override {
    const Status gpu = kernels::cuda::device_available();
    if (!gpu.ok()) GTEST_SKIP() << "no GPU: " << gpu.message();
    auto d = TestDaemon::start();
    ASSERT_TRUE(d.ok()) << d.status().to_string();
    daemon_ = std::move(d).value();
    auto c = Client::connect({daemon_->socket_path(), "gpu-test", true});
    ASSERT_TRUE(c.ok()) << c.status().to_string();
    client_ = *c;
    auto ns = client_->register_layout(test_layout(), "gpu");
    ASSERT_TRUE(ns.ok()) << ns.status().to_string();
    ns_ = *ns;
    auto pool = PinnedHostPool::pin(client_);
    ASSERT_TRUE(pool.ok()) << pool.status().to_string();
    pool_ = *pool;
    ASSERT_EQ(cudaStreamCreate(&stream_), cudaSuccess);
  }
  void TearDown() override {
    if (stream_ != nullptr) (void)cudaStreamDestroy(stream_);
  }
  std::unique_ptr<GpuTransfer> paged_transfer(const MirroredCache& cache) {
    auto x = GpuTransfer::create_paged(pool_, ns_, cache.paged(true), 0, GetParam());
    EXPECT_TRUE(x.ok()) << x.status().to_string();
    return x.ok() ? std::move(x).value() : nullptr;
  }

  std::unique_ptr<TestDaemon> daemon_;
  std::shared_ptr<Client> client_;
  Namespace ns_;
  std::shared_ptr<PinnedHostPool> pool_;
  cudaStream_t stream_ = nullptr;
};

TEST_P(GpuTransferTest, StoreThenLoadPagedMatchesCpuReference) {
  std::mt19937_64 rng(77);
  constexpr size_t kChunks = 6;  // 192 tokens, 12 blocks
  const uint32_t ct = ns_.layout.chunk_tokens;
  const std::vector<TokenId> tokens = random_tokens(kChunks * ct + 5, rng);

  MirroredCache src(4, size_t{kNumBlocks} * kBlockSize * kRowBytes);
  ASSERT_TRUE(src.allocated());
  src.randomize(rng);
  const std::vector<int32_t> src_table = random_table(12, rng);
  auto store_x = paged_transfer(src);
  ASSERT_NE(store_x, nullptr);

  // Store: three chunks first, then all six, so the second put writes only chunks 3..5.
  for (size_t n : {size_t{3}, kChunks}) {
    auto put = client_->begin_put(ns_, std::span<const TokenId>(tokens).first(n * ct));
    ASSERT_TRUE(put.ok()) << put.status().to_string();
    ASSERT_TRUE(store_x->store(*put, src_table, stream_).ok());
    ASSERT_TRUE(store_x->synchronize().ok());
    std::vector<std::byte> want(ns_.chunk_bytes());
    for (size_t i = 0; i < put->chunks(); ++i) {
      EXPECT_EQ(put->needs_write(i), n == 3 || i >= 3) << "chunk " << i;
      if (!put->needs_write(i)) continue;
      ASSERT_TRUE(kernels::gather_chunk(src.paged(false), src_table, i * ct, ct, want).ok());
      EXPECT_TRUE(std::equal(want.begin(), want.end(), put->slot(i).begin()))
          << "stored chunk " << i << " differs from the CPU gather";
    }
    ASSERT_TRUE(put->commit().ok());
  }

  // Load all six chunks into a poisoned cache with another block table.
  auto lease = client_->load(ns_, tokens);
  ASSERT_TRUE(lease.ok()) << lease.status().to_string();
  ASSERT_EQ(lease->chunks(), kChunks);
  MirroredCache dst(4, size_t{kNumBlocks} * kBlockSize * kRowBytes);
  ASSERT_TRUE(dst.allocated());
  dst.poison();
  const std::vector<int32_t> dst_table = random_table(12, rng);
  auto load_x = paged_transfer(dst);
  ASSERT_NE(load_x, nullptr);
  ASSERT_TRUE(load_x->load(*lease, 0, kChunks, dst_table, stream_).ok());
  for (uint32_t l = 0; l < 4; ++l) ASSERT_TRUE(load_x->wait_layer(l, stream_).ok());
  ASSERT_EQ(cudaStreamSynchronize(stream_), cudaSuccess);
  for (uint32_t l = 0; l < 4; ++l) EXPECT_TRUE(load_x->layer_ready(l)) << "layer " << l;
  ASSERT_TRUE(load_x->synchronize().ok());
  EXPECT_TRUE(load_x->done());
  for (size_t i = 0; i < kChunks; ++i) {
    ASSERT_TRUE(
        kernels::scatter_chunk(dst.paged(false), dst_table, i * ct, ct, lease->chunk(i)).ok());
  }
  dst.expect_device_matches_host();

  // A partial load (chunks 2..4, as the co-scheduled prefill loads from the back) into a fresh
  // poisoned cache touches only those chunks' rows.
  dst.poison();
  ASSERT_TRUE(load_x->load(*lease, 2, 3, dst_table, stream_).ok());
  ASSERT_TRUE(load_x->synchronize().ok());
  for (size_t i = 2; i < 5; ++i) {
    ASSERT_TRUE(
        kernels::scatter_chunk(dst.paged(false), dst_table, i * ct, ct, lease->chunk(i)).ok());
  }
  dst.expect_device_matches_host();
  ASSERT_TRUE(lease->release().ok());
}

TEST_P(GpuTransferTest, FlatHeadMajorRoundTrip) {
  std::mt19937_64 rng(99);
  constexpr size_t kChunks = 3;
  constexpr uint64_t kCapacity = 128;  // tokens; the chunks fill 96
  const uint32_t ct = ns_.layout.chunk_tokens;
  // [heads][capacity][dim], as transformers keeps one sequence.
  auto view_of = [&](const MirroredCache& c, bool device) {
    return kernels::FlatKvView{.k_layers = device ? c.dev_k_ : c.host_k_,
                               .v_layers = device ? c.dev_v_ : c.host_v_,
                               .capacity_tokens = kCapacity,
                               .num_kv_heads = 2,
                               .head_dim = 64,
                               .elem_bytes = 2,
                               .token_stride = 128,
                               .head_stride = kCapacity * 128};
  };
  MirroredCache src(4, 2 * kCapacity * 128);
  ASSERT_TRUE(src.allocated());
  src.randomize(rng);
  auto x = GpuTransfer::create_flat(pool_, ns_, view_of(src, true), 0, GetParam());
  ASSERT_TRUE(x.ok()) << x.status().to_string();
  const std::vector<TokenId> tokens = random_tokens(kChunks * ct, rng);
  auto put = client_->begin_put(ns_, tokens);
  ASSERT_TRUE(put.ok());
  ASSERT_TRUE((*x)->store(*put, {}, stream_).ok());
  ASSERT_TRUE((*x)->synchronize().ok());
  std::vector<std::byte> want(ns_.chunk_bytes());
  for (size_t i = 0; i < kChunks; ++i) {
    ASSERT_TRUE(kernels::gather_chunk_flat(view_of(src, false), i * ct, ct, want).ok());
    EXPECT_TRUE(std::equal(want.begin(), want.end(), put->slot(i).begin())) << "chunk " << i;
  }
  ASSERT_TRUE(put->commit().ok());

  auto lease = client_->load(ns_, tokens);
  ASSERT_TRUE(lease.ok());
  MirroredCache dst(4, 2 * kCapacity * 128);
  ASSERT_TRUE(dst.allocated());
  dst.poison();
  auto y = GpuTransfer::create_flat(pool_, ns_, view_of(dst, true), 0, GetParam());
  ASSERT_TRUE(y.ok()) << y.status().to_string();
  ASSERT_TRUE((*y)->load(*lease, 0, kChunks, {}, stream_).ok());
  ASSERT_TRUE((*y)->synchronize().ok());
  for (size_t i = 0; i < kChunks; ++i) {
    ASSERT_TRUE(kernels::scatter_chunk_flat(view_of(dst, false), i * ct, ct, lease->chunk(i)).ok());
  }
  dst.expect_device_matches_host();
}

TEST_P(GpuTransferTest, RejectsBadArgumentsBeforeTouchingAnything) {
  std::mt19937_64 rng(5);
  MirroredCache cache(4, size_t{kNumBlocks} * kBlockSize * kRowBytes);
  ASSERT_TRUE(cache.allocated());
  cache.poison();
  auto x = paged_transfer(cache);
  ASSERT_NE(x, nullptr);
  const std::vector<TokenId> tokens = random_tokens(2 * 32, rng);
  auto put = client_->begin_put(ns_, tokens);
  ASSERT_TRUE(put.ok());
  ASSERT_TRUE(x->store(*put, random_table(4, rng), stream_).ok());
  ASSERT_TRUE(x->synchronize().ok());
  ASSERT_TRUE(put->commit().ok());
  auto lease = client_->load(ns_, tokens);
  ASSERT_TRUE(lease.ok());

  std::vector<int32_t> table = {5, 9, 5, 1};
  EXPECT_THAT(x->load(*lease, 0, 2, table, stream_).message(),
              HasSubstr("block_table[0] and block_table[2] both name block 5"));
  table = {5, 9, 64, 1};
  EXPECT_THAT(x->load(*lease, 0, 2, table, stream_).message(),
              HasSubstr("block_table[2] = 64 is out of range"));
  table = {5, 9, 3};
  EXPECT_THAT(x->load(*lease, 0, 2, table, stream_).message(),
              HasSubstr("not covered by a block table of 3 blocks"));
  EXPECT_THAT(x->load(*lease, 1, 2, table, stream_).message(), HasSubstr("exceed the lease's 2"));
  std::vector<std::byte> outside(ns_.chunk_bytes());
  const std::vector<const std::byte*> chunks = {outside.data()};
  const std::vector<int32_t> two = {5, 9};
  EXPECT_THAT(x->load_chunks(chunks, two, 0, stream_).message(),
              HasSubstr("inside the pinned host pool"));
  EXPECT_THAT(x->wait_layer(4, stream_).message(), HasSubstr("layer 4 is out of range"));
  // Nothing above reached the cache.
  ASSERT_TRUE(x->synchronize().ok());
  cache.expect_device_matches_host();

  Layout other = test_layout();
  other.head_dim = 128;
  Namespace wrong = ns_;
  wrong.layout = other;
  auto bad = GpuTransfer::create_paged(pool_, wrong, cache.paged(true), 0, GetParam());
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("cache head_dim 64 does not match"));
}

// The test layout's layer of a chunk is 16 KiB.
INSTANTIATE_TEST_SUITE_P(
    Staging, GpuTransferTest,
    ::testing::Values(
        // Defaults: all four layers in one group, batched copies.
        GpuTransferOptions{},
        // Two slots of one layer of one chunk each, one copy call per chunk.
        GpuTransferOptions{.staging_bytes = 1,
                           .staging_slots = 2,
                           .min_copy_bytes = 0,
                           .batch_copies = false,
                           .max_tokens = 4096},
        // Groups of two layers, three slots of one chunk's group each, batched.
        GpuTransferOptions{.staging_bytes = 1,
                           .staging_slots = 3,
                           .min_copy_bytes = 20 << 10,
                           .batch_copies = true,
                           .max_tokens = 4096}),
    [](const ::testing::TestParamInfo<GpuTransferOptions>& info) {
      if (info.param.staging_slots == 2) return std::string("TinyRingOneLayer");
      if (info.param.staging_slots == 3) return std::string("TinyRingLayerPairs");
      return std::string("Default");
    });

// Runs on every machine with CUDA in the build: without a GPU, pinning says why instead of
// failing later. (gpu_transfer_stub_test covers builds without CUDA.)
TEST(GpuTransferWithoutGpuTest, PinSaysWhy) {
  if (kernels::cuda::device_available().ok()) {
    GTEST_SKIP() << "a GPU is present; GpuTransferTest covers this machine";
  }
  auto d = TestDaemon::start();
  ASSERT_TRUE(d.ok()) << d.status().to_string();
  auto c = Client::connect({(*d)->socket_path(), "no-gpu", false});
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_TRUE(gpu_transfer_built());
  auto pool = PinnedHostPool::pin(*c);
  ASSERT_FALSE(pool.ok());
  EXPECT_THAT(pool.status().message(), HasSubstr("CUDA device"));
}

}  // namespace
}  // namespace tierkv
