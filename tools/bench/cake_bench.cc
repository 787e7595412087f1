// tierkv-bench cake: co-scheduled prefill ("Cake") over the real NVMe tier, against its two
// baselines and against the best split that was possible.
//
// The daemon is the real tierkvd with the real NVMe tier: chunk data in files under --dir
// (O_DIRECT, so the page cache never serves a read), every chunk written down and evicted from host
// RAM before each measurement. The engine is EmulatedEngine: it drives a prefill session through
// the client library exactly as an engine's chunked-prefill loop would, and "computes" a chunk by
// sleeping (never spinning: the cores are the daemon's) for the time the engine_grade_model of
// the H100 profile gives, scaled.
//
// Each cell is a prompt (its whole length cached, nothing after it) and a load/compute ratio r =
// time to load one chunk / time to compute the first chunk. For each cell the bench measures the
// time to first token of
//  - compute-only: the engine computes every chunk (no cache);
//  - load-only: the daemon loads every chunk (meeting point 0), the engine waits;
//  - bidirectional: the daemon plans and adapts the meeting point;
//  - the oracle: computed afterwards from what happened in the bidirectional run — the compute
//    time of every chunk as the engine ran it (its sleeps' overrun and report round trip
//    included) and the read time of every chunk as the daemon measured it — the least TTFT over
//    every split.
// The ratio grid (prompts of 4k to 32k tokens x r in {0.25, 0.5, 1, 2, 4}) uses a small layout
// (2 KiB of KV per token) so that it runs in minutes on a small machine: each r is reached by
// throttling NVMe reads ([prefill] nvme_read_throttle_GBps; each read still a real read of the
// disk) and scaling the emulated compute time together, around a geometric mean of --base-ms. One
// more cell per prompt uses an 8B-class layout (128 KiB per token) with reads unthrottled and the
// compute time unscaled: r is then whatever this disk gives. And at r = 1 one run per prompt has
// the engine slow down 2x half-way (a GPU that starts sharing with other requests): the live
// session must stay close to the oracle of what happened. Each schedule runs --reps times; the
// baselines are medians, and a cell's bidirectional and oracle figures come from the run whose
// bidirectional / oracle is the median (a run and its oracle belong together).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "bench/bench_command.h"
#include "bench/bench_daemon.h"
#include "bench/emulated_engine.h"
#include "bench/measure.h"
#include "common/format.h"
#include "tierkv/client.h"
#include "tierkv/prefill.h"

#ifndef TIERKV_SOURCE_DIR
#define TIERKV_SOURCE_DIR ""
#endif

namespace tierkv::bench {

namespace {

constexpr uint32_t kChunkTokens = 256;
constexpr uint32_t kQueueDepth = 8;  // the daemon's reads in flight per session

// Targets from the issue.
constexpr double kBidirOverOracleTarget = 1.05;
constexpr double kSpeedupTarget = 2.0;
constexpr double kBidirOverBestBaselineTarget = 1.05;
constexpr double kSlowdownOverOracleTarget = 1.10;

// The ratio grid's layout: 4 layers x 2 KV heads x 64 dim x bf16 x (K, V) = 2 KiB per token,
// 512 KiB per chunk: small enough that a slow disk reads it at every throttle of the grid.
const Layout kGridLayout{4, 2, 64, DType::kBFloat16, kChunkTokens};
// An 8B-class layout (Llama-3-8B: 32 layers, 8 KV heads, head dim 128, bf16): 128 KiB per token.
const Layout k8bLayout{32, 8, 128, DType::kBFloat16, kChunkTokens};

void progress(const CommonOptions& common, const std::string& what) {
  if (!common.json) std::fprintf(stderr, "tierkv-bench cake: %s\n", what.c_str());
}

std::string fmt(double v, int decimals = 1) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.*f", decimals, v);
  return buf;
}

// What one cell measured: medians over the repetitions.
struct Cell {
  std::string layout;
  uint32_t tokens = 0;
  double ratio = 0;           // r asked for (8B cells: as measured)
  double ratio_measured = 0;  // mean read time of a chunk in the load-only runs / first chunk
  double compute_only_ms = 0, load_only_ms = 0, bidir_ms = 0, oracle_ms = 0;
  double meeting_point = 0, oracle_meeting_point = 0;
  bool slowdown = false;
};

struct Samples {
  std::vector<double> compute_only, load_only, bidir, oracle, read_ms, meet, oracle_meet;
};

// The baselines are medians over the repetitions. A bidirectional run and its oracle belong
// together (the oracle is computed from that run): the cell shows the run whose bidirectional /
// oracle is the median one, so a stall of the machine that hits one run moves neither figure.
Cell summarize(Samples& s, std::string layout, uint32_t tokens, double ratio, double first_ms) {
  Cell c;
  c.layout = std::move(layout);
  c.tokens = tokens;
  c.ratio = ratio;
  c.ratio_measured = s.read_ms.empty() ? 0 : median(s.read_ms) / first_ms;
  c.compute_only_ms = median(s.compute_only);
  c.load_only_ms = median(s.load_only);
  std::vector<size_t> order(s.bidir.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return s.bidir[a] / s.oracle[a] < s.bidir[b] / s.oracle[b];
  });
  if (!order.empty()) {
    const size_t m = order[(order.size() - 1) / 2];
    c.bidir_ms = s.bidir[m];
    c.oracle_ms = s.oracle[m];
    c.meeting_point = s.meet[m];
    c.oracle_meeting_point = s.oracle_meet[m];
  }
  return c;
}

