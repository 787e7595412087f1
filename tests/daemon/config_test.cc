#include "tierkv/daemon/config.h"

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

namespace tierkv::daemon {
namespace {

TEST(ConfigTest, EmbeddedDefaultParsesToTheStructDefaults) {
  auto c = parse_config(default_config_toml(), "default");
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  const DaemonConfig d;
  EXPECT_EQ(c->socket_path, d.socket_path);
  EXPECT_EQ(c->socket_mode, d.socket_mode);
  EXPECT_EQ(c->max_clients, d.max_clients);
  EXPECT_EQ(c->cache.host_capacity_bytes, d.cache.host_capacity_bytes);
  EXPECT_EQ(c->cache.slab_bytes, d.cache.slab_bytes);
  EXPECT_EQ(c->cache.min_slot_bytes, d.cache.min_slot_bytes);
  EXPECT_EQ(c->cache.prefault, d.cache.prefault);
  EXPECT_EQ(c->cache.default_chunk_tokens, 256u);
  EXPECT_EQ(c->log_level, d.log_level);
}

TEST(ConfigTest, ValuesAreRead) {
  auto c = parse_config(
      "[server]\nsocket_path = \"/tmp/x.sock\"\nallowed_uids = [1000, 1001]\n"
      "[host]\ncapacity = \"1GiB\"\nprefault = false\n[cache]\nchunk_tokens = 512\n"
      "[log]\nlevel = \"debug\"\n",
      "t.toml");
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_EQ(c->socket_path, "/tmp/x.sock");
  EXPECT_EQ(c->allowed_uids, (std::vector<uint32_t>{1000, 1001}));
  EXPECT_EQ(c->cache.host_capacity_bytes, 1ull << 30);
  EXPECT_FALSE(c->cache.prefault);
  EXPECT_EQ(c->cache.default_chunk_tokens, 512u);
  EXPECT_EQ(c->log_level, "debug");
}

TEST(ConfigTest, PrefillDefaultsAndValues) {
  auto c = parse_config(default_config_toml(), "default");
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  const scheduler::PrefillOptions d;
  EXPECT_EQ(c->prefill.queue_depth, d.queue_depth);
  EXPECT_EQ(c->prefill.max_sessions_per_client, d.max_sessions_per_client);
  EXPECT_EQ(c->prefill.recent_sessions, d.recent_sessions);
  EXPECT_DOUBLE_EQ(c->prefill.default_profile.a_ms_per_token, d.default_profile.a_ms_per_token);
  EXPECT_DOUBLE_EQ(c->prefill.default_profile.b_ms_per_token2, d.default_profile.b_ms_per_token2);
  EXPECT_DOUBLE_EQ(c->prefill.tier_costs.nvme.read_GBps, d.tier_costs.nvme.read_GBps);
  EXPECT_DOUBLE_EQ(c->prefill.tier_costs.nvme.latency_us, d.tier_costs.nvme.latency_us);
  EXPECT_DOUBLE_EQ(c->prefill.tier_costs.remote.read_GBps, d.tier_costs.remote.read_GBps);
  EXPECT_DOUBLE_EQ(c->prefill.tier_costs.remote.latency_us, d.tier_costs.remote.latency_us);
  EXPECT_FALSE(c->prefill.host_throttle.enabled());
  EXPECT_FALSE(c->prefill.nvme_throttle.enabled());

  auto v = parse_config(
      "[prefill]\nqueue_depth = 3\ncompute_a_ms_per_token = 0.05\ncompute_b_ms_per_token2 = 0\n"
      "nvme_read_GBps = 6\nhost_read_throttle_GBps = 0.5\nhost_read_throttle_latency_us = 80.0\n"
      "nvme_read_throttle_GBps = 0.25\nnvme_read_throttle_latency_us = 30\n",
      "t.toml");
  ASSERT_TRUE(v.ok()) << v.status().to_string();
  EXPECT_EQ(v->prefill.queue_depth, 3u);
  EXPECT_DOUBLE_EQ(v->prefill.default_profile.a_ms_per_token, 0.05);
  EXPECT_DOUBLE_EQ(v->prefill.default_profile.b_ms_per_token2, 0);
  EXPECT_DOUBLE_EQ(v->prefill.tier_costs.nvme.read_GBps, 6.0);  // an integer is a number too
  EXPECT_TRUE(v->prefill.host_throttle.enabled());
  EXPECT_DOUBLE_EQ(v->prefill.host_throttle.latency_us, 80.0);
  EXPECT_DOUBLE_EQ(v->prefill.nvme_throttle.read_GBps, 0.25);
  EXPECT_DOUBLE_EQ(v->prefill.nvme_throttle.latency_us, 30.0);
}

TEST(ConfigTest, ErrorsNameTheKeyAndTheLine) {
  struct Case {
    const char* toml;
    const char* expect;
  } cases[] = {
      {"[host]\ncapcity = \"1GiB\"\n", "t.toml:2: host.capcity is not a known option"},
      {"[host]\ncapacity = \"1 parsec\"\n", "unknown unit 'parsec'"},
      {"[host]\ncapacity = true\n", "host.capacity must be a size"},
      {"[host]\ncapacity = \"1MiB\"\n", "smaller than one slab"},
      {"[cache]\nchunk_tokens = -5\n", "cache.chunk_tokens = -5 is out of range"},
      {"[cache]\nchunk_tokens = 0\n", "chunk_tokens must be at least 1"},
      {"[log]\nlevel = \"loud\"\n", "log.level 'loud'"},
      {"[server]\nallowed_uids = [\"root\"]\n", "numeric uids"},
      {"[server\n", "t.toml:1"},
      {"[prefill]\nqueue_depth = 0\n", "prefill.queue_depth must be at least 1"},
      {"[prefill]\ncompute_a_ms_per_token = -0.1\n", "t.toml:2: prefill.compute_a_ms_per_token = -0.1"},
      {"[prefill]\nnvme_read_GBps = \"fast\"\n", "prefill.nvme_read_GBps must be a number"},
      {"[prefill]\nnvme_read_GBps = 0.0\n", "prefill.nvme_read_GBps = 0.0"},
      {"[prefill]\nqueue_dept = 4\n", "prefill.queue_dept is not a known option"},
  };
  for (const auto& c : cases) {
    auto r = parse_config(c.toml, "t.toml");
    ASSERT_FALSE(r.ok()) << c.toml;
    EXPECT_NE(r.status().message().find(c.expect), std::string::npos)
        << "config: " << c.toml << "\nmessage: " << r.status().message();
  }
}

TEST(ConfigTest, NvmeCodecDefaultsAndValues) {
  auto d = parse_config(default_config_toml(), "default");
  ASSERT_TRUE(d.ok());
  const scheduler::NvmeTierOptions defaults;
  EXPECT_EQ(d->cache.nvme.codec, "raw");
  EXPECT_EQ(d->cache.nvme.codec, defaults.codec);
  EXPECT_TRUE(d->cache.nvme.codec_by_tenant.empty());
  EXPECT_EQ(d->cache.nvme.encode_threads, defaults.encode_threads);
  EXPECT_EQ(d->cache.nvme.decode_threads, defaults.decode_threads);
  EXPECT_EQ(d->cache.nvme.staging_bytes, defaults.staging_bytes);

  auto c = parse_config(
      "[nvme]\ncodec = \"zstd:3:bits\"\nencode_threads = 6\ndecode_threads = 2\n"
      "staging_size = \"64MiB\"\n[nvme.codec_by_tenant]\n\"batch jobs\" = \"fp8\"\n"
      "archive = \"int4:g64\"\nrag = \"fused:0.9\"\n",
      "t.toml");
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_EQ(c->cache.nvme.codec, "zstd:3:bits");
  EXPECT_EQ(c->cache.nvme.encode_threads, 6u);
  EXPECT_EQ(c->cache.nvme.decode_threads, 2u);
  EXPECT_EQ(c->cache.nvme.staging_bytes, 64ull << 20);
  const std::vector<std::pair<std::string, std::string>> want = {
      {"archive", "int4:g64"}, {"batch jobs", "fp8"}, {"rag", "fused:0.9"}};
  EXPECT_EQ(c->cache.nvme.codec_by_tenant, want);
}

TEST(ConfigTest, NvmeCodecErrorsNameTheKeyAndTheValue) {
  struct Case {
    const char* toml;
    const char* expect;
  } cases[] = {
      {"[nvme]\ncodec = \"lz4\"\n", "t.toml:2: nvme.codec = \"lz4\": codec 'lz4'"},
      {"[nvme]\ncodec = \"zstd:42\"\n", "nvme.codec = \"zstd:42\""},
      {"[nvme]\ncodec = \"fused:1.5\"\n", "nvme.codec = \"fused:1.5\": codec 'fused:1.5'"},
      {"[nvme]\ncodec = 1\n", "nvme.codec must be a codec string"},
      {"[nvme.codec_by_tenant]\nbulk = \"fused:0.9:rep=int2\"\n",
       "t.toml:2: nvme.codec_by_tenant.bulk = \"fused:0.9:rep=int2\": codec"},
      {"[nvme.codec_by_tenant]\nbulk = \"int4:g0\"\n", "nvme.codec_by_tenant.bulk = \"int4:g0\""},
      {"[nvme.codec_by_tenant]\nbulk = 8\n", "nvme.codec_by_tenant.bulk must be a codec string"},
      {"[nvme]\ncodec_by_tenant = \"fp8\"\n", "nvme.codec_by_tenant must be a table"},
      {"[nvme]\nstaging_size = \"64KiB\"\n", "nvme.staging_size = 65536 bytes is less than"},
      {"[nvme]\nencode_threads = -1\n", "nvme.encode_threads = -1 is out of range"},
      {"[nvme]\ncodecs = \"zstd\"\n", "nvme.codecs is not a known option"},
  };
  for (const auto& c : cases) {
    auto r = parse_config(c.toml, "t.toml");
    ASSERT_FALSE(r.ok()) << c.toml;
    EXPECT_NE(r.status().message().find(c.expect), std::string::npos)
        << "config: " << c.toml << "\nmessage: " << r.status().message();
  }
}

TEST(ConfigTest, Sizes) {
  EXPECT_EQ(*parse_size("64KiB"), 64u << 10);
  EXPECT_EQ(*parse_size("2 GiB"), 2ull << 30);
  EXPECT_EQ(*parse_size("10GB"), 10000000000ull);
  EXPECT_EQ(*parse_size("4096"), 4096u);
  EXPECT_FALSE(parse_size("GiB").ok());
  EXPECT_FALSE(parse_size("99999999999999999999").ok());
  EXPECT_EQ(format_size(3ull << 29), "1.5 GiB");
  EXPECT_EQ(format_size(64ull << 20), "64 MiB");
}

TEST(ConfigTest, ReadmeDocumentsEveryOptionAsTheDaemonDefinesIt) {
  // The README renders the embedded default config verbatim; regenerate it with
  // `tierkvd --print-default-config` when an option changes.
  std::ifstream in(std::string(TIERKV_SOURCE_DIR) + "/README.md");
  ASSERT_TRUE(in) << "README.md not found";
  std::stringstream readme;
  readme << in.rdbuf();
  EXPECT_NE(readme.str().find(std::string(default_config_toml())), std::string::npos)
      << "README.md's configuration block is out of date with the daemon's embedded default";
}

}  // namespace
}  // namespace tierkv::daemon
