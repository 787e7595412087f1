// End to end: the real tierkvd, and tierkv-demo, tierkvctl and tierkv-bench run as processes
// against it, the way an operator would run them.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <string>
#include <vector>

#include "support/json.h"
#include "support/process.h"
#include "support/test_daemon.h"

namespace tierkv::testing {
namespace {

std::string tool(const std::string& name) {
  return std::string(TIERKV_BINARY_DIR) + "/tools/" + name;
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// Parses a tool's stdout, which must be exactly one JSON object.
JsonValue parse_object(const ProcessResult& r) {
  std::string error;
  auto doc = parse_json(r.out, &error);
  EXPECT_TRUE(doc.has_value()) << error << "\n" << r.describe();
  if (!doc) return JsonValue(JsonValue::Object{});
  EXPECT_TRUE(doc->is_object()) << r.out;
  return *doc;
}

class ToolsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    TestDaemonOptions options;
    options.host_capacity = "256MiB";
    auto d = TestDaemon::start(options);
    ASSERT_TRUE(d.ok()) << d.status().message();
    daemon_ = std::move(*d);
  }
  void TearDown() override {
    if (!daemon_) return;
    // Whatever the tools did, the daemon shuts down cleanly (under ASan: without leaks).
    const int status = daemon_->stop();
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
        << "tierkvd wait status " << status << "\n--- daemon log ---\n"
        << daemon_->log();
  }

  ProcessResult run(const std::string& name, std::vector<std::string> args,
                    std::chrono::milliseconds timeout = 120s) {
    args.insert(args.begin(), tool(name));
    return run_process(args, timeout);
  }
  ProcessResult ctl(std::vector<std::string> args) {
    args.insert(args.begin(), {"--socket", daemon_->socket_path()});
    return run("tierkvctl", std::move(args));
  }
  // Runs the demo and returns the file it wrote its prompt's token ids to.
  std::string run_demo() {
    std::string tokens = daemon_->dir() + "/demo_tokens.txt";
    const ProcessResult r =
        run("tierkv-demo", {"--socket", daemon_->socket_path(), "--tokens-out", tokens});
    EXPECT_TRUE(r.ok()) << r.describe() << "\n--- daemon log ---\n" << daemon_->log();
    return tokens;
  }
  // The demo's namespace id, as `tierkvctl ls --json` shows it.
  std::string demo_namespace() {
    const ProcessResult r = ctl({"ls", "--json"});
    EXPECT_TRUE(r.ok()) << r.describe();
    const JsonValue doc = parse_object(r);
    for (const JsonValue& ns : doc["namespaces"].as_array()) {
      if (ns["tenant"].as_string() == "demo") return ns["id"].as_string();
    }
    ADD_FAILURE() << "no demo namespace in " << r.out;
    return "";
  }