// One daemon and one namespace holding one long prompt, on NVMe.
class CakeRig {
 public:
  static Result<std::unique_ptr<CakeRig>> start(const DaemonOptions& daemon_options,
                                                const std::string& nvme_dir,
                                                const std::string& extra_prefill, uint64_t nvme_mib,
                                                const Layout& layout) {
    std::unique_ptr<CakeRig> rig(new CakeRig());
    const std::string toml =
        "[nvme]\ndirectories = [\"" + nvme_dir + "\"]\ncapacity = \"" + std::to_string(nvme_mib) +
        "MiB\"\nslab_size = \"64MiB\"\nqueue_depth = 32\nmode = \"write-through\"\n"
        "[prefill]\nqueue_depth = " +
        std::to_string(kQueueDepth) + "\n" + extra_prefill;
    auto d = BenchDaemon::start(daemon_options, toml, std::chrono::seconds(120));
    if (!d.ok()) return d.status();
    rig->daemon_ = std::move(d).value();
    auto c = Client::connect({rig->daemon_->socket_path(), "tierkv-bench cake", true});
    if (!c.ok()) return c.status();
    rig->client_ = *c;
    auto ns = rig->client_->register_layout(layout, kTenant, "cake");
    if (!ns.ok()) return ns.status();
    rig->ns_ = *ns;
    return rig;
  }
  ~CakeRig() {
    client_.reset();
    if (daemon_) (void)daemon_->stop();
  }

  Client& client() { return *client_; }
  const Namespace& ns() const { return ns_; }

  // Stores the prompt of `keys` (whatever of it is missing) in batches of `batch` chunks, each
  // written down to NVMe and evicted from host RAM before the next: a prompt longer than the host
  // tier fits (host eviction never takes the chunk a put extends, and in one long prompt that is
  // the only leaf).
  Status store(const std::vector<ChunkKey>& keys, size_t batch, std::span<const std::byte> bytes) {
    for (size_t at = 0; at < keys.size(); at += batch) {
      const size_t n = std::min(batch, keys.size() - at);
      auto put = client_->begin_put(ns_, std::span(keys).subspan(at, n),
                                    at == 0 ? kRootKey : keys[at - 1]);
      if (!put.ok()) return put.status();
      for (size_t i = 0; i < put->chunks(); ++i) {
        if (!put->needs_write(i)) continue;
        const size_t chunk = at + i;
        auto slot = put->slot(i);
        // Each chunk a little different, so no two chunks are the same bytes.
        std::memcpy(slot.data(), bytes.data(), slot.size());
        std::memcpy(slot.data(), &chunk, sizeof(chunk));
      }
      auto done = put->commit();
      if (!done.ok()) return done.status();
      TIERKV_RETURN_IF_ERROR(flush());
      if (auto e = client_->evict(ns_.id, std::span(keys).subspan(at, n)); !e.ok()) {
        return e.status();
      }
    }
    auto look = client_->lookup(ns_.id, keys);
    if (!look.ok()) return look.status();
    if (look->cached_chunks != keys.size()) {
      return Status::Internal("stored " + std::to_string(keys.size()) + " chunks but " +
                              std::to_string(look->cached_chunks) + " are cached");
    }
    return Status::Ok();
  }

