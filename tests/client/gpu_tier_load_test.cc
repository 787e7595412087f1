// The GPU tier on a GPU, through a real tierkvd with [gpu] capacity set: a prompt stored and
// loaded enough times is promoted (lookup reports tier GPU), a load through the daemon's GPU pool
// (DaemonGpuPool + GpuTransfer::use_gpu_tier) scatters it device-to-device into a paged cache and
// every byte equals what was stored (checked against the CPU reference, scatter_chunk, on a
// poisoned host mirror, so a byte written wrongly or not at all fails), a prompt half on the GPU
// and half in host RAM loads the same way, and a killed client's GPU leases are reclaimed.
// Skips, saying why, without a GPU.
#include <cuda_runtime.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "client/gpu_tier_test_prompt.h"
#include "support/process.h"
#include "support/test_daemon.h"
#include "tierkv/client.h"
#include "tierkv/cuda_transfer.h"
#include "tierkv/gpu_pool.h"
#include "tierkv/kernels/kv_cuda.h"
#include "tierkv/kernels/paged_kv.h"

namespace tierkv {
namespace {

using testing::gpu_tier_layout;
using testing::gpu_tier_prompt;
using testing::TestDaemon;
using testing::TestDaemonOptions;
using namespace std::chrono_literals;

constexpr uint32_t kBlockSize = 16;
constexpr uint32_t kNumBlocks = 64;  // 1024 tokens: 32 chunks
constexpr uint32_t kRowBytes = 2 * 64 * 2;
constexpr std::byte kPoison{0xCD};

// A paged KV cache on the device and its mirror on the host (the CPU reference writes there).
class PagedCache {
 public:
  PagedCache() {
    const size_t bytes = size_t{kNumBlocks} * kBlockSize * kRowBytes;
    for (int i = 0; i < 8; ++i) {
      host_.emplace_back(bytes, kPoison);
      void* p = nullptr;
      ok_ = ok_ && cudaMalloc(&p, bytes) == cudaSuccess &&
            cudaMemset(p, static_cast<int>(kPoison), bytes) == cudaSuccess;
      dev_.push_back(static_cast<std::byte*>(p));
    }
    for (int l = 0; l < 4; ++l) {
      hk_.push_back(host_[2 * l].data());
      hv_.push_back(host_[2 * l + 1].data());
      dk_.push_back(dev_[2 * l]);
      dv_.push_back(dev_[2 * l + 1]);
    }
  }
  ~PagedCache() {
    for (std::byte* p : dev_) (void)cudaFree(p);
  }
  PagedCache(const PagedCache&) = delete;
  PagedCache& operator=(const PagedCache&) = delete;

  [[nodiscard]] bool ok() const { return ok_; }
  [[nodiscard]] kernels::PagedKvView view(bool device) const {
    return {.k_layers = device ? dk_ : hk_,
            .v_layers = device ? dv_ : hv_,
            .block_size = kBlockSize,
            .num_blocks = kNumBlocks,
            .num_kv_heads = 2,
            .head_dim = 64,
            .elem_bytes = 2};
  }
  void expect_device_matches_host() const {
    std::vector<std::byte> got(host_[0].size());
    for (size_t i = 0; i < host_.size(); ++i) {
      ASSERT_EQ(cudaMemcpy(got.data(), dev_[i], got.size(), cudaMemcpyDeviceToHost), cudaSuccess);
      const auto m = std::mismatch(got.begin(), got.end(), host_[i].begin());
      EXPECT_TRUE(m.first == got.end())
          << "tensor " << i << " (layer " << i / 2 << (i % 2 ? " V" : " K")
          << ") differs from the CPU reference first at byte " << (m.first - got.begin());
    }
  }

 private:
  bool ok_ = true;
  std::vector<std::vector<std::byte>> host_;
  std::vector<std::byte*> dev_;
  std::vector<std::byte*> hk_, hv_, dk_, dv_;
};

class GpuTierLoadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const Status gpu = kernels::cuda::device_available();
    if (!gpu.ok()) GTEST_SKIP() << "no GPU: " << gpu.message();
    TestDaemonOptions o;
    o.extra_toml =
        "[gpu]\ndevice = 0\ncapacity = \"64MiB\"\nslab_size = \"16MiB\"\n"
        "promote_after_loads = 2\n";
    auto d = TestDaemon::start(o);
    ASSERT_TRUE(d.ok()) << d.status().to_string();
    daemon_ = std::move(d).value();
    auto c = Client::connect({daemon_->socket_path(), "gpu-tier-test", true});
    ASSERT_TRUE(c.ok()) << c.status().to_string();
    client_ = *c;
    auto ns = client_->register_layout(gpu_tier_layout(), testing::kGpuTierTenant);
    ASSERT_TRUE(ns.ok()) << ns.status().to_string();
    ns_ = *ns;
    ASSERT_EQ(ns_.chunk_bytes(), 64u * 1024);
    ASSERT_EQ(cudaStreamCreate(&stream_), cudaSuccess);
  }
  void TearDown() override {
    if (stream_ != nullptr) (void)cudaStreamDestroy(stream_);
  }

