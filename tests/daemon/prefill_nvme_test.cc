// Co-scheduled prefill over the real NVMe tier, through the real tierkvd and the client library: a
// prompt whose leading chunks are in host RAM and the rest only on NVMe (written down, evicted),
// with the daemon's NVMe reads throttled so the schedule has something to balance. Exactly-once
// coverage with every delivered byte verified, a damaged chunk on disk turned into a computed
// chunk, and a client killed with NVMe reads in flight releasing everything.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <span>
#include <vector>

#include "support/chunk_pattern.h"
#include "support/nvme_client.h"
#include "support/nvme_damage.h"
#include "support/prefill_engine.h"
#include "support/process.h"
#include "support/test_daemon.h"
#include "tierkv/client.h"
#include "tierkv/prefill.h"
#include "tierkv/storage/nvme_store.h"

namespace tierkv {
namespace {

using testing::chunk_matches;
using testing::damage_chunk;
using testing::fill_chunk;
using namespace std::chrono_literals;

const Layout kLayout{2, 2, 64, DType::kBFloat16, 64};  // 64 KiB chunks
constexpr uint32_t kChunks = 24;
constexpr uint32_t kInRam = 6;  // chunks 0..5 stay in host RAM

class PrefillNvmeTest : public testing::PrefillDaemonTest {
 protected:
  // A 16 MiB host tier over a 64 MiB NVMe tier; NVMe reads paced to 0.02 GB/s (3.3 ms a chunk).
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(start_daemon(
        {.host_capacity = "16MiB",
         .extra_toml =
             "slab_size = \"4MiB\"\nprefault = false\n[nvme]\n"
             "directories = [\"${DIR}/nvme\"]\ncapacity = \"64MiB\"\nslab_size = \"4MiB\"\n"
             "queue_depth = 16\nmode = \"write-through\"\n[prefill]\nqueue_depth = 4\n"
             "nvme_read_throttle_GBps = 0.02\n"}));
    ASSERT_NO_FATAL_FAILURE(connect());
    tokens_.resize(kChunks * kLayout.chunk_tokens + 10);
    for (size_t i = 0; i < tokens_.size(); ++i) tokens_[i] = 5000000 + static_cast<TokenId>(i);
    keys_ = Client::keys(ns_, tokens_);
    keys_.resize(kChunks);
  }

  void connect() { PrefillDaemonTest::connect("prefill-nvme", kLayout); }

  // Stores the prompt (key-derived bytes) and writes every chunk down to NVMe.
  void store_and_flush() {
    auto put = client_->begin_put(ns_, tokens_);
    ASSERT_TRUE(put.ok()) << put.status().to_string();
    ASSERT_EQ(put->chunks(), kChunks);
    for (size_t i = 0; i < put->chunks(); ++i) {
      if (put->needs_write(i)) fill_chunk(keys_[i], put->slot(i));
    }
    ASSERT_TRUE(put->commit().ok());
    ASSERT_NO_FATAL_FAILURE(testing::flush_to_nvme(*client_));
  }

  // Chunks kInRam.. leave host RAM (NVMe keeps them); the first kInRam are in RAM.
  void split_tiers() {
    ASSERT_TRUE(client_->evict(ns_.id, std::span(keys_).subspan(kInRam)).ok());
    auto load = client_->load(ns_, tokens_, kInRam);  // promotes any of 0..5 not in RAM
    ASSERT_TRUE(load.ok()) << load.status().to_string();
    ASSERT_EQ(load->chunks(), kInRam);
    ASSERT_TRUE(load->release().ok());
  }