  Status flush() {
    const auto t0 = Clock::now();
    for (;;) {
      auto f = client_->flush();
      if (!f.ok()) return f.status();
      if (f->dirty_chunks == 0 && f->writes_in_flight == 0) return Status::Ok();
      if (f->unwritable > 0) return Status::ResourceExhausted("the NVMe tier is full");
      if (seconds_since(t0) > 600) return Status::Unavailable("flush did not finish in 10 min");
      std::this_thread::sleep_for(std::chrono::microseconds(500));
    }
  }

  // Every chunk of `keys` out of host RAM: the next session finds them on NVMe only.
  Status evict(std::span<const ChunkKey> keys) {
    auto e = client_->evict(ns_.id, keys);
    if (!e.ok()) return e.status();
    auto look = client_->lookup(ns_.id, keys);
    if (!look.ok()) return look.status();
    for (Tier t : look->tiers) {
      if (t != Tier::kNvme) return Status::Internal("a chunk stayed in host RAM after evict");
    }
    if (look->cached_chunks != keys.size()) {
      return Status::Internal("only " + std::to_string(look->cached_chunks) + " of " +
                              std::to_string(keys.size()) + " chunks are still cached");
    }
    return Status::Ok();
  }

  // One prefill session over `keys` (all on NVMe), driven by `engine`.
  Result<EngineRun> session(const EmulatedEngine& engine, std::span<const ChunkKey> keys,
                            uint32_t meeting_point) {
    TIERKV_RETURN_IF_ERROR(evict(keys));
    PrefillOptions o;
    o.meeting_point = meeting_point;
    o.prompt_tokens = keys.size() * kChunkTokens;
    const auto begun = Clock::now();
    auto s = PrefillSession::begin(client_, ns_, keys, o);
    if (!s.ok()) return s.status();
    if ((*s)->cached_chunks() != keys.size()) {
      return Status::Internal("the session found " + std::to_string((*s)->cached_chunks()) +
                              " of " + std::to_string(keys.size()) + " chunks cached");
    }
    auto run = engine.run(**s, begun);
    if (!run.ok()) return run.status();
    if (run->summary.failed > 0) {
      return Status::IoError(std::to_string(run->summary.failed) +
                             " NVMe reads failed (see the daemon's log)");
    }
    return run;
  }

 private:
  CakeRig() = default;
  std::unique_ptr<BenchDaemon> daemon_;
  std::shared_ptr<Client> client_;
  Namespace ns_;
};

// Mean stream time of a chunk's read in a run (what one more chunk costs the tier).
double mean_read_ms(const EngineRun& run) {
  const ReadTimes t = read_times_of(run, 0);
  double sum = 0;
  uint32_t n = 0;
  for (size_t i = 0; i < run.chunks.size(); ++i) {
    if (run.chunks[i].source != ChunkRecord::Source::kLoaded) continue;
    sum += t.read_ms[i];
    ++n;
  }
  return n > 0 ? sum / n : 0;
}