  std::vector<std::byte> random_kv(size_t chunks, uint64_t seed) const {
    std::vector<std::byte> kv(chunks * ns_.chunk_bytes());
    std::mt19937_64 rng(seed);
    for (std::byte& b : kv) b = static_cast<std::byte>(rng() & 0xFF);
    return kv;
  }
  std::vector<Tier> tiers(const std::vector<TokenId>& tokens) {
    auto look = client_->lookup(ns_, tokens);
    EXPECT_TRUE(look.ok()) << look.status().to_string();
    return look.ok() ? look->tiers : std::vector<Tier>{};
  }
  proto::StatsReply stats() {
    auto st = client_->stats();
    EXPECT_TRUE(st.ok()) << st.status().to_string();
    return st.ok() ? *st : proto::StatsReply{};
  }
  // Loads the prompt `times` times (host leases, released at once), then waits until the
  // daemon's copies have landed and every chunk is in tier GPU.
  void promote(const std::vector<TokenId>& tokens, int times) {
    for (int i = 0; i < times; ++i) {
      auto lease = client_->load(ns_, tokens);
      ASSERT_TRUE(lease.ok()) << lease.status().to_string();
      ASSERT_TRUE(lease->release().ok());
    }
    const size_t n = tokens.size() / ns_.layout.chunk_tokens;
    const bool promoted =
        testing::wait_until([&] { return tiers(tokens) == std::vector<Tier>(n, Tier::kGpu); }, 30s);
    ASSERT_TRUE(promoted) << "lookup never showed the prompt in tier GPU; gpu: "
                          << stats().gpu_status << "; daemon log:\n"
                          << daemon_->log();
  }
  // Scatters `kv`'s chunks into the host mirror with the CPU reference: the expected cache.
  static void reference_load(const PagedCache& cache, const std::vector<int32_t>& table,
                             const std::vector<std::byte>& kv, uint64_t chunk_bytes,
                             uint32_t chunk_tokens) {
    for (uint64_t i = 0; i < kv.size() / chunk_bytes; ++i) {
      ASSERT_TRUE(kernels::scatter_chunk(cache.view(false), table, i * chunk_tokens, chunk_tokens,
                                         std::span(kv).subspan(i * chunk_bytes, chunk_bytes))
                      .ok());
    }
  }
  static std::vector<int32_t> shuffled_blocks(uint32_t used, uint64_t seed) {
    std::vector<int32_t> t(kNumBlocks);
    std::iota(t.begin(), t.end(), 0);
    std::mt19937_64 rng(seed);
    std::shuffle(t.begin(), t.end(), rng);
    t.resize(used);
    return t;
  }

  std::unique_ptr<TestDaemon> daemon_;
  std::shared_ptr<Client> client_;
  Namespace ns_;
  cudaStream_t stream_ = nullptr;
};

