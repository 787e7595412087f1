// tierkv-bench ingest: put latency with NVMe encoding off and on, and the encode stage's adaptive
// batch size as the load changes.
//
// One real tierkvd (its NVMe tier in a scratch directory under --dir, write-through, so every
// committed chunk is encoded and written down while the puts go on) serves three tenants whose
// NVMe codec differs ([nvme.codec_by_tenant]): "off" stores raw chunks (no encoding: the DMA path),
// and one tenant per codec of --codecs (default zstd and fp8). --clients threads (default 8), each
// with its own connection, put real KV chunks: the test slice of tools/kvdata (or --data), tiled
// to the model's full layer count and 256-token chunks (SmolLM2-135M: 30 layers x 3 KV heads x 64
// dims bf16, 5.6 MiB per chunk; repeated rows have their channels shuffled, see tiled_chunks), one
// chunk per put, paced so that together they offer --rate-GBps.
// A put's latency is begin_put + the copy into shared memory + commit, as an engine sees it.
//
// Rounds alternate the tenants (off, then each codec) in steady phases of --seconds, draining
// every write-down between phases, so encoding on and off are measured in the same daemon, minutes
// apart at most. The figure is p99 with encoding on over p99 with it off (the worst codec): the
// target, at most 1.2, says that encoding stays off the put's critical path. Then, with the first
// codec, the load changes — steady, a burst in which the clients put as fast as they can, then a
// light load — while a sampler reads the encode stage's queue depth and batch size every 50 ms:
// the trace shows the batch size following the queue.
#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "bench/bench_command.h"
#include "bench/bench_daemon.h"
#include "bench/measure.h"
#include "common/connect.h"
#include "common/format.h"
#include "kv_dataset.h"
#include "tierkv/client.h"