// What happened to each chunk of a bidirectional run, for a person (--trace).
void print_trace(const EngineRun& run, size_t chunks) {
  std::fprintf(
      stderr,
      "  bidirectional run, %zu chunks: TTFT %.2f ms; planned meeting point %u (%u reads, "
      "predicted %.2f ms); met at %u; %.3f ms per computed chunk beyond its compute time\n",
      chunks, run.ttft_ms, run.plan.meeting_point, run.plan.load_chunks, run.plan.bidir_ms,
      run.summary.actual_meeting_point, run.mean_overshoot_ms);
  for (size_t i = 0; i < run.chunks.size(); ++i) {
    const ChunkRecord& c = run.chunks[i];
    if (c.source == ChunkRecord::Source::kComputed) {
      std::fprintf(stderr, "    %4zu computed %8.2f .. %8.2f ms (asked %.2f), reported %8.2f\n", i,
                   c.start_ms, c.end_ms, c.asked_ms, c.reported_ms);
    } else if (c.source == ChunkRecord::Source::kLoaded) {
      std::fprintf(stderr, "    %4zu loaded   %8.2f .. %8.2f ms\n", i, c.submitted_ms,
                   c.completed_ms);
    }
  }
}

class CakeBench : public BenchCommand {
 public:
  [[nodiscard]] std::string name() const override { return "cake"; }
  [[nodiscard]] std::string summary() const override {
    return "co-scheduled prefill over NVMe: compute-only, load-only, bidirectional and the oracle";
  }
  void add_options(CLI::App& app) override {
    app.add_option("--dir", dir_,
                   "directory on the disk to read from (default /var/tmp); the bench works in a "
                   "fresh subdirectory and removes it")
        ->check(CLI::ExistingDirectory);
    app.add_option("--profile", profile_,
                   "engine profile JSON with an engine_grade_model (default: the H100 profile of "
                   "the source tree, else its built-in copy)");
    app.add_option("--reps", reps_, "runs of each schedule per cell (default 5); medians reported")
        ->check(CLI::Range(1, 50));
    app.add_option("--base-ms", base_ms_,
                   "ratio grid: geometric mean of the time to load one chunk and to compute the "
                   "first one, ms (r = 1: both take this long)")
        ->check(CLI::Range(0.5, 100.0));
    app.add_option("--prompts", prompts_opt_,
                   "prompt lengths in tokens, multiples of 256 "
                   "(default 4096,8192,16384,32768)")
        ->delimiter(',')
        ->check(CLI::Range(256u, 1u << 20));
    app.add_option("--ratios", ratios_opt_,
                   "load/compute ratios of the grid (default "
                   "0.25,0.5,1,2,4)")
        ->delimiter(',')
        ->check(CLI::Range(0.01, 100.0));
    app.add_flag("--no-grid", no_grid_, "skip the ratio grid (and the slowdown runs)");
    app.add_flag("--no-8b", no_8b_, "skip the 8B-class cells");
    app.add_flag("--trace", trace_,
                 "print every bidirectional run's chunks (computed when, loaded when) to stderr");
    app.add_option("--daemon", daemon_.daemon_path,
                   "tierkvd binary (default: found beside this one)");
  }
  Result<BenchReport> run(const CommonOptions& common) override;

 private:
  Result<EngineModel> model(std::string* origin) const;
  // The ratio grid (and the slowdown runs) on the small layout, one daemon per r.
  Status run_grid(const CommonOptions& common, const EngineModel& model, const std::string& work,
                  std::vector<Cell>& cells, std::vector<Cell>& slowed);
  // The 8B-class cells: reads unthrottled, compute unscaled.
  Status run_8b(const CommonOptions& common, const EngineModel& model, const std::string& work,
                std::vector<Cell>& cells);
  // compute-only, load-only and bidirectional runs of one cell, `reps` times, interleaved.
  Status measure(CakeRig& rig, const EmulatedEngine& engine, std::span<const ChunkKey> keys,
                 int reps, Samples& out, double* bidir_prefix_ms = nullptr);

  std::string dir_;
  std::string profile_;
  int reps_ = 5;
  double base_ms_ = 4.0;
  bool no_8b_ = false;
  bool no_grid_ = false;
  bool trace_ = false;
  std::vector<uint32_t> prompts_opt_;
  std::vector<double> ratios_opt_;
  DaemonOptions daemon_;
  std::vector<uint32_t> prompts_;
  std::vector<double> ratios_;
  int reps_used_ = 5;
};

