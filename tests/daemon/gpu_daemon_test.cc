// The GPU tier's off path through a real tierkvd: off by default, and off (saying why) when it is
// configured but tierkvd has no CUDA or no such device; the daemon serves all the same, stats and
// `tierkvctl stats` give the reason, and an engine asking for the pool is told why it cannot
// have it. (tests/client/gpu_tier_load_test.cc covers the tier on a GPU.)
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "support/process.h"
#include "support/test_daemon.h"
#include "tierkv/client.h"
#include "tierkv/gpu_pool.h"

namespace tierkv {
namespace {

using testing::ProcessResult;
using testing::TestDaemon;
using testing::TestDaemonOptions;

const Layout kLayout{2, 2, 64, DType::kBFloat16, 64};  // 64 KiB chunks

std::string ctl() { return std::string(TIERKV_BINARY_DIR) + "/tools/tierkvctl"; }

// Stores and loads one prompt: the daemon works whatever the GPU tier is doing.
void expect_host_tier_serves(Client& client) {
  auto ns = client.register_layout(kLayout, "gpu-off");
  ASSERT_TRUE(ns.ok()) << ns.status().to_string();
  std::vector<TokenId> tokens(4 * 64);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<TokenId>(i * 3);
  std::vector<std::byte> kv(4 * ns->chunk_bytes(), std::byte{0x5A});
  auto put = client.put(*ns, tokens, kv);
  ASSERT_TRUE(put.ok()) << put.status().to_string();
  EXPECT_EQ(put->written, 4u);
  auto look = client.lookup(*ns, tokens);
  ASSERT_TRUE(look.ok());
  EXPECT_EQ(look->tiers, std::vector<Tier>(4, Tier::kHost));
  auto lease = client.load(*ns, tokens);
  ASSERT_TRUE(lease.ok()) << lease.status().to_string();
  ASSERT_EQ(lease->chunks(), 4u);
  EXPECT_EQ(lease->gpu_chunks(), 0u);
  EXPECT_EQ(lease->chunk(3)[17], std::byte{0x5A});
}

void expect_off(const TestDaemon& daemon, const std::string& why) {
  auto client = Client::connect({daemon.socket_path(), "gpu-off-test", false});
  ASSERT_TRUE(client.ok()) << client.status().to_string();
  auto st = (*client)->stats();
  ASSERT_TRUE(st.ok()) << st.status().to_string();
  EXPECT_EQ(st->gpu_status.rfind("off (", 0), 0u) << st->gpu_status;
  EXPECT_NE(st->gpu_status.find(why), std::string::npos) << st->gpu_status;
  EXPECT_EQ(st->gpu.device, -1);
  for (const auto& t : st->tiers) {
    if (t.tier == Tier::kGpu) {
      EXPECT_EQ(t.enabled, 0);
    }
  }
  // An engine that asks for the pool learns why there is none.
  auto pool = DaemonGpuPool::attach(*client);
  ASSERT_FALSE(pool.ok());
  EXPECT_EQ(pool.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(pool.status().message().find("the GPU tier is " + st->gpu_status), std::string::npos)
      << pool.status().message();
  expect_host_tier_serves(**client);

  const ProcessResult text =
      testing::run_process({ctl(), "--socket", daemon.socket_path(), "stats"});
  ASSERT_TRUE(text.ok()) << text.describe();
  EXPECT_NE(text.out.find("gpu: " + st->gpu_status), std::string::npos) << text.out;
  const ProcessResult json =
      testing::run_process({ctl(), "--socket", daemon.socket_path(), "stats", "--json"});
  ASSERT_TRUE(json.ok()) << json.describe();
  EXPECT_NE(json.out.find("\"gpu\":{\"status\":\"off ("), std::string::npos) << json.out;
}

TEST(GpuDaemonTest, OffByDefault) {
  auto daemon = TestDaemon::start();
  ASSERT_TRUE(daemon.ok()) << daemon.status().to_string();
  expect_off(**daemon, "gpu.capacity = 0");
}

TEST(GpuDaemonTest, ConfiguredWithoutAUsableDeviceTheDaemonRunsWithoutIt) {
  // No machine has device 1000: without CUDA in the build, without a GPU, or with one, the tier
  // is off for a reason the daemon states, and it starts and serves regardless.
  TestDaemonOptions o;
  o.extra_toml = "[gpu]\ndevice = 1000\ncapacity = \"64MiB\"\n";
  auto daemon = TestDaemon::start(o);
  ASSERT_TRUE(daemon.ok()) << daemon.status().to_string();
  expect_off(**daemon, "");
  const std::string log = (*daemon)->log();
  EXPECT_NE(log.find("gpu tier: off ("), std::string::npos) << log;
  EXPECT_TRUE(log.find("no CUDA device") != std::string::npos ||
              log.find("gpu.device = 1000 does not exist") != std::string::npos ||
              log.find("built without CUDA") != std::string::npos)
      << log;
}

TEST(GpuDaemonTest, DeviceOffTurnsTheTierOff) {
  TestDaemonOptions o;
  o.extra_toml = "[gpu]\ndevice = \"off\"\ncapacity = \"64MiB\"\n";
  auto daemon = TestDaemon::start(o);
  ASSERT_TRUE(daemon.ok()) << daemon.status().to_string();
  expect_off(**daemon, "gpu.device = off");
}

}  // namespace
}  // namespace tierkv