namespace tierkv::bench {

namespace {

constexpr double kP99OnVsOffTarget = 1.2;
constexpr const char* kOffTenant = "ingest-off";

// Real KV tiled to a realistic chunk: chunk c, layer l, head h, token t holds the real K (and V)
// row of dataset layer l % L, head h % H, token (c * T + t) % N of the workload's prompts laid end
// to end. Where a real row is used again in one chunk (the layers and heads beyond the dataset's),
// its channels are shuffled by a fixed permutation of that copy: the values stay real (each row's
// magnitudes, exponents and scales are a real row's), but the chunk holds no repeated byte runs,
// which would let zstd find matches real KV does not have and flatter both its ratio and its speed.
Result<std::vector<std::byte>> tiled_chunks(const kvdata::KvDataset& ds, const Layout& layout,
                                            uint32_t chunks) {
  const uint32_t L = ds.num_layers, H = ds.num_kv_heads, D = ds.head_dim;
  const uint32_t e = dtype_bytes(ds.dtype);
  const uint64_t row = uint64_t{D} * e;
  std::vector<std::pair<size_t, uint32_t>> tokens;  // (prompt, position)
  for (size_t p = 0; p < ds.prompts.size(); ++p) {
    for (uint32_t t = 0; t < ds.prompts[p].tokens.size(); ++t) tokens.emplace_back(p, t);
  }
  if (tokens.empty()) return Status::InvalidArgument("the KV dataset holds no tokens");
  constexpr uint32_t kPermutations = 64;
  std::vector<std::vector<uint32_t>> perms(kPermutations, std::vector<uint32_t>(D));
  std::mt19937 rng(20261123);
  for (uint32_t k = 0; k < kPermutations; ++k) {
    std::iota(perms[k].begin(), perms[k].end(), 0u);
    if (k > 0) std::shuffle(perms[k].begin(), perms[k].end(), rng);
  }
  const uint64_t layer_tiles = (layout.num_layers + L - 1) / L;
  const uint64_t heads_tiles = (layout.num_kv_heads + H - 1) / H;
  std::vector<std::byte> out(uint64_t{chunks} * layout.chunk_bytes());
  std::byte* at = out.data();
  for (uint32_t c = 0; c < chunks; ++c) {
    for (uint32_t l = 0; l < layout.num_layers; ++l) {
      for (int kind = 0; kind < 2; ++kind) {
        const uint64_t first_token = uint64_t{c} * layout.chunk_tokens;
        for (uint32_t t = 0; t < layout.chunk_tokens; ++t) {
          const uint64_t n = first_token + t;
          const auto [p, pos] = tokens[n % tokens.size()];
          const auto& src = kind == 0 ? ds.prompts[p].k[l % L] : ds.prompts[p].v[l % L];
          for (uint32_t h = 0; h < layout.num_kv_heads; ++h) {
            const std::byte* from = src.data() + (uint64_t{pos} * H + h % H) * row;
            // Which copy of this real row within the chunk: 0 for its first use.
            const uint64_t wraps = n / tokens.size() - first_token / tokens.size();
            const uint64_t copy = l / L + (h / H + wraps * heads_tiles) * layer_tiles;
            const auto& perm = perms[copy % kPermutations];
            for (uint32_t d = 0; d < D; ++d) std::memcpy(at + d * e, from + perm[d] * e, e);
            at += row;
          }
        }
      }
    }
  }
  return out;
}

struct Phase {
  std::string name;
  std::string tenant;
  double seconds = 0;
  uint32_t clients = 0;
  double rate_GBps = 0;   // 0: as fast as they can
  bool measured = false;  // its latencies count for the tenant's figures
};

struct Sample {
  double t_s = 0;
  std::string phase;
  uint64_t queue_depth = 0;
  uint32_t batch_size = 0;
  double last_batch_items = 0;
  double mean_latency_us = 0;
  uint64_t encodes_in_flight = 0;
};

class IngestBench : public BenchCommand {
 public:
  [[nodiscard]] std::string name() const override { return "ingest"; }
  [[nodiscard]] std::string summary() const override {
    return "put latency with NVMe encoding off and on; the encode stage's adaptive batches";
  }
  void add_options(CLI::App& app) override {
    app.add_option("--daemon", daemon_.daemon_path,
                   "tierkvd binary to start (default: the build tree's, next to this binary, or "
                   "$PATH)");
    app.add_option("--host-capacity-gib", daemon_.host_capacity_gib,
                   "host tier capacity of the daemon")
        ->check(CLI::Range(uint64_t{1}, uint64_t{1} << 20));
    app.add_option("--dir", dir_,
                   "directory on the disk for the NVMe tier (default $TMPDIR or /var/tmp); the "
                   "bench works in a fresh subdirectory and removes it");
    app.add_option("--data", data_,
                   "KV dataset directory (tools/kvdata; default $TIERKV_KVDATA, else build/kvdata "
                   "if present, else the test slice tests/data/kv)");
    app.add_option("--codecs", codecs_, "codecs with encoding on, comma-separated");
    app.add_option("--clients", clients_, "client threads, each with its own connection")
        ->check(CLI::Range(1u, 256u));
    app.add_option("--rate-GBps", rate_GBps_, "the load all clients offer together, GB/s");
    app.add_option("--seconds", seconds_, "length of one steady phase");
    app.add_option("--rounds", rounds_, "rounds of steady phases (off, then each codec)")
        ->check(CLI::Range(1u, 100u));
    app.add_option("--layers", layers_, "layers of the tiled chunk (the data's layers repeat)");
    app.add_option("--chunk-tokens", chunk_tokens_, "tokens per chunk");
  }
  Result<BenchReport> run(const CommonOptions& common) override;