Result<EngineModel> CakeBench::model(std::string* origin) const {
  std::string path = profile_;
  if (path.empty()) {
    const std::string in_tree =
        std::string(TIERKV_SOURCE_DIR) + "/tools/bench/data/h100-llama8b-profile.json";
    std::error_code ec;
    if (!std::string(TIERKV_SOURCE_DIR).empty() && std::filesystem::exists(in_tree, ec)) {
      path = in_tree;
    }
  }
  if (path.empty()) {
    *origin = "built-in H100 engine_grade_model";
    return EngineModel{};
  }
  *origin = path;
  return load_engine_model(path);
}

Status CakeBench::measure(CakeRig& rig, const EmulatedEngine& engine,
                          std::span<const ChunkKey> keys, int reps, Samples& out,
                          double* bidir_prefix_ms) {
  const auto n = static_cast<uint32_t>(keys.size());
  for (int rep = 0; rep < reps; ++rep) {
    const EngineRun alone = engine.compute_only(n);
    out.compute_only.push_back(alone.ttft_ms);

    auto loaded = rig.session(engine, keys, 0);
    if (!loaded.ok()) return loaded.status();
    if (loaded->loaded != n) {
      return Status::Internal("load-only run loaded " + std::to_string(loaded->loaded) + " of " +
                              std::to_string(n) + " chunks");
    }
    out.load_only.push_back(loaded->ttft_ms);
    out.read_ms.push_back(mean_read_ms(*loaded));

    auto both = rig.session(engine, keys, proto::kAutoMeetingPoint);
    if (!both.ok()) return both.status();
    out.bidir.push_back(both->ttft_ms);
    if (trace_) print_trace(*both, keys.size());
    if (bidir_prefix_ms != nullptr) *bidir_prefix_ms = both->prefix_ms;
    // Chunks the bidirectional run did not read cost what the load-only run's reads did.
    const ReadTimes reads = read_times_of(*both, out.read_ms.back());
    const OracleResult best = oracle(engine, reads, both->mean_overshoot_ms);
    out.oracle.push_back(best.ttft_ms);
    out.meet.push_back(both->summary.actual_meeting_point);
    out.oracle_meet.push_back(best.meeting_point);
  }
  return Status::Ok();
}