  std::vector<TokenId> tokens_;
  std::vector<ChunkKey> keys_;
};

// An engine's chunked-prefill loop (prefill.h); "computing" a chunk takes 2 ms of wall time.
testing::PrefillCoverage run_engine(PrefillSession& s, const std::vector<ChunkKey>& keys) {
  return testing::run_prefill_engine(
      s,
      [&](uint32_t i, std::span<const std::byte> got) {
        return chunk_matches(keys[i], got) && got.size() == kLayout.chunk_bytes();
      },
      2ms);
}

TEST_F(PrefillNvmeTest, RamAndNvmeChunksCoverThePrefixExactlyOnceWithEveryByteVerified) {
  store_and_flush();
  uint64_t sessions = 0, loaded = 0;
  for (uint32_t m : {8u, 0u, proto::kAutoMeetingPoint}) {
    SCOPED_TRACE("meeting point " + std::to_string(m));
    split_tiers();  // chunks loaded by the last session were promoted: out of RAM again
    auto s = begin_session(tokens_, m);
    ASSERT_TRUE(s.ok()) << s.status().to_string();
    ++sessions;
    ASSERT_EQ((*s)->cached_chunks(), kChunks);
    for (uint32_t i = 0; i < kChunks; ++i) {
      EXPECT_EQ((*s)->tiers()[i], i < kInRam ? Tier::kHost : Tier::kNvme) << "chunk " << i;
    }
    EXPECT_EQ((*s)->plan().resident_chunks, kInRam);
    const testing::PrefillCoverage c = run_engine(**s, keys_);
    EXPECT_EQ(c.bad_bytes, 0u);
    for (uint32_t i = 0; i < kChunks; ++i) {
      EXPECT_EQ(c.handed[i] + c.loaded[i] + c.computed[i], 1) << "chunk " << i;
      EXPECT_EQ(c.handed[i], i < kInRam ? 1 : 0) << "chunk " << i << ": RAM chunks go first";
      if (m != proto::kAutoMeetingPoint && i >= kInRam) {
        EXPECT_EQ(c.loaded[i], i >= m ? 1 : 0) << "chunk " << i;
      }
    }
    EXPECT_EQ(c.summary.met, 1);
    EXPECT_EQ(c.summary.failed, 0u);
    EXPECT_EQ(c.summary.handed_over, kInRam);
    EXPECT_EQ(c.summary.handed_over + c.summary.loaded + c.summary.computed, kChunks);
    loaded += c.summary.loaded;
  }
  const auto st = stats();
  EXPECT_EQ(st.prefill.sessions_met, sessions);
  EXPECT_EQ(st.prefill.chunks_loaded, loaded);
  EXPECT_GE(loaded, 16u + 18u) << "the forced splits read every chunk from m on";
  EXPECT_EQ(st.prefill.wasted_loads, 0u);
  EXPECT_EQ(st.prefill.load_failures, 0u);
  EXPECT_EQ(st.read_leases, 0u) << "a session's leases outlived it";
  EXPECT_EQ(st.nvme.checksum_failures, 0u);
  EXPECT_EQ(st.nvme.reads_in_flight, 0u);
  ASSERT_EQ(st.tier_bandwidth.size(), 4u);
  EXPECT_EQ(st.tier_bandwidth[2].tier, Tier::kNvme);
  EXPECT_GT(st.tier_bandwidth[2].samples, 0u) << "NVMe reads measured";
}

TEST_F(PrefillNvmeTest, DamagedChunkOnDiskIsComputedInstead) {
  store_and_flush();
  client_.reset();
  ASSERT_EQ(daemon_->stop(), 0);
  damage_chunk(*daemon_, keys_[15]);
  ASSERT_TRUE(daemon_->restart().ok());
  connect();
  split_tiers();  // after the restart everything is on NVMe: 0..5 promoted again

  auto s = begin_session(tokens_, 8);  // every NVMe chunk from 8 on is read, 15 among them
  ASSERT_TRUE(s.ok()) << s.status().to_string();
  ASSERT_EQ((*s)->cached_chunks(), kChunks);
  const testing::PrefillCoverage c = run_engine(**s, keys_);
  EXPECT_EQ(c.bad_bytes, 0u) << "a damaged chunk was served";
  for (uint32_t i = 0; i < kChunks; ++i) {
    EXPECT_EQ(c.handed[i] + c.loaded[i] + c.computed[i], 1) << "chunk " << i;
  }
  EXPECT_EQ(c.computed[15], 1) << "the damaged chunk is the engine's to compute";
  EXPECT_TRUE((*s)->load_failed(15));
  EXPECT_EQ(c.summary.failed, 1u);
  EXPECT_EQ(c.summary.computed, 3u);  // 6, 7 and 15
  EXPECT_EQ(c.summary.loaded, kChunks - kInRam - 3);

  const auto st = stats();
  EXPECT_EQ(st.nvme.checksum_failures, 1u);
  EXPECT_EQ(st.prefill.load_failures, 1u);
  EXPECT_EQ(st.read_leases, 0u);
  // The damaged copy is gone: the cached prefix now ends before it.
  auto look = client_->lookup(ns_, tokens_);
  ASSERT_TRUE(look.ok());
  EXPECT_EQ(look->cached_chunks, 15u);
}

TEST_F(PrefillNvmeTest, ClientKilledWithNvmeReadsInFlightReleasesEverything) {
  testing::TempDir logs;
  auto victim =
      testing::start_hanging_prefill_client("hang-nvme", *daemon_, logs.file("victim.log"));
  ASSERT_TRUE(victim.ok()) << victim.status().to_string();
  const auto before = stats();
  EXPECT_EQ(before.prefill.sessions_active, 1u);
  EXPECT_GT(before.read_leases, 0u) << "the victim holds a delivered chunk";

  ASSERT_NO_FATAL_FAILURE(kill_and_wait_released(*victim));
  EXPECT_EQ(stats().prefill.sessions_cancelled, 1u);

  // The daemon still serves: a session over the same prompt, from NVMe and RAM, completes.
  std::vector<TokenId> tokens(32 * 64);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = 60000 + static_cast<TokenId>(i);
  auto s = begin_session(tokens);
  ASSERT_TRUE(s.ok()) << s.status().to_string();
  EXPECT_EQ((*s)->cached_chunks(), 32u);
  std::vector<ChunkKey> keys = Client::keys(ns_, tokens);
  uint32_t covered = 0;
  for (int steps = 0; steps < 100000 && !(*s)->met(); ++steps) {
    covered += static_cast<uint32_t>((*s)->take_ready().size());
    const auto next = (*s)->next();
    if (next.action == PrefillSession::Action::kDone) break;
    if (next.action == PrefillSession::Action::kCompute) {
      ASSERT_TRUE((*s)->computed(next.chunk).ok());
      ++covered;
    } else {
      ASSERT_TRUE((*s)->wait_ready(5ms).ok());
    }
  }
  covered += static_cast<uint32_t>((*s)->take_ready().size());
  EXPECT_EQ(covered, 32u);
  ASSERT_TRUE((*s)->end().ok());
  EXPECT_EQ(stats().read_leases, 0u);
}

}  // namespace
}  // namespace tierkv