TEST_F(GpuTierLoadTest, PromotedChunksLoadFromTheGpuTierIntoAPagedCache) {
  constexpr size_t kChunks = 8;
  const auto tokens = gpu_tier_prompt(1, kChunks);
  const auto kv = random_kv(kChunks, 11);
  auto put = client_->put(ns_, tokens, kv);
  ASSERT_TRUE(put.ok()) << put.status().to_string();
  ASSERT_EQ(put->written, kChunks);
  EXPECT_EQ(tiers(tokens), std::vector<Tier>(kChunks, Tier::kHost));
  EXPECT_EQ(stats().gpu_status.rfind("on: ", 0), 0u) << stats().gpu_status;
  promote(tokens, 2);
  auto st = stats();
  EXPECT_EQ(st.gpu.promotions, kChunks);
  EXPECT_EQ(st.gpu.promotion_failures, 0u);
  // tierkvctl shows the tier: its row, and the promotions.
  const testing::ProcessResult ctl = testing::run_process(
      {std::string(TIERKV_BINARY_DIR) + "/tools/tierkvctl", "--socket", daemon_->socket_path(),
       "stats"});
  ASSERT_TRUE(ctl.ok()) << ctl.describe();
  EXPECT_NE(ctl.out.find("gpu: on: "), std::string::npos) << ctl.out;
  EXPECT_NE(ctl.out.find("8 chunks promoted from host RAM"), std::string::npos) << ctl.out;
  EXPECT_EQ(ctl.out.find("gpu          off"), std::string::npos) << ctl.out;

  auto gpu = DaemonGpuPool::attach(client_);
  ASSERT_TRUE(gpu.ok()) << gpu.status().to_string();
  EXPECT_EQ((*gpu)->size(), 64u << 20);
  auto pinned = PinnedHostPool::pin(client_);
  ASSERT_TRUE(pinned.ok()) << pinned.status().to_string();
  {
    PagedCache cache;
    ASSERT_TRUE(cache.ok());
    const auto table = shuffled_blocks(kChunks * 32 / kBlockSize, 5);
    auto xfer = GpuTransfer::create_paged(*pinned, ns_, cache.view(true), (*gpu)->device());
    ASSERT_TRUE(xfer.ok()) << xfer.status().to_string();
    auto lease = (*gpu)->load(ns_, tokens);
    ASSERT_TRUE(lease.ok()) << lease.status().to_string();
    ASSERT_EQ(lease->chunks(), kChunks);
    EXPECT_EQ(lease->gpu_chunks(), kChunks);
    EXPECT_TRUE(lease->chunk(0).empty()) << "a GPU chunk has no host bytes";
    // Without the pool the transfer cannot read those chunks, and says so.
    const Status no_pool = (*xfer)->load(*lease, 0, kChunks, table, stream_);
    EXPECT_EQ(no_pool.code(), StatusCode::kFailedPrecondition) << no_pool.to_string();
    ASSERT_TRUE((*xfer)->use_gpu_tier(*gpu).ok());
    ASSERT_TRUE((*xfer)->load(*lease, 0, kChunks, table, stream_).ok());
    ASSERT_TRUE((*xfer)->synchronize().ok());
    EXPECT_EQ(stats().gpu.leases, kChunks);
    reference_load(cache, table, kv, ns_.chunk_bytes(), 32);
    cache.expect_device_matches_host();
    ASSERT_TRUE(lease->release().ok());
    EXPECT_EQ(stats().gpu.leases, 0u);
  }
  {
    // The prompt grows by 4 chunks that are only in host RAM: one lease, both pools, one load.
    const auto longer = gpu_tier_prompt(1, kChunks + 4);
    auto kv2 = random_kv(kChunks + 4, 12);
    std::copy(kv.begin(), kv.end(), kv2.begin());
    auto put2 = client_->put(ns_, longer, kv2);
    ASSERT_TRUE(put2.ok()) << put2.status().to_string();
    EXPECT_EQ(put2->written, 4u);
    PagedCache cache;
    ASSERT_TRUE(cache.ok());
    const auto table = shuffled_blocks((kChunks + 4) * 32 / kBlockSize, 6);
    auto xfer = GpuTransfer::create_paged(*pinned, ns_, cache.view(true), (*gpu)->device());
    ASSERT_TRUE(xfer.ok()) << xfer.status().to_string();
    ASSERT_TRUE((*xfer)->use_gpu_tier(*gpu).ok());
    auto lease = (*gpu)->load(ns_, longer);
    ASSERT_TRUE(lease.ok()) << lease.status().to_string();
    ASSERT_EQ(lease->chunks(), kChunks + 4);
    EXPECT_EQ(lease->gpu_chunks(), kChunks);
    EXPECT_FALSE(lease->on_gpu(kChunks));
    ASSERT_TRUE((*xfer)->load(*lease, 0, kChunks + 4, table, stream_).ok());
    ASSERT_TRUE((*xfer)->synchronize().ok());
    reference_load(cache, table, kv2, ns_.chunk_bytes(), 32);
    cache.expect_device_matches_host();
  }
}

TEST_F(GpuTierLoadTest, AKilledClientsGpuLeasesAreReclaimed) {
  constexpr size_t kChunks = 4;
  const auto tokens = gpu_tier_prompt(2, kChunks);
  auto put = client_->put(ns_, tokens, random_kv(kChunks, 21));
  ASSERT_TRUE(put.ok()) << put.status().to_string();
  promote(tokens, 2);
  const std::string log = daemon_->dir() + "/lease-client.log";
  auto child = testing::Subprocess::spawn(
      {std::string(TIERKV_BINARY_DIR) + "/tests/client/tierkv_test_gpu_lease_client",
       daemon_->socket_path(), "2", std::to_string(kChunks)},
      log);
  ASSERT_TRUE(child.ok()) << child.status().to_string();
  const bool ready = testing::wait_until(
      [&] {
        return testing::read_file(log).find("READY") != std::string::npos || !child->running();
      },
      60s);
  ASSERT_TRUE(ready) << testing::read_file(log);
  ASSERT_NE(testing::read_file(log).find("READY 4 4"), std::string::npos)
      << testing::read_file(log);
  auto st = stats();
  EXPECT_EQ(st.gpu.leases, kChunks);
  EXPECT_EQ(st.gpu.attached_clients, 1u);
  ::kill(child->pid(), SIGKILL);
  ASSERT_TRUE(child->wait_exit(30s));
  ASSERT_TRUE(testing::wait_until([&] { return stats().gpu.leases == 0; }, 30s))
      << "the dead client's GPU leases were not reclaimed; daemon log:\n"
      << daemon_->log();
  EXPECT_EQ(stats().gpu.attached_clients, 0u);
  EXPECT_NE(daemon_->log().find("reclaimed 4 GPU leases"), std::string::npos) << daemon_->log();
  // The copies stay; and, unleased, they go at once when their host chunks do.
  EXPECT_EQ(tiers(tokens), std::vector<Tier>(kChunks, Tier::kGpu));
  auto evicted = client_->evict(ns_.id, Client::keys(ns_, tokens));
  ASSERT_TRUE(evicted.ok()) << evicted.status().to_string();
  for (const auto& t : stats().tiers) {
    if (t.tier == Tier::kGpu) {
      EXPECT_EQ(t.used_bytes, 0u);
    }
  }
}

}  // namespace
}  // namespace tierkv