Status CakeBench::run_grid(const CommonOptions& common, const EngineModel& model,
                           const std::string& work, std::vector<Cell>& cells,
                           std::vector<Cell>& slowed) {
  const uint32_t longest = *std::max_element(prompts_.begin(), prompts_.end());
  const uint64_t chunk_bytes = kGridLayout.chunk_bytes();
  const double first_model_ms = model.span_ms(0, kChunkTokens);
  const std::string nvme_dir = work + "/grid";
  std::vector<ChunkKey> keys;
  std::vector<std::byte> bytes(chunk_bytes);
  fill_pattern(bytes, 3);
  bool stored = false;

  for (double r : ratios_) {
    const double load_ms = base_ms_ * std::sqrt(r);
    const double first_ms = base_ms_ / std::sqrt(r);
    const double scale = first_ms / first_model_ms;
    const double gbps = static_cast<double>(chunk_bytes) / (load_ms * 1e6);
    progress(common, "r = " + fmt(r, 2) + ": reads throttled to " + fmt(gbps, 3) + " GB/s (" +
                         fmt(load_ms, 2) + " ms a chunk), compute x" + fmt(scale, 3) + " (" +
                         fmt(first_ms, 2) + " ms for the first chunk)");
    const uint64_t data_mib = longest / kChunkTokens * chunk_bytes / kMiB;
    DaemonOptions d = daemon_;
    d.host_capacity_gib = 1 + data_mib / 1024;  // the longest prompt, and room to spare
    auto rig = CakeRig::start(d, nvme_dir, "nvme_read_throttle_GBps = " + fmt(gbps, 6) + "\n",
                              data_mib + 512, kGridLayout);
    if (!rig.ok()) return rig.status();
    CakeRig& g = **rig;
    if (!stored) {
      std::vector<TokenId> tokens(longest);
      for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<TokenId>(i * 7 + 3);
      keys = Client::keys(g.ns(), tokens);
      TIERKV_RETURN_IF_ERROR(g.store(keys, keys.size(), bytes));
      stored = true;
    }
    // The daemon plans with the engine's real speed: the profile, scaled as the engine is.
    TIERKV_RETURN_IF_ERROR(set_compute_profile(g.client(), g.ns().id, model.a_ms_per_token * scale,
                                               model.b_ms_per_token2 * scale));
    EngineOptions eo;
    eo.chunk_tokens = kChunkTokens;
    eo.compute_scale = scale;
    const EmulatedEngine engine(model, eo);
    if (!common.quick) {  // Warm-up (not counted): the daemon measures the tier and the engine.
      Samples warm;
      TIERKV_RETURN_IF_ERROR(
          measure(g, engine, std::span(keys).first(prompts_.front() / kChunkTokens), 1, warm));
    }
    for (uint32_t tokens : prompts_) {
      const auto prefix = std::span<const ChunkKey>(keys).first(tokens / kChunkTokens);
      Samples s;
      double bidir_prefix_ms = 0;
      TIERKV_RETURN_IF_ERROR(measure(g, engine, prefix, reps_used_, s, &bidir_prefix_ms));
      cells.push_back(summarize(s, "2KiB/token", tokens, r, first_ms));
      const Cell& c = cells.back();
      progress(common, "  " + std::to_string(tokens) + " tokens: compute-only " +
                           fmt(c.compute_only_ms) + " ms, load-only " + fmt(c.load_only_ms) +
                           " ms, bidirectional " + fmt(c.bidir_ms) + " ms, oracle " +
                           fmt(c.oracle_ms) + " ms");
      if (r != 1.0) continue;
      // The same cell with the engine slowing down 2x half-way through its bidirectional run.
      EngineOptions so = eo;
      so.slowdown_at_ms = bidir_prefix_ms / 2;
      so.slowdown_factor = 2.0;
      const EmulatedEngine slow(model, so);
      Samples ss;
      for (int rep = 0; rep < reps_used_; ++rep) {
        auto both = g.session(slow, prefix, proto::kAutoMeetingPoint);
        if (!both.ok()) return both.status();
        const ReadTimes reads = read_times_of(*both, load_ms);
        const OracleResult best = oracle(slow, reads, both->mean_overshoot_ms);
        ss.bidir.push_back(both->ttft_ms);
        ss.oracle.push_back(best.ttft_ms);
        ss.meet.push_back(both->summary.actual_meeting_point);
        ss.oracle_meet.push_back(best.meeting_point);
        ss.compute_only.push_back(slow.compute_only(prefix.size()).ttft_ms);
        ss.load_only.push_back(c.load_only_ms);
      }
      slowed.push_back(summarize(ss, "2KiB/token", tokens, r, first_ms));
      slowed.back().slowdown = true;
      slowed.back().ratio_measured = c.ratio_measured;
      progress(common, "  " + std::to_string(tokens) +
                           " tokens, engine 2x slower half-way: "
                           "bidirectional " +
                           fmt(slowed.back().bidir_ms) + " ms, oracle " +
                           fmt(slowed.back().oracle_ms) + " ms");
    }
  }
  return Status::Ok();
}

