// The NVMe tier through the real daemon: real files, real io_uring (O_DIRECT), real RocksDB.
// Write-down and promotion, restart, SIGKILL during a write-heavy load, damaged data files, and
// injected faults (EIO, short reads, ENOSPC, slow completions) with a client served meanwhile.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <random>
#include <thread>

#include "support/chunk_pattern.h"
#include "support/nvme_client.h"
#include "support/nvme_damage.h"
#include "support/process.h"
#include "support/test_daemon.h"
#include "tierkv/client.h"
#include "tierkv/storage/nvme_store.h"

namespace tierkv {
namespace {

using testing::chunk_matches;
using testing::damage_chunk;
using testing::fill_chunk;
using testing::flush_to_nvme;
using testing::TestDaemon;
using namespace std::chrono_literals;

// The integration tests' layout (tests/daemon/test_client.cc): 64 KiB chunks of 64 tokens.
const Layout kLayout{2, 2, 64, DType::kBFloat16, 64};

std::string test_client() {
  return std::string(TIERKV_BINARY_DIR) + "/tests/daemon/tierkv_test_client";
}

// A daemon with a 16 MiB host tier and a 64 MiB NVMe tier in ${DIR}/nvme; `extra` adds to [nvme].
std::unique_ptr<TestDaemon> start_nvme_daemon(const std::string& extra = "",
                                              const std::string& mode = "write-through",
                                              const std::string& host_capacity = "16MiB") {
  testing::TestDaemonOptions o;
  o.host_capacity = host_capacity;
  o.extra_toml = "slab_size = \"4MiB\"\nprefault = false\n[nvme]\ndirectories = [\"${DIR}/nvme\"]\n"
                 "capacity = \"64MiB\"\nslab_size = \"4MiB\"\nqueue_depth = 16\nmode = \"" +
                 mode + "\"\n" + extra;
  auto d = TestDaemon::start(o);
  EXPECT_TRUE(d.ok()) << d.status().to_string();
  return d.ok() ? std::move(d).value() : nullptr;
}

std::shared_ptr<Client> connect(const TestDaemon& d) {
  auto c = Client::connect({d.socket_path(), "nvme-test", false});
  EXPECT_TRUE(c.ok()) << c.status().to_string();
  return c.ok() ? *c : nullptr;
}

std::vector<TokenId> prompt(uint32_t id, uint32_t chunks) {
  std::vector<TokenId> t(chunks * kLayout.chunk_tokens);
  for (size_t i = 0; i < t.size(); ++i) t[i] = id * 1000003u + static_cast<TokenId>(i);
  return t;
}

// Stores the prompt with key-derived content; returns its keys.
std::vector<ChunkKey> store(Client& c, const Namespace& ns, const std::vector<TokenId>& tokens) {
  const auto keys = Client::keys(ns, tokens);
  auto put = c.begin_put(ns, tokens);
  EXPECT_TRUE(put.ok()) << put.status().to_string();
  if (!put.ok()) return keys;
  for (size_t i = 0; i < put->chunks(); ++i) {
    if (put->needs_write(i)) fill_chunk(keys[i], put->slot(i));
  }
  EXPECT_TRUE(put->commit().ok());
  return keys;
}

proto::NvmeStats nvme_stats(Client& c) {
  auto s = c.stats();
  EXPECT_TRUE(s.ok());
  return s.ok() ? s->nvme : proto::NvmeStats{};
}

// Loads the prompt; every chunk handed out must be exactly what was stored. Returns how many.
size_t load_and_verify(Client& c, const Namespace& ns, const std::vector<TokenId>& tokens) {
  const auto keys = Client::keys(ns, tokens);
  auto lease = c.load(ns, tokens);
  EXPECT_TRUE(lease.ok()) << lease.status().to_string();
  if (!lease.ok()) return 0;
  for (size_t i = 0; i < lease->chunks(); ++i) {
    EXPECT_TRUE(chunk_matches(keys[i], lease->chunk(i))) << "chunk " << i << " differs";
  }
  return lease->chunks();
}

TEST(NvmeTierTest, EvictedChunksLoadBackFromNvmeVerified) {
  auto d = start_nvme_daemon();
  ASSERT_TRUE(d);
  auto c = connect(*d);
  auto ns = c->register_layout(kLayout, "nvme");
  ASSERT_TRUE(ns.ok());
  const auto tokens = prompt(1, 24);
  const auto keys = store(*c, *ns, tokens);
  flush_to_nvme(*c);
  ASSERT_EQ(*c->evict(ns->id, keys), 24u);  // out of host RAM; NVMe keeps them

  auto look = c->lookup(*ns, tokens);
  ASSERT_TRUE(look.ok());
  ASSERT_EQ(look->cached_chunks, 24u);
  for (Tier t : look->tiers) EXPECT_EQ(t, Tier::kNvme);

  EXPECT_EQ(load_and_verify(*c, *ns, tokens), 24u);
  // Promoted: now in host RAM too.
  look = c->lookup(*ns, tokens);
  for (Tier t : look->tiers) EXPECT_EQ(t, Tier::kHost);
  auto st = c->stats();
  EXPECT_EQ(st->tiers[2].tier, Tier::kNvme);
  EXPECT_EQ(st->tiers[2].chunks, 24u);
  EXPECT_EQ(st->tiers[2].bytes_out, 24 * ns->chunk_bytes());
  EXPECT_EQ(st->nvme.checksum_failures, 0u);

  // Delete reaches NVMe too.
  ASSERT_EQ(*c->remove(ns->id, keys), 24u);
  EXPECT_EQ(c->lookup(*ns, tokens)->cached_chunks, 0u);
  EXPECT_EQ(c->stats()->tiers[2].chunks, 0u);
}

TEST(NvmeTierTest, HostEvictionWritesBackInsteadOfDropping) {
  // Write-back: 40 MiB of chunks through a 16 MiB host tier, put no faster than the disk takes
  // them (as an engine's prefills are); what leaves RAM has gone to NVMe, nothing is dropped.
  auto d = start_nvme_daemon("", "write-back");
  ASSERT_TRUE(d);
  auto c = connect(*d);
  auto ns = c->register_layout(kLayout, "nvme");
  ASSERT_TRUE(ns.ok());
  uint64_t written_before_pressure = UINT64_MAX;
  for (uint32_t p = 0; p < 10; ++p) {
    store(*c, *ns, prompt(100 + p, 64));
    if (p == 0) written_before_pressure = c->stats()->tiers[2].chunks;
    ASSERT_TRUE(testing::wait_until([&] { return nvme_stats(*c).writes_in_flight == 0; }, 30s));
  }
  EXPECT_EQ(written_before_pressure, 0u);  // write-back: nothing goes down while RAM has room
  size_t cached = 0;
  for (uint32_t p = 0; p < 10; ++p) cached += c->lookup(*ns, prompt(100 + p, 64))->cached_chunks;
  EXPECT_EQ(cached, 640u);
  EXPECT_EQ(nvme_stats(*c).dropped_unwritten, 0u);
  EXPECT_GT(c->stats()->tiers[1].evictions, 0u);
  for (uint32_t p = 0; p < 10; ++p) EXPECT_EQ(load_and_verify(*c, *ns, prompt(100 + p, 64)), 64u);
  EXPECT_EQ(nvme_stats(*c).checksum_failures, 0u);
}

TEST(NvmeTierTest, PrefetchBringsChunksUpAheadOfTheLoad) {
  auto d = start_nvme_daemon();
  ASSERT_TRUE(d);
  auto c = connect(*d);
  auto ns = c->register_layout(kLayout, "nvme");
  const auto tokens = prompt(7, 12);
  const auto keys = store(*c, *ns, tokens);
  flush_to_nvme(*c);
  ASSERT_EQ(*c->evict(ns->id, keys), 12u);
  auto pre = c->prefetch(*ns, tokens);
  ASSERT_TRUE(pre.ok()) << pre.status().to_string();
  EXPECT_EQ(pre->in_host + pre->fetching, 12u);
  ASSERT_TRUE(testing::wait_until(
      [&] {
        auto look = c->lookup(*ns, tokens);
        return look.ok() && look->cached_chunks == 12 && look->tiers.back() == Tier::kHost;
      },
      30s));
  EXPECT_EQ(load_and_verify(*c, *ns, tokens), 12u);
  // A second prefetch finds everything in RAM.
  EXPECT_EQ(c->prefetch(*ns, tokens)->in_host, 12u);
}

TEST(NvmeTierTest, OnlyListedTenantsGoToDisk) {
  auto d = start_nvme_daemon("tenants = [\"disk-tenant\"]\n");
  ASSERT_TRUE(d);
  auto c = connect(*d);
  auto on_disk = c->register_layout(kLayout, "disk-tenant");
  auto ram_only = c->register_layout(kLayout, "ram-tenant");
  store(*c, *on_disk, prompt(8, 4));
  store(*c, *ram_only, prompt(9, 4));
  flush_to_nvme(*c);
  auto st = c->stats();
  EXPECT_EQ(st->tiers[2].chunks, 4u);
  EXPECT_EQ(st->nvme.dirty_chunks, 0u);  // the RAM-only tenant's chunks are not "unwritten"
  ASSERT_EQ(*c->evict_namespace(ram_only->id), 4u);
  EXPECT_EQ(c->lookup(*ram_only, prompt(9, 4))->cached_chunks, 0u);
}

TEST(NvmeTierTest, EvictDuringWriteDownStillLandsButDeleteDoesNot) {
  // Every write completes 300 ms late, so the evict and the delete below come while the chunks'
  // writes are in flight.
  auto d = start_nvme_daemon("[nvme.fault_injection]\nslow_every = 1\nslow_ms = 300\n");
  ASSERT_TRUE(d);
  auto c = connect(*d);
  auto ns = c->register_layout(kLayout, "nvme");
  const auto kept = prompt(10, 4), gone = prompt(11, 4);
  const auto kept_keys = store(*c, *ns, kept);
  const auto gone_keys = store(*c, *ns, gone);
  ASSERT_GT(nvme_stats(*c).writes_in_flight, 0u);
  ASSERT_EQ(*c->evict(ns->id, kept_keys), 4u);   // RAM only: NVMe still gets them
  ASSERT_EQ(*c->remove(ns->id, gone_keys), 4u);  // everywhere: their writes are void
  flush_to_nvme(*c);
  auto look = c->lookup(*ns, kept);
  ASSERT_EQ(look->cached_chunks, 4u);
  EXPECT_EQ(look->tiers[0], Tier::kNvme);
  EXPECT_EQ(load_and_verify(*c, *ns, kept), 4u);
  EXPECT_EQ(c->lookup(*ns, gone)->cached_chunks, 0u);
  const auto n = nvme_stats(*c);
  EXPECT_EQ(n.dirty_chunks, 0u);
  EXPECT_EQ(n.dropped_unwritten, 0u);
}

TEST(NvmeTierTest, RestartKeepsNvmeChunks) {
  auto d = start_nvme_daemon();
  ASSERT_TRUE(d);
  const auto tokens = prompt(2, 16);
  {
    auto c = connect(*d);
    auto ns = c->register_layout(kLayout, "nvme");
    store(*c, *ns, tokens);
    flush_to_nvme(*c);
  }
  d->stop();
  ASSERT_TRUE(d->restart().ok());
  auto c = connect(*d);
  auto ns = c->register_layout(kLayout, "nvme");
  ASSERT_TRUE(ns.ok());
  auto look = c->lookup(*ns, tokens);
  ASSERT_EQ(look->cached_chunks, 16u);
  EXPECT_EQ(look->tiers[0], Tier::kNvme);
  EXPECT_EQ(load_and_verify(*c, *ns, tokens), 16u);
  EXPECT_EQ(nvme_stats(*c).recovered_chunks, 16u);
  EXPECT_NE(d->log().find("recovered 16 chunks"), std::string::npos) << d->log();
}

TEST(NvmeTierTest, SigkillDuringWriteHeavyLoadNeverServesATornChunk) {
  auto d = start_nvme_daemon();
  ASSERT_TRUE(d);
  std::mt19937 rng(20261122);
  uint64_t recovered_max = 0;
  for (int round = 0; round < 20; ++round) {
    std::vector<testing::Subprocess> writers;
    for (int k = 0; k < 2; ++k) {
      auto w = testing::Subprocess::spawn(
          {test_client(), "stress", d->socket_path(), std::to_string(round * 2 + k), "400"},
          d->dir() + "/writer.log");
      ASSERT_TRUE(w.ok());
      writers.push_back(std::move(*w));
    }
    // A random point of the write-heavy load: the kill is the event under test, not a wait.
    std::this_thread::sleep_for(std::chrono::milliseconds(20 + rng() % 250));
    d->kill();
    for (auto& w : writers) w.stop(5s);
    ASSERT_TRUE(d->restart().ok()) << "round " << round;
    // Everything the restarted daemon serves comes from NVMe (RAM is empty) and must be whole:
    // the stress client verifies every chunk it loads against its key.
    const auto verify = testing::run_process(
        {test_client(), "stress", d->socket_path(), std::to_string(1000 + round), "60"}, 60s);
    ASSERT_TRUE(verify.ok()) << "round " << round << ": " << verify.describe();
    auto c = connect(*d);
    const auto n = nvme_stats(*c);
    EXPECT_EQ(n.checksum_failures, 0u) << "round " << round;
    recovered_max = std::max(recovered_max, n.recovered_chunks);
  }
  EXPECT_GT(recovered_max, 0u) << "no round recovered a chunk: the kills never found one on disk";
  // And a full scrub of what is on disk now finds nothing damaged.
  auto c = connect(*d);
  const testing::NvmeScrub scrub = testing::scrub_nvme(*c);
  EXPECT_GT(scrub.checked, 0u);
  EXPECT_EQ(scrub.corrupt + scrub.unreadable, 0u);
}

// Stores the prompt on NVMe, stops the daemon, damages the chunks `damaged` names on disk, and
// starts the daemon again.
void store_damage_restart(TestDaemon& d, const std::vector<TokenId>& tokens,
                          std::initializer_list<size_t> damaged) {
  std::vector<ChunkKey> keys;
  {
    auto c = connect(d);
    auto ns = c->register_layout(kLayout, "nvme");
    keys = store(*c, *ns, tokens);
    flush_to_nvme(*c);
  }
  d.stop();
  for (size_t i : damaged) damage_chunk(d, keys[i]);
  ASSERT_TRUE(d.restart().ok());
}

TEST(NvmeTierTest, DamagedChunkBecomesAMissAndIsCountedNeverServed) {
  auto d = start_nvme_daemon();
  ASSERT_TRUE(d);
  const auto tokens = prompt(3, 8);
  // Chunk 5 would be found by a load; chunk 2 is found by the scrub first.
  ASSERT_NO_FATAL_FAILURE(store_damage_restart(*d, tokens, {5, 2}));
  auto c = connect(*d);
  auto ns = c->register_layout(kLayout, "nvme");
  ASSERT_EQ(c->lookup(*ns, tokens)->cached_chunks, 8u);  // lookup reads nothing

  // tierkvctl verify: one damaged chunk found and removed, the rest good.
  const auto ctl = testing::run_process({std::string(TIERKV_BINARY_DIR) + "/tools/tierkvctl",
                                         "--socket", d->socket_path(), "verify"});
  ASSERT_TRUE(ctl.ok()) << ctl.describe();
  EXPECT_NE(ctl.out.find("verified 8 NVMe chunks: 6 good, 2 corrupt"), std::string::npos)
      << ctl.out;
  // The prefix now ends before chunk 2; what is served verifies.
  EXPECT_EQ(c->lookup(*ns, tokens)->cached_chunks, 2u);
  EXPECT_EQ(load_and_verify(*c, *ns, tokens), 2u);
  EXPECT_EQ(nvme_stats(*c).checksum_failures, 2u);
}

TEST(NvmeTierTest, ChecksumFailureOnLoadIsAMiss) {
  auto d = start_nvme_daemon();
  ASSERT_TRUE(d);
  const auto tokens = prompt(4, 8);
  ASSERT_NO_FATAL_FAILURE(store_damage_restart(*d, tokens, {3}));
  auto c = connect(*d);
  auto ns = c->register_layout(kLayout, "nvme");
  EXPECT_EQ(load_and_verify(*c, *ns, tokens), 3u);  // chunk 3 is never handed out
  EXPECT_EQ(nvme_stats(*c).checksum_failures, 1u);
  EXPECT_EQ(c->lookup(*ns, tokens)->cached_chunks, 3u);
  EXPECT_NE(d->log().find("fails its checksum"), std::string::npos);
}

// A fault plan, a prompt stored, flushed and evicted to NVMe, then loaded, while a stress client
// runs against the same daemon and must finish with every byte it loaded verified.
struct FaultRun {
  proto::NvmeStats nvme;
  size_t loaded = 0;
};
FaultRun run_with_faults(const std::string& faults, bool expect_flush = true) {
  FaultRun out;
  // Host RAM holds both clients' chunks, so what reaches NVMe is decided by the faults alone,
  // not by evictions racing the retried writes.
  auto d = start_nvme_daemon("[nvme.fault_injection]\n" + faults, "write-through", "64MiB");
  EXPECT_TRUE(d);
  if (!d) return out;
  auto stress = testing::Subprocess::spawn(
      {test_client(), "stress", d->socket_path(), "77", "300"}, d->dir() + "/stress.log");
  EXPECT_TRUE(stress.ok());
  auto c = connect(*d);
  auto ns = c->register_layout(kLayout, "faults");
  const auto tokens = prompt(5, 32);
  const auto keys = store(*c, *ns, tokens);
  if (expect_flush) flush_to_nvme(*c);
  (void)c->evict(ns->id, keys);
  out.loaded = load_and_verify(*c, *ns, tokens);
  EXPECT_TRUE(stress->wait_exit(120s));
  EXPECT_EQ(stress->wait_status(), 0) << testing::read_file(d->dir() + "/stress.log");
  EXPECT_TRUE(d->running()) << d->log();
  out.nvme = nvme_stats(*c);
  return out;
}

TEST(NvmeFaultTest, ReadEioDropsTheChunkAndServesTheRest) {
  const auto r = run_with_faults("read_eio_every = 5\n");
  EXPECT_GE(r.nvme.read_errors, 1u);
  EXPECT_LT(r.loaded, 32u);  // the prefix ends at the first chunk that failed
  EXPECT_EQ(r.nvme.checksum_failures, 0u);
}

TEST(NvmeFaultTest, ShortReadIsAnErrorNeverAChunk) {
  const auto r = run_with_faults("short_read_every = 4\n");
  EXPECT_GE(r.nvme.read_errors, 1u);
  EXPECT_LT(r.loaded, 32u);
}

TEST(NvmeFaultTest, DiskFullStopsAdmittingAndKeepsServingFromRam) {
  auto d = start_nvme_daemon("[nvme.fault_injection]\nenospc_after = \"512KiB\"\n");
  ASSERT_TRUE(d);
  auto c = connect(*d);
  auto ns = c->register_layout(kLayout, "full");
  const auto tokens = prompt(6, 32);  // 2 MiB: more than the disk takes
  store(*c, *ns, tokens);
  ASSERT_TRUE(testing::wait_until([&] { return nvme_stats(*c).admitting == 0; }, 30s));
  const auto n = nvme_stats(*c);
  EXPECT_GT(n.dirty_chunks, 0u);
  EXPECT_EQ(n.write_errors, 0u);  // disk full is not an I/O error
  EXPECT_EQ(load_and_verify(*c, *ns, tokens), 32u);  // host RAM still serves all of it
  EXPECT_NE(d->log().find("disk full"), std::string::npos);
  // tierkvctl flush reports what it could not write instead of hanging.
  const auto ctl = testing::run_process(
      {std::string(TIERKV_BINARY_DIR) + "/tools/tierkvctl", "--socket", d->socket_path(), "flush"},
      60s);
  EXPECT_FALSE(ctl.ok());
  EXPECT_NE(ctl.out.find("could not be written"), std::string::npos) << ctl.describe();
}

TEST(NvmeFaultTest, WriteEioKeepsTheChunkInRamAndRetries) {
  const auto r = run_with_faults("write_eio_every = 3\n");
  EXPECT_GE(r.nvme.write_errors, 1u);
  EXPECT_EQ(r.loaded, 32u);  // retried writes got every chunk down
}

TEST(NvmeFaultTest, SlowDiskIsSlowNotWrong) {
  const auto r = run_with_faults("slow_every = 2\nslow_ms = 20\n");
  EXPECT_EQ(r.loaded, 32u);
  EXPECT_EQ(r.nvme.read_errors, 0u);
}

}  // namespace
}  // namespace tierkv