  std::unique_ptr<TestDaemon> daemon_;
};

TEST_F(ToolsTest, DemoStoresFindsLoadsAndVerifies) {
  const std::string socket = daemon_->socket_path();
  ProcessResult first = run("tierkv-demo", {"--socket", socket});
  ASSERT_TRUE(first.ok()) << first.describe() << "\n--- daemon log ---\n" << daemon_->log();
  EXPECT_TRUE(contains(first.out, "16 chunks written")) << first.out;
  EXPECT_TRUE(contains(first.out, "verified 16777216 bytes: OK")) << first.out;
  // 3000 shared tokens at 256 tokens per chunk: 11 shared full chunks.
  EXPECT_TRUE(contains(first.out, "hits 11/16 chunks")) << first.out;
  EXPECT_TRUE(contains(first.out,
                       "demo: stored 16 chunks, lookup hit 16/16 (host), loaded and "
                       "verified 16 MiB in place"))
      << first.out;

  // Idempotent: the second run finds everything cached and still checks every byte.
  ProcessResult second = run("tierkv-demo", {"--socket", socket});
  ASSERT_TRUE(second.ok()) << second.describe();
  EXPECT_TRUE(contains(second.out, "all 16 chunks already cached")) << second.out;
  EXPECT_TRUE(contains(second.out, "verified 16777216 bytes: OK")) << second.out;
}

TEST_F(ToolsTest, DemoFailsClearlyWithoutADaemon) {
  const std::string socket = daemon_->dir() + "/nobody.sock";
  const ProcessResult r = run("tierkv-demo", {"--socket", socket});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(contains(r.err, socket)) << r.err;
}

TEST_F(ToolsTest, StatsJsonShowsTheDemoInTheHostTier) {
  run_demo();
  const ProcessResult r = ctl({"stats", "--json"});
  ASSERT_TRUE(r.ok()) << r.describe();
  const JsonValue doc = parse_object(r);
  for (const char* key : {"version", "pid", "uptime_ms", "sessions", "namespaces", "read_leases",
                          "pending_writes", "requests", "request_errors", "tiers"}) {
    EXPECT_TRUE(doc.has(key)) << key << " missing from " << r.out;
  }
  EXPECT_EQ(doc["pid"].as_number(), daemon_->pid());
  const auto& tiers = doc["tiers"].as_array();
  ASSERT_EQ(tiers.size(), 4u) << r.out;
  std::vector<std::string> names;
  for (const JsonValue& t : tiers) {
    for (const char* key : {"tier", "enabled", "capacity_bytes", "used_bytes", "chunks", "hits",
                            "misses", "evictions", "bytes_in", "bytes_out"}) {
      EXPECT_TRUE(t.has(key)) << key << " missing from a tier in " << r.out;
    }
    names.push_back(t["tier"].as_string());
    if (t["tier"].as_string() != "host") continue;
    EXPECT_TRUE(t["enabled"].as_bool());
    EXPECT_EQ(t["capacity_bytes"].as_number(), 256.0 * (1 << 20));
    EXPECT_GE(t["chunks"].as_number(), 16);
    EXPECT_GE(t["hits"].as_number(), 16);
    EXPECT_GE(t["used_bytes"].as_number(), 16.0 * (1 << 20));
  }
  EXPECT_EQ(names, (std::vector<std::string>{"gpu", "host", "nvme", "remote"}));

  // The human form: one line per tier, a disabled one marked off.
  const ProcessResult human = ctl({"stats"});
  ASSERT_TRUE(human.ok()) << human.describe();
  EXPECT_TRUE(contains(human.out, "HIT RATIO")) << human.out;
  EXPECT_TRUE(contains(human.out, "256 MiB")) << human.out;
}

TEST_F(ToolsTest, StatusReportsTheDaemon) {
  const ProcessResult r = ctl({"status", "--json"});
  ASSERT_TRUE(r.ok()) << r.describe();
  const JsonValue doc = parse_object(r);
  EXPECT_EQ(doc["pid"].as_number(), daemon_->pid());
  EXPECT_FALSE(doc["version"].as_string().empty());
  EXPECT_GE(doc["sessions"].as_number(), 1);  // this one

  const ProcessResult human = ctl({"status"});
  ASSERT_TRUE(human.ok()) << human.describe();
  EXPECT_TRUE(contains(human.out, "tierkvd is running")) << human.out;
  EXPECT_TRUE(contains(human.out, std::to_string(daemon_->pid()))) << human.out;
}

TEST_F(ToolsTest, StatusWithAWrongSocketNamesThePath) {
  const std::string socket = daemon_->dir() + "/wrong.sock";
  const ProcessResult r = run("tierkvctl", {"--socket", socket, "status"});
  EXPECT_NE(r.exit_code, 0) << r.describe();
  EXPECT_TRUE(contains(r.err, "tierkvd is not running at " + socket)) << r.err;
  EXPECT_TRUE(r.out.empty()) << r.out;

  // $TIERKV_SOCKET is the default when --socket is not given.
  const ProcessResult env =
      run_process({tool("tierkvctl"), "status", "--json"}, 60s, {"TIERKV_SOCKET=" + socket});
  EXPECT_NE(env.exit_code, 0);
  EXPECT_TRUE(contains(env.err, socket)) << env.err;
  EXPECT_TRUE(env.out.empty()) << env.out;
}

TEST_F(ToolsTest, LsJsonListsTheDemoNamespace) {
  run_demo();
  const ProcessResult r = ctl({"ls", "--json"});
  ASSERT_TRUE(r.ok()) << r.describe();
  const JsonValue doc = parse_object(r);
  const auto& namespaces = doc["namespaces"].as_array();
  ASSERT_EQ(namespaces.size(), 1u) << r.out;
  const JsonValue& ns = namespaces[0];
  EXPECT_EQ(ns["tenant"].as_string(), "demo");
  EXPECT_EQ(ns["id"].as_string().size(), 16u);
  EXPECT_EQ(ns["chunk_tokens"].as_number(), 256);
  EXPECT_EQ(ns["chunk_bytes"].as_number(), 1 << 20);
  EXPECT_EQ(ns["chunks"].as_number(), 16);
  EXPECT_EQ(ns["bytes"].as_number(), 16 << 20);

  const ProcessResult human = ctl({"ls"});
  ASSERT_TRUE(human.ok()) << human.describe();
  EXPECT_TRUE(contains(human.out, ns["id"].as_string())) << human.out;
  EXPECT_TRUE(contains(human.out, "1 MiB")) << human.out;
}

TEST_F(ToolsTest, InspectShowsTheCachedChunks) {
  const std::string tokens = run_demo();
  const std::string ns = demo_namespace();

  const ProcessResult human = ctl({"inspect", "--ns", ns, tokens});
  ASSERT_TRUE(human.ok()) << human.describe();
  EXPECT_TRUE(contains(human.out, "16 of 16 leading chunks")) << human.out;
  EXPECT_TRUE(contains(human.out, "4,096 tokens, 16 full chunks")) << human.out;

  const ProcessResult json = ctl({"inspect", "--json", "--ns", "0x" + ns, tokens});
  ASSERT_TRUE(json.ok()) << json.describe();
  const JsonValue doc = parse_object(json);
  EXPECT_EQ(doc["total_chunks"].as_number(), 16);
  EXPECT_EQ(doc["cached_chunks"].as_number(), 16);
  const auto& chunks = doc["chunks"].as_array();
  ASSERT_EQ(chunks.size(), 16u);
  for (const JsonValue& c : chunks) {
    EXPECT_EQ(c["tier"].as_string(), "host");
    EXPECT_EQ(c["key"].as_string().size(), 32u);
  }

  // The first 3000 tokens as a JSON array: 11 full chunks, all cached; the rest is a partial chunk.
  std::string text = read_file(tokens);
  std::string array = "[";
  size_t n = 0, pos = 0;
  while (n < 3000) {
    const size_t start = text.find_first_not_of(" \n", pos);
    pos = text.find_first_of(" \n", start);
    array += (n++ ? ", " : "") + text.substr(start, pos - start);
  }
  write_file(daemon_->dir() + "/prefix.json", array + "]\n");
  const ProcessResult prefix = ctl({"inspect", "--ns", ns, daemon_->dir() + "/prefix.json"});
  ASSERT_TRUE(prefix.ok()) << prefix.describe();
  EXPECT_TRUE(contains(prefix.out, "11 of 11 leading chunks")) << prefix.out;
  EXPECT_TRUE(contains(prefix.out, "184 tokens in a trailing partial chunk")) << prefix.out;
}

TEST_F(ToolsTest, InspectRejectsABadTokenFile) {
  run_demo();
  const std::string ns = demo_namespace();
  const std::string bad = daemon_->dir() + "/bad.txt";
  write_file(bad, "1 2 3\n4 abc 5\n");
  const ProcessResult r = ctl({"inspect", "--ns", ns, bad});
  EXPECT_NE(r.exit_code, 0) << r.describe();
  EXPECT_TRUE(contains(r.err, bad + ": line 2: 'abc' is not a token id")) << r.err;
  EXPECT_TRUE(r.out.empty()) << r.out;

  const ProcessResult missing = ctl({"inspect", "--ns", ns, daemon_->dir() + "/none.txt"});
  EXPECT_NE(missing.exit_code, 0);
  EXPECT_TRUE(contains(missing.err, "No such file or directory")) << missing.err;

  const ProcessResult bad_ns = ctl({"inspect", "--ns", "xyz", daemon_->dir() + "/bad.txt"});
  EXPECT_NE(bad_ns.exit_code, 0);
  write_file(daemon_->dir() + "/ok.txt", "1 2 3");
  const ProcessResult unknown_ns = ctl({"inspect", "--ns", "0x1", daemon_->dir() + "/ok.txt"});
  EXPECT_NE(unknown_ns.exit_code, 0);
  EXPECT_TRUE(contains(unknown_ns.err, "namespace 0000000000000001 is not registered"))
      << unknown_ns.err;
}

TEST_F(ToolsTest, EvictByPromptAndByNamespace) {
  const std::string tokens = run_demo();
  const std::string ns = demo_namespace();

  const ProcessResult by_prompt = ctl({"evict", "--ns", ns, tokens});
  ASSERT_TRUE(by_prompt.ok()) << by_prompt.describe();
  EXPECT_TRUE(contains(by_prompt.out, "evicted 16 chunks")) << by_prompt.out;
  const ProcessResult after = ctl({"inspect", "--json", "--ns", ns, tokens});
  ASSERT_TRUE(after.ok()) << after.describe();
  EXPECT_EQ(parse_object(after)["cached_chunks"].as_number(), 0);

  run_demo();
  const ProcessResult whole = ctl({"evict", "--json", "--delete", "--ns", ns});
  ASSERT_TRUE(whole.ok()) << whole.describe();
  const JsonValue doc = parse_object(whole);
  EXPECT_EQ(doc["removed"].as_number(), 16);
  EXPECT_EQ(doc["action"].as_string(), "delete");
  EXPECT_EQ(doc["scope"].as_string(), "namespace");
}

TEST_F(ToolsTest, CtlRejectsUsageErrors) {
  EXPECT_NE(run("tierkvctl", {}).exit_code, 0);
  EXPECT_NE(run("tierkvctl", {"frobnicate"}).exit_code, 0);
  EXPECT_NE(ctl({"inspect"}).exit_code, 0);  // --ns and the file are required
}

// The keys tierkv-bench host --json must print, whatever the figures are on this machine.
void expect_host_bench_json(const ProcessResult& r) {
  ASSERT_TRUE(r.ok()) << r.describe();
  const JsonValue doc = parse_object(r);
  for (const char* key : {"memcpy_GBps", "put_GBps_2MiB", "put_GBps_32MiB", "put_vs_memcpy_2MiB",
                          "put_vs_memcpy_32MiB", "load_p50_us_64chunks", "load_p99_us_64chunks",
                          "lookups_per_s_512chunks", "lookups_per_s_512chunks_keys_precomputed"}) {
    ASSERT_TRUE(doc.has(key)) << key << " missing from " << r.out;
    EXPECT_TRUE(doc[key].is_number()) << key;
    EXPECT_GT(doc[key].as_number(), 0) << key;
  }
  ASSERT_TRUE(doc.has("targets")) << r.out;
  for (const char* key : {"put_vs_memcpy_2MiB", "put_vs_memcpy_32MiB", "load_p50_us_64chunks",
                          "lookups_per_s_512chunks"}) {
    EXPECT_TRUE(doc["targets"].has(key)) << key << " has no target in " << r.out;
  }
  EXPECT_TRUE(doc["pass"].is_bool());
}

TEST_F(ToolsTest, BenchHostQuickStartsItsOwnDaemon) {
  // The daemon is found in the build tree next to the tools, as a user running it from there.
  const ProcessResult r =
      run("tierkv-bench", {"host", "--quick", "--json", "--host-capacity-gib", "1"}, 300s);
  expect_host_bench_json(r);
}

TEST_F(ToolsTest, BenchHostQuickUsesARunningDaemonAndLeavesNoChunks) {
  const ProcessResult r =
      run("tierkv-bench", {"host", "--quick", "--json", "--socket", daemon_->socket_path()}, 300s);
  expect_host_bench_json(r);
  // It leaves no chunks behind in the daemon it borrowed (namespaces stay registered).
  const ProcessResult ls = ctl({"ls", "--json"});
  ASSERT_TRUE(ls.ok()) << ls.describe();
  const JsonValue doc = parse_object(ls);
  size_t bench_namespaces = 0;
  for (const JsonValue& ns : doc["namespaces"].as_array()) {
    if (ns["tenant"].as_string() != "tierkv-bench") continue;
    ++bench_namespaces;
    EXPECT_EQ(ns["chunks"].as_number(), 0) << ls.out;
  }
  EXPECT_EQ(bench_namespaces, 3u) << ls.out;
}

TEST_F(ToolsTest, BenchNvmeQuickReportsEveryFigureAgainstTheRawLimit) {
  TempDir dir;
  const ProcessResult r = run("tierkv-bench", {"nvme", "--quick", "--json", "--dir", dir.path()}, 300s);
  ASSERT_TRUE(r.ok()) << r.describe();
  const JsonValue doc = parse_object(r);
  for (const char* key : {"raw_read_GBps", "raw_write_GBps", "load_vs_raw_2MiB", "load_vs_raw_32MiB",
                          "writedown_vs_raw_2MiB", "writedown_vs_raw_32MiB",
                          "random_load_iops_256KiB", "raw_random_read_iops_256KiB"}) {
    ASSERT_TRUE(doc.has(key)) << key << " missing from " << r.out;
    EXPECT_GT(doc[key].as_number(), 0) << key;
  }
  for (const char* key : {"load_vs_raw_2MiB", "load_vs_raw_32MiB", "writedown_vs_raw_32MiB"}) {
    EXPECT_TRUE(doc["targets"].has(key)) << key << " has no target in " << r.out;
  }
  // Every chunk the bench loaded back verified.
  EXPECT_EQ(doc["checksum_failures"].as_number(), 0) << r.out;
  EXPECT_EQ(doc["read_errors"].as_number(), 0) << r.out;
}

TEST_F(ToolsTest, BenchCakeQuickReportsEveryCellAndTheSummary) {
  TempDir dir;
  const ProcessResult r =
      run("tierkv-bench", {"cake", "--quick", "--json", "--dir", dir.path()}, 300s);
  ASSERT_TRUE(r.ok()) << r.describe();
  const JsonValue doc = parse_object(r);
  ASSERT_TRUE(doc.has("cells")) << r.out;
  const auto& cells = doc["cells"].as_array();
  ASSERT_FALSE(cells.empty()) << r.out;
  size_t grid = 0, big = 0;
  for (const JsonValue& c : cells) {
    for (const char* key : {"tokens", "ratio", "compute_only_ms", "load_only_ms", "bidir_ms",
                            "oracle_ms", "bidir_over_oracle", "meeting_point"}) {
      ASSERT_TRUE(c.has(key)) << key << " missing from a cell of " << r.out;
      EXPECT_TRUE(c[key].is_number()) << key;
    }
    for (const char* key : {"tokens", "compute_only_ms", "load_only_ms", "bidir_ms", "oracle_ms"}) {
      EXPECT_GT(c[key].as_number(), 0) << key;
    }
    grid += c["layout"].as_string() == "2KiB/token" ? 1 : 0;
    big += c["layout"].as_string() == "128KiB/token" ? 1 : 0;
  }
  EXPECT_GT(grid, 0u) << r.out;
  EXPECT_GT(big, 0u) << r.out;
  ASSERT_TRUE(doc.has("summary")) << r.out;
  for (const char* key : {"max_bidir_over_oracle", "mean_speedup_vs_mean_baselines",
                          "max_bidir_over_best_baseline"}) {
    ASSERT_TRUE(doc["summary"].has(key)) << key << " missing from " << r.out;
    EXPECT_TRUE(doc["summary"][key].is_number()) << key;
    EXPECT_TRUE(doc["targets"].has(key)) << key << " has no target in " << r.out;
  }
  EXPECT_TRUE(doc["pass"].is_bool());
}

TEST_F(ToolsTest, BenchIngestQuickReportsPutLatencyAndTheBatchTrace) {
  TempDir dir;
  // Small chunks and a light load: a smoke test of the figures' shape, not a measurement.
  const ProcessResult r = run("tierkv-bench",
                              {"ingest", "--quick", "--json", "--dir", dir.path(), "--clients", "3",
                               "--rate-GBps", "0.05", "--layers", "3", "--host-capacity-gib", "1"},
                              300s);
  ASSERT_TRUE(r.ok()) << r.describe();
  const JsonValue doc = parse_object(r);
  for (const char* key : {"put_p50_us_off", "put_p99_us_off", "put_p99_us_on", "p99_on_vs_off",
                          "put_p99_us_zstd", "put_p99_us_fp8", "p99_zstd_vs_off"}) {
    ASSERT_TRUE(doc.has(key)) << key << " missing from " << r.out;
    EXPECT_GT(doc[key].as_number(), 0) << key;
  }
  EXPECT_TRUE(doc["targets"].has("p99_on_vs_off")) << r.out;
  EXPECT_GT(doc["chunks_encoded"].as_number(), 0) << r.out;
  ASSERT_TRUE(doc.has("batch_trace")) << r.out;
  ASSERT_FALSE(doc["batch_trace"].as_array().empty()) << r.out;
  for (const JsonValue& s : doc["batch_trace"].as_array()) {
    for (const char* key : {"t_s", "queue_depth", "batch_size", "batch_taken"}) {
      ASSERT_TRUE(s.has(key)) << key << " missing from a trace sample of " << r.out;
    }
    EXPECT_GE(s["batch_size"].as_number(), 1);
  }
  ASSERT_TRUE(doc.has("batch_by_phase")) << r.out;
  EXPECT_TRUE(doc["pass"].is_bool());
}

TEST_F(ToolsTest, BenchReportsAMissingDaemonBinary) {
  const ProcessResult r = run("tierkv-bench", {"host", "--quick", "--daemon", "/nonexistent"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(contains(r.err, "/nonexistent")) << r.err;
}

}  // namespace
}  // namespace tierkv::testing