Status CakeBench::run_8b(const CommonOptions& common, const EngineModel& model,
                         const std::string& work, std::vector<Cell>& cells) {
  const uint32_t longest = *std::max_element(prompts_.begin(), prompts_.end());
  const uint64_t chunk_bytes = k8bLayout.chunk_bytes();
  const uint64_t data_mib = longest / kChunkTokens * chunk_bytes / kMiB;
  DaemonOptions d = daemon_;
  d.host_capacity_gib = common.quick ? 1 : 2;
  progress(common, "8B-class layout (128 KiB per token): storing " + std::to_string(data_mib) +
                       " MiB on NVMe, reads unthrottled, compute unscaled");
  auto rig = CakeRig::start(d, work + "/8b", "", data_mib + 1024, k8bLayout);
  if (!rig.ok()) return rig.status();
  CakeRig& g = **rig;
  std::vector<TokenId> tokens(longest);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<TokenId>(i * 5 + 11);
  const std::vector<ChunkKey> keys = Client::keys(g.ns(), tokens);
  std::vector<std::byte> bytes(chunk_bytes);
  fill_pattern(bytes, 5);
  // Batches of 256 MiB: the host tier holds a few while the disk takes them.
  TIERKV_RETURN_IF_ERROR(g.store(keys, 8, bytes));
  TIERKV_RETURN_IF_ERROR(
      set_compute_profile(g.client(), g.ns().id, model.a_ms_per_token, model.b_ms_per_token2));
  EngineOptions eo;
  eo.chunk_tokens = kChunkTokens;
  const EmulatedEngine engine(model, eo);
  const double first_ms = model.span_ms(0, kChunkTokens);
  if (!common.quick) {  // Warm-up (not counted), as for the grid.
    Samples warm;
    TIERKV_RETURN_IF_ERROR(
        measure(g, engine, std::span(keys).first(prompts_.front() / kChunkTokens), 1, warm));
  }
  for (uint32_t t : prompts_) {
    Samples s;
    TIERKV_RETURN_IF_ERROR(
        measure(g, engine, std::span(keys).first(t / kChunkTokens), reps_used_, s));
    cells.push_back(summarize(s, "128KiB/token", t, 0, first_ms));
    cells.back().ratio = cells.back().ratio_measured;
    const Cell& c = cells.back();
    progress(common, "  " + std::to_string(t) + " tokens (r = " + fmt(c.ratio, 2) +
                         "): compute-only " + fmt(c.compute_only_ms) + " ms, load-only " +
                         fmt(c.load_only_ms) + " ms, bidirectional " + fmt(c.bidir_ms) +
                         " ms, oracle " + fmt(c.oracle_ms) + " ms");
  }
  return Status::Ok();
}