 private:
  DaemonOptions daemon_;
  std::string dir_;
  std::string data_;
  std::string codecs_ = "zstd,fp8";
  uint32_t clients_ = 8;
  double rate_GBps_ = 1.0;
  double seconds_ = 2.0;
  uint32_t rounds_ = 3;
  uint32_t layers_ = 30;
  uint32_t chunk_tokens_ = 256;
};

// Waits until every chunk committed so far is written down (encodes included), so the next phase
// starts with idle encoders and an idle disk.
Status drain(Client& c, double max_seconds) {
  const auto t0 = Clock::now();
  for (;;) {
    auto f = c.flush();
    if (!f.ok()) return context(f.status(), "flush");
    if (f->dirty_chunks == 0 && f->writes_in_flight == 0) return Status::Ok();
    if (seconds_since(t0) > max_seconds) {
      return Status::Unavailable(
          "write-down did not catch up within " + std::to_string(static_cast<int>(max_seconds)) +
          " s (" + std::to_string(f->dirty_chunks) + " chunks left): lower --rate-GBps");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

Result<BenchReport> IngestBench::run(const CommonOptions& common) {
  const auto progress = [&](const std::string& line) {
    if (!common.json) std::fprintf(stderr, "tierkv-bench ingest: %s\n", line.c_str());
  };
  const std::vector<std::string> codecs = split_list(codecs_);
  if (codecs.empty()) return Status::InvalidArgument("--codecs names no codec");
  const double steady_s = common.quick ? 0.3 : seconds_;
  const uint32_t rounds = common.quick ? 1 : rounds_;

  // The data: real KV, tiled.
  const std::string data_dir = data_.empty() ? default_kv_data_dir("unrelated.tkv") : data_;
  auto ds = kvdata::KvDataset::load(data_dir + "/unrelated.tkv");
  if (!ds.ok()) return context(ds.status(), "KV dataset " + data_dir + "/unrelated.tkv");
  Layout layout = ds->layout(chunk_tokens_);
  layout.num_layers = layers_;
  TIERKV_RETURN_IF_ERROR(layout.validate());
  constexpr uint32_t kDistinctChunks = 16;
  auto tiled = tiled_chunks(*ds, layout, kDistinctChunks);
  if (!tiled.ok()) return tiled.status();
  auto source = PrefaultedBuffer::allocate(tiled->size());
  if (!source.ok()) return source.status();
  std::memcpy(source->data(), tiled->data(), tiled->size());
  const uint64_t chunk_bytes = layout.chunk_bytes();

  // The daemon: one tenant per codec, write-through to a scratch NVMe tier.
  std::string base = dir_;
  if (base.empty()) base = std::getenv("TMPDIR") ? std::getenv("TMPDIR") : "/var/tmp";
  auto scratch = ScratchDir::create(base, "tierkv-bench-ingest");
  if (!scratch.ok()) return scratch.status();
  std::string toml = "[nvme]\ndirectories = [\"" + scratch->path() +
                     "/nvme\"]\ncapacity = \"8GiB\"\nmode = \"write-through\"\ncodec = \"raw\"\n"
                     "[nvme.codec_by_tenant]\n";
  for (const auto& c : codecs) toml += "\"ingest-" + c + "\" = \"" + c + "\"\n";
  auto daemon = BenchDaemon::start(daemon_, toml, std::chrono::seconds(120));
  if (!daemon.ok()) return daemon.status();
  progress("started " + (*daemon)->binary() + " (pid " + std::to_string((*daemon)->pid()) +
           "), NVMe tier in " + scratch->path() + "; chunks of " + tools::human_size(chunk_bytes) +
           " (" + layout.to_string() + ") from " + data_dir);

  auto admin = tools::connect_daemon((*daemon)->socket_path(), "tierkv-bench ingest", false);
  if (!admin.ok()) return admin.status();

  // The phases: rounds of steady phases alternating the tenants, then the load changes.
  std::vector<Phase> phases;
  std::vector<std::string> tenants = {kOffTenant};
  for (const auto& c : codecs) tenants.push_back("ingest-" + c);
  phases.push_back({"warm-up", tenants[1], common.quick ? 0.2 : 1.0, clients_, rate_GBps_, false});
  for (uint32_t r = 0; r < rounds; ++r) {
    for (const auto& t : tenants)
      phases.push_back({"steady", t, steady_s, clients_, rate_GBps_, true});
  }
  const std::string traced = tenants[1];
  phases.push_back(
      {"trace: steady", traced, common.quick ? 0.3 : 1.5, clients_, rate_GBps_, false});
  phases.push_back({"trace: burst", traced, common.quick ? 0.3 : 1.5, clients_, 0, false});
  phases.push_back({"trace: light", traced, common.quick ? 0.3 : 1.5, 2, rate_GBps_ / 8, false});

  // Clients: one thread and connection each; the phases are run in lock-step through `phase_no`.
  struct ClientState {
    std::shared_ptr<Client> client;
    std::map<std::string, Namespace> ns;                      // per tenant
    std::map<std::string, std::vector<double>> latencies_us;  // per tenant, measured phases
    uint64_t puts = 0, skipped = 0;
    Status error;
  };
  std::vector<ClientState> states(clients_);
  for (uint32_t i = 0; i < clients_; ++i) {
    auto c = tools::connect_daemon((*daemon)->socket_path(),
                                   "tierkv-bench ingest " + std::to_string(i), true);
    if (!c.ok()) return c.status();
    states[i].client = *c;
    for (const auto& t : tenants) {
      auto ns = (*c)->register_layout(layout, t);
      if (!ns.ok()) return context(ns.status(), "register_layout " + layout.to_string());
      states[i].ns.emplace(t, *ns);
      states[i].latencies_us[t].reserve(16384);
    }
  }

  const auto t_start = Clock::now();
  std::mutex samples_mu;
  std::vector<Sample> samples;  // guarded by samples_mu
  std::atomic<bool> sampling{false};
  std::string sample_phase;  // guarded by samples_mu
  std::atomic<bool> sampler_stop{false};
  std::thread sampler([&] {
    auto c = tools::connect_daemon((*daemon)->socket_path(), "tierkv-bench ingest sampler", false);
    if (!c.ok()) return;
    while (!sampler_stop.load()) {
      if (sampling.load()) {
        auto st = (*c)->stats();
        if (st.ok() && !st->codec_stages.empty()) {
          const auto& enc = st->codec_stages[0];
          std::lock_guard lock(samples_mu);
          samples.push_back(Sample{seconds_since(t_start), sample_phase, enc.queue_depth,
                                   enc.batch_size, enc.last_batch_items, enc.mean_latency_us,
                                   st->codec.encodes_in_flight});
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  });
  struct StopSampler {
    std::atomic<bool>& stop;
    std::thread& t;
    ~StopSampler() {
      stop = true;
      if (t.joinable()) t.join();
    }
  } stop_sampler{sampler_stop, sampler};

  std::map<std::string, double> put_bytes_by_tenant, put_seconds_by_tenant;
  uint64_t token_base = 1;
  for (const Phase& ph : phases) {
    progress(ph.name + " (" + ph.tenant + "): " + std::to_string(ph.clients) + " clients, " +
             (ph.rate_GBps > 0 ? tools::human_size(static_cast<uint64_t>(ph.rate_GBps * 1e9)) + "/s"
                               : std::string("as fast as they can")) +
             ", " + std::to_string(ph.seconds) + " s");
    {
      std::lock_guard lock(samples_mu);
      sample_phase = ph.name;
    }
    sampling = ph.name.rfind("trace", 0) == 0;
    std::vector<std::thread> threads;
    std::atomic<uint64_t> bytes{0};
    const auto phase_t0 = Clock::now();
    const auto phase_end = phase_t0 + std::chrono::duration_cast<Clock::duration>(
                                          std::chrono::duration<double>(ph.seconds));
    for (uint32_t i = 0; i < ph.clients; ++i) {
      threads.emplace_back([&, i] {
        ClientState& s = states[i];
        const Namespace& ns = s.ns.at(ph.tenant);
        std::vector<TokenId> tokens(layout.chunk_tokens);
        // Paced: this client's share of the rate, its puts offset from the others'.
        const double interval_s =
            ph.rate_GBps > 0 ? static_cast<double>(chunk_bytes) / (ph.rate_GBps * 1e9 / ph.clients)
                             : 0;
        auto next = phase_t0 + std::chrono::duration_cast<Clock::duration>(
                                   std::chrono::duration<double>(interval_s * i / ph.clients));
        for (uint64_t k = 0; Clock::now() < phase_end; ++k) {
          if (interval_s > 0) {
            std::this_thread::sleep_until(next);
            next += std::chrono::duration_cast<Clock::duration>(
                std::chrono::duration<double>(interval_s));
            if (Clock::now() >= phase_end) break;
          }
          // Fresh tokens: every put writes its chunk.
          const uint64_t id = token_base + (uint64_t{i} << 40) + k;
          for (uint32_t t = 0; t < tokens.size(); ++t) {
            tokens[t] = static_cast<TokenId>((id * 2654435761u + t * 40503u) % 151936u);
          }
          tokens[0] = static_cast<TokenId>(id);
          tokens[1] = static_cast<TokenId>(id >> 32);
          const auto src =
              source->span().subspan((id % kDistinctChunks) * chunk_bytes, chunk_bytes);
          const auto t0 = Clock::now();
          auto lease = s.client->begin_put(ns, tokens);
          if (!lease.ok()) {
            s.error = context(lease.status(), "begin_put");
            return;
          }
          if (lease->chunks() == 1 && lease->needs_write(0)) {
            if (Status w = lease->write(0, src); !w.ok()) {
              s.error = w;
              return;
            }
          } else {
            ++s.skipped;
          }
          auto committed = lease->commit();
          const double us = seconds_since(t0) * 1e6;
          if (!committed.ok()) {
            s.error = context(committed.status(), "commit");
            return;
          }
          ++s.puts;
          bytes += chunk_bytes;
          if (ph.measured) s.latencies_us[ph.tenant].push_back(us);
        }
      });
    }
    for (auto& t : threads) t.join();
    for (const auto& s : states) {
      if (!s.error.ok()) return s.error;
    }
    token_base += 1ull << 36;
    if (ph.measured) {
      put_bytes_by_tenant[ph.tenant] += static_cast<double>(bytes.load());
      put_seconds_by_tenant[ph.tenant] += seconds_since(phase_t0);
    }
    sampling = false;
    // Trace phases follow one another without a pause: the load changes, the stage follows.
    if (ph.name.rfind("trace", 0) != 0 || ph.name == "trace: light") {
      TIERKV_RETURN_IF_ERROR(drain(**admin, 120));
    }
  }
  auto final_stats = (*admin)->stats();
  if (!final_stats.ok()) return context(final_stats.status(), "stats");
  sampler_stop = true;
  sampler.join();  // `samples` is ours alone from here

  // Figures per tenant.
  std::map<std::string, std::pair<double, double>> p50_p99;
  uint64_t skipped = 0, puts = 0;
  for (const auto& t : tenants) {
    std::vector<double> all;
    for (auto& s : states) {
      all.insert(all.end(), s.latencies_us[t].begin(), s.latencies_us[t].end());
    }
    if (all.empty()) return Status::Internal("no put was measured for tenant " + t);
    const double p50 = quantile(all, 0.50), p99 = quantile(all, 0.99);
    p50_p99[t] = {p50, p99};
  }
  for (const auto& s : states) {
    skipped += s.skipped;
    puts += s.puts;
  }
  for (auto& s : states) s.client.reset();
  admin->reset();
  const std::string daemon_version = final_stats->daemon_version;
  Status stopped = (*daemon)->stop();
  if (!stopped.ok()) return stopped;

  BenchReport r("ingest");
  r.add_info("daemon_version", daemon_version);
  r.add_info("cpus", uint64_t{std::thread::hardware_concurrency()});
  r.add_info("clients", uint64_t{clients_});
  r.add_info("layout", layout.to_string());
  r.add_info("chunk_bytes", chunk_bytes);
  r.add_info("data", data_dir + "/unrelated.tkv (tiled)");
  char offered[32];
  std::snprintf(offered, sizeof(offered), "%.3g", rate_GBps_);
  r.add_info("offered_GBps", std::string(offered));
  r.add_info("rounds", uint64_t{rounds});
  r.add_info("quick", common.quick);
  r.add_info("puts", puts);
  r.add_info("puts_without_a_slot", skipped);
  const proto::StatsReply& st = *final_stats;
  uint64_t workers = 0, items = 0, batches = 0;
  if (!st.codec_stages.empty()) {
    workers = st.codec_stages[0].workers;
    items = st.codec_stages[0].items;
    batches = st.codec_stages[0].batches;
  }
  r.add_info("encode_threads", workers);
  r.add_info("chunks_encoded", items);
  r.add_info("encode_batches", batches);
  r.add_info("encode_waits", st.codec.encode_waits);
  r.add_info("dropped_unwritten", st.nvme.dropped_unwritten);
  for (const auto& t : st.tier_codecs) {
    if (t.tier != proto::Tier::kNvme) continue;
    r.add_info("nvme_logical_bytes", t.logical_bytes);
    r.add_info("nvme_stored_bytes", t.stored_bytes);
  }

  const auto [off50, off99] = p50_p99.at(kOffTenant);
  r.add_figure("put_p50_us_off", "put p50, encoding off (raw)", off50, Unit::kMicros);
  r.add_figure("put_p99_us_off", "put p99, encoding off (raw)", off99, Unit::kMicros);
  double worst_on = 0;
  std::vector<std::string> summary = {"put_p99_us_off", "put_p99_us_on", "p99_on_vs_off"};
  for (const auto& c : codecs) {
    const auto [p50, p99] = p50_p99.at("ingest-" + c);
    std::string key = c;
    for (char& ch : key) {
      if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
    }
    r.add_figure("put_p50_us_" + key, "put p50, NVMe codec " + c, p50, Unit::kMicros);
    r.add_figure("put_p99_us_" + key, "put p99, NVMe codec " + c, p99, Unit::kMicros);
    r.add_figure("p99_" + key + "_vs_off", "put p99, " + c + " / off", p99 / off99, Unit::kRatio);
    const double gbps =
        put_bytes_by_tenant["ingest-" + c] / put_seconds_by_tenant["ingest-" + c] / 1e9;
    r.add_figure("ingest_GBps_" + key, "ingest while encoding with " + c, gbps, Unit::kGBps);
    worst_on = std::max(worst_on, p99);
  }
  r.add_figure("ingest_GBps_off", "ingest, encoding off",
               put_bytes_by_tenant[kOffTenant] / put_seconds_by_tenant[kOffTenant] / 1e9,
               Unit::kGBps);
  r.add_figure("put_p99_us_on", "put p99, encoding on (worst codec)", worst_on, Unit::kMicros);
  r.add_figure("p99_on_vs_off", "put p99, encoding on / off", worst_on / off99, Unit::kRatio);
  r.add_target("p99_on_vs_off", false, kP99OnVsOffTarget);
  r.add_figure_group("summary", summary);

  // How the encode stage's batch size followed its queue, phase by phase, and the trace itself.
  std::vector<std::vector<BenchReport::Cell>> by_phase, trace;
  for (const char* name : {"trace: steady", "trace: burst", "trace: light"}) {
    double n = 0, q_sum = 0, q_max = 0, b_sum = 0, b_max = 0, taken_sum = 0, taken_max = 0;
    for (const Sample& s : samples) {
      if (s.phase != name) continue;
      ++n;
      q_sum += static_cast<double>(s.queue_depth);
      q_max = std::max(q_max, static_cast<double>(s.queue_depth));
      b_sum += s.batch_size;
      b_max = std::max(b_max, static_cast<double>(s.batch_size));
      taken_sum += s.last_batch_items;
      taken_max = std::max(taken_max, s.last_batch_items);
    }
    if (n == 0) continue;
    by_phase.push_back(
        {std::string(name), n, q_sum / n, q_max, b_sum / n, b_max, taken_sum / n, taken_max});
  }
  r.add_rows("batch_by_phase",
             {"phase", "samples", "queue_mean", "queue_max", "batch_size_mean", "batch_size_max",
              "batch_taken_mean", "batch_taken_max"},
             std::move(by_phase));
  const double t0 = samples.empty() ? 0 : samples.front().t_s;
  // The table keeps every sample in JSON; a person gets every other one.
  for (const Sample& s : samples) {
    trace.push_back({s.t_s - t0, s.phase, static_cast<double>(s.queue_depth),
                     static_cast<double>(s.batch_size), s.last_batch_items,
                     s.mean_latency_us / 1000, static_cast<double>(s.encodes_in_flight)});
  }
  if (!common.json) {
    std::vector<std::vector<BenchReport::Cell>> thinned;
    for (size_t i = 0; i < trace.size(); i += 2) thinned.push_back(trace[i]);
    trace = std::move(thinned);
  }
  r.add_rows("batch_trace",
             {"t_s", "phase", "queue_depth", "batch_size", "batch_taken", "batch_ms_mean",
              "encodes_in_flight"},
             std::move(trace));
  return r;
}

}  // namespace

std::unique_ptr<BenchCommand> make_ingest_bench() { return std::make_unique<IngestBench>(); }

}  // namespace tierkv::bench