Result<BenchReport> CakeBench::run(const CommonOptions& common) {
  std::string origin;
  auto m = model(&origin);
  if (!m.ok()) return m.status();
  if (common.quick) {
    prompts_ = {1024};
    ratios_ = {0.5, 1.0};
    reps_used_ = 1;
  } else {
    prompts_ = {4096, 8192, 16384, 32768};
    ratios_ = {0.25, 0.5, 1.0, 2.0, 4.0};
    reps_used_ = reps_;
  }
  if (!prompts_opt_.empty()) prompts_ = prompts_opt_;
  if (!ratios_opt_.empty()) ratios_ = ratios_opt_;
  for (uint32_t t : prompts_) {
    if (t % kChunkTokens != 0) {
      return Status::InvalidArgument("--prompts: " + std::to_string(t) +
                                     " tokens is not a multiple of " +
                                     std::to_string(kChunkTokens) + " (the chunk size)");
    }
  }
  std::sort(prompts_.begin(), prompts_.end());
  const std::string base = dir_.empty() ? "/var/tmp" : dir_;
  auto scratch = ScratchDir::create(base, "tierkv-bench-cake");
  if (!scratch.ok()) return scratch.status();
  const std::string& work = scratch->path();

  BenchReport r("cake");
  r.add_info("dir", base);
  r.add_info("profile", origin);
  r.add_info("grid_layout", "4 layers x 2 KV heads x 64 dim x bf16: 2 KiB/token, " +
                                tools::human_size(kGridLayout.chunk_bytes()) + "/chunk");
  r.add_info("grid_ratio_by",
             "NVMe reads throttled to a chunk per base_ms*sqrt(r), compute scaled to "
             "base_ms/sqrt(r) for the first chunk; base_ms = " +
                 fmt(base_ms_, 2));
  r.add_info("8b_layout", "32 layers x 8 KV heads x 128 dim x bf16: 128 KiB/token, " +
                              tools::human_size(k8bLayout.chunk_bytes()) +
                              "/chunk, unthrottled, compute unscaled");
  r.add_info("chunk_tokens", uint64_t{kChunkTokens});
  r.add_info("prefill_queue_depth", uint64_t{kQueueDepth});
  r.add_info("reps", uint64_t(reps_used_));
  r.add_info("quick", common.quick);

  std::vector<Cell> grid, big, slowed;
  if (!no_grid_) TIERKV_RETURN_IF_ERROR(run_grid(common, *m, work, grid, slowed));
  if (!no_8b_) TIERKV_RETURN_IF_ERROR(run_8b(common, *m, work, big));

  std::vector<std::vector<BenchReport::Cell>> rows;
  double max_over_oracle = 0, max_over_best = 0, speedup_sum = 0, max_slow = 0;
  auto row = [&](const Cell& c) {
    const double over_oracle = c.bidir_ms / c.oracle_ms;
    const double best = std::min(c.compute_only_ms, c.load_only_ms);
    const double speedup = (c.compute_only_ms + c.load_only_ms) / 2 / c.bidir_ms;
    rows.push_back({c.layout, static_cast<double>(c.tokens), c.ratio, c.ratio_measured,
                    c.slowdown ? std::string("2x half-way") : std::string("-"), c.compute_only_ms,
                    c.load_only_ms, c.bidir_ms, c.oracle_ms, over_oracle, c.bidir_ms / best,
                    speedup, c.meeting_point, c.oracle_meeting_point});
  };
  for (const Cell& c : grid) {
    row(c);
    max_over_oracle = std::max(max_over_oracle, c.bidir_ms / c.oracle_ms);
    max_over_best =
        std::max(max_over_best, c.bidir_ms / std::min(c.compute_only_ms, c.load_only_ms));
    speedup_sum += (c.compute_only_ms + c.load_only_ms) / 2 / c.bidir_ms;
  }
  for (const Cell& c : big) {
    row(c);
    max_over_oracle = std::max(max_over_oracle, c.bidir_ms / c.oracle_ms);
  }
  for (const Cell& c : slowed) {
    row(c);
    max_slow = std::max(max_slow, c.bidir_ms / c.oracle_ms);
  }
  r.add_rows(
      "cells",
      {"layout", "tokens", "ratio", "ratio_measured", "engine", "compute_only_ms", "load_only_ms",
       "bidir_ms", "oracle_ms", "bidir_over_oracle", "bidir_over_best_baseline",
       "speedup_vs_mean_baselines", "meeting_point", "oracle_meeting_point"},
      std::move(rows));

  r.add_figure("max_bidir_over_oracle", "bidirectional / oracle, worst cell", max_over_oracle,
               Unit::kRatio);
  r.add_target("max_bidir_over_oracle", false, kBidirOverOracleTarget);
  r.add_figure("mean_speedup_vs_mean_baselines",
               "ratio grid: mean of (compute-only + load-only) / 2 / bidirectional",
               grid.empty() ? 0 : speedup_sum / static_cast<double>(grid.size()), Unit::kRatio);
  r.add_target("mean_speedup_vs_mean_baselines", true, kSpeedupTarget);
  r.add_figure("max_bidir_over_best_baseline",
               "ratio grid: bidirectional / faster baseline, worst cell", max_over_best,
               Unit::kRatio);
  r.add_target("max_bidir_over_best_baseline", false, kBidirOverBestBaselineTarget);
  std::vector<std::string> summary = {"max_bidir_over_oracle", "mean_speedup_vs_mean_baselines",
                                      "max_bidir_over_best_baseline"};
  if (!slowed.empty()) {
    r.add_figure("max_bidir_over_oracle_slowdown",
                 "engine 2x slower half-way: bidirectional / oracle, worst cell", max_slow,
                 Unit::kRatio);
    r.add_target("max_bidir_over_oracle_slowdown", false, kSlowdownOverOracleTarget);
    summary.push_back("max_bidir_over_oracle_slowdown");
  }
  r.add_figure_group("summary", std::move(summary));
  return r;
}

}  // namespace

std::unique_ptr<BenchCommand> make_cake_bench() { return std::make_unique<CakeBench>(); }

}  // namespace tierkv::bench
