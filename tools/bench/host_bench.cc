// tierkv-bench host: the host-RAM tier against the machine's copy bandwidth.
//
// Figures (one run): single-thread memcpy bandwidth between two 32 MiB private buffers (a
// reference); put bandwidth with 2 MiB and 32 MiB chunks (begin_put + copy into the shm slots +
// commit, fresh tokens each time so every chunk is written, enough bytes that the tier evicts),
// each as a fraction of its copy limit: the same chunks, from the same source buffer, copied by
// one thread into shared memory made as the pool is, timed between the puts. (One limit for both
// is unfair where the last-level cache is large: the 16 x 2 MiB prompt's 32 MiB stay in it, as do
// the reference figure's buffers, while the 4 x 32 MiB prompt's 128 MiB come from DRAM.)
// Then the latency of leasing a 64-chunk prompt for reading in place and releasing it; lookups per
// second of a 512-chunk prompt: from one thread, with and without the chunk-key hashing, and from
// one thread per CPU sharing the one Client, as an engine's request threads do (the throughput
// figure the target applies to: each thread hashes its prompt's keys, and the threads' requests
// are pipelined on the one connection).
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "bench/bench_command.h"
#include "bench/bench_daemon.h"
#include "bench/measure.h"
#include "common/connect.h"
#include "common/format.h"
#include "tierkv/client.h"
#include "tierkv/storage/shm_region.h"
#include "tierkv/stream_copy.h"

namespace tierkv::bench {

namespace {

// Targets from the issue: a put is a memcpy plus bookkeeping, a load is a lease (no copy), a
// lookup is hashing plus one round trip.
constexpr double kPutVsMemcpyTarget = 0.8;
constexpr double kLoadP50TargetUs = 100;
constexpr double kLookupsPerSecondTarget = 20000;

struct Settings {
  size_t memcpy_runs;
  double memcpy_run_seconds;
  size_t put_min_iterations;
  size_t load_iterations;
  double lookup_seconds;
};
constexpr Settings kFull{7, 0.1, 5, 5000, 1.0};
constexpr Settings kQuick{5, 0.01, 2, 200, 0.05};

class HostBench : public BenchCommand {
 public:
  [[nodiscard]] std::string name() const override { return "host"; }
  [[nodiscard]] std::string summary() const override {
    return "host tier: put/load/lookup against memcpy bandwidth";
  }
  void add_options(CLI::App& app) override {
    add_daemon_options(app, daemon_);
    app.add_option("--put-gib", put_gib_,
                   "GiB to put per chunk size (default: the host capacity, at least 1, at most "
                   "8, so that the tier evicts)");
  }
  Result<BenchReport> run(const CommonOptions& common) override;

 private:
  DaemonOptions daemon_;
  double put_gib_ = 0;
};

struct PutFigures {
  double median_GBps = 0;
  // The limit of this put: a bare single-thread copy of the same chunks from the same source
  // buffer into shared memory of the pool's kind, measured between the puts; the better of
  // memcpy and the streaming copy that puts use.
  double limit_GBps = 0;
  double limit_memcpy_GBps = 0;
  double limit_streaming_GBps = 0;
  uint64_t bytes = 0;  // timed bytes written
  size_t iterations = 0;
  uint64_t skipped = 0;  // chunks the daemon had no slot for
};

// How many timed puts of `chunks` chunks make at least `total_bytes`.
size_t put_iterations(const Namespace& ns, size_t chunks, uint64_t total_bytes,
                      size_t min_iterations) {
  const uint64_t prompt_bytes = chunks * ns.chunk_bytes();
  return std::max<size_t>(min_iterations, (total_bytes + prompt_bytes - 1) / prompt_bytes);
}

// Copies `src` chunk by chunk into the next chunk-sized places of the ring `dst` (as puts fill
// slots across the pool) with memcpy or the streaming copy; returns the seconds taken.
double timed_ring_copy(std::span<const std::byte> src, size_t chunk_bytes, std::span<std::byte> dst,
                       size_t& ring_pos, bool streaming) {
  const auto t0 = Clock::now();
  for (size_t at = 0; at + chunk_bytes <= src.size(); at += chunk_bytes) {
    if (ring_pos + chunk_bytes > dst.size()) ring_pos = 0;
    std::byte* d = dst.data() + ring_pos;
    if (streaming) {
      copy_streaming(d, src.data() + at, chunk_bytes);
    } else {
      std::memcpy(d, src.data() + at, chunk_bytes);
    }
    ring_pos += chunk_bytes;
  }
  return seconds_since(t0);
}

// Puts `iterations` prompts of `chunks` chunks (after one untimed warm-up), fresh tokens each time
// so that every chunk is written. Between the puts, copies the same source into `limit_region`
// (shared memory of the pool's kind) with memcpy and with the streaming copy: the limit this put
// is measured against, taken from the same bytes in the same state of the caches and the machine.
Result<PutFigures> measure_put(Client& client, const Namespace& ns, size_t chunks,
                               size_t iterations, std::span<std::byte> limit_region,
                               std::mt19937_64& rng) {
  const uint64_t cb = ns.chunk_bytes();
  const std::string what = "put of " + std::to_string(chunks) + " x " + tools::human_size(cb);
  auto src = PrefaultedBuffer::allocate(chunks * cb);
  if (!src.ok()) return context(src.status(), what);
  fill_pattern(src->span(), cb);
  if (limit_region.size() < cb) {
    return Status::Internal(what + ": the copy-limit region is smaller than one chunk");
  }

  PutFigures f;
  std::vector<double> gbps, memcpy_gbps, streaming_gbps;
  size_t ring_pos = 0;
  const double prompt_bytes = static_cast<double>(chunks * cb);
  // Iteration 0 is a warm-up and is not timed.
  for (size_t it = 0; it <= iterations; ++it) {
    // The bare copies, in alternating order so that neither always follows the put.
    for (int k = 0; k < 2; ++k) {
      const bool streaming = (k + it) % 2 == 1;
      const double seconds = timed_ring_copy(src->span(), cb, limit_region, ring_pos, streaming);
      if (it > 0) {
        (streaming ? streaming_gbps : memcpy_gbps).push_back(prompt_bytes / seconds / 1e9);
      }
    }
    const std::vector<TokenId> tokens = random_tokens(rng, chunks * ns.layout.chunk_tokens);
    const auto t0 = Clock::now();
    auto lease = client.begin_put(ns, tokens);
    if (!lease.ok()) return context(lease.status(), what + ": begin_put");
    size_t written = 0;
    for (size_t i = 0; i < lease->chunks(); ++i) {
      if (!lease->needs_write(i)) continue;
      // The engine's copy, as libtierkv offers it (streaming stores into the slot).
      if (Status st = lease->write(i, src->span().subspan(i * cb, cb)); !st.ok()) {
        return context(st, what);
      }
      ++written;
    }
    auto committed = lease->commit();
    const double seconds = seconds_since(t0);
    if (!committed.ok()) return context(committed.status(), what + ": commit");
    if (written == 0) {
      return Status::ResourceExhausted(what + ": the daemon had a slot for none of the " +
                                       std::to_string(chunks) +
                                       " chunks (host tier too small, or every slot leased?)");
    }
    if (it == 0) continue;
    f.skipped += chunks - written;
    f.bytes += written * cb;
    gbps.push_back(static_cast<double>(written * cb) / seconds / 1e9);
  }
  f.iterations = iterations;
  f.median_GBps = median(gbps);
  f.limit_memcpy_GBps = median(memcpy_gbps);
  f.limit_streaming_GBps = median(streaming_gbps);
  f.limit_GBps = std::max(f.limit_memcpy_GBps, f.limit_streaming_GBps);
  return f;
}

// Stores a prompt of `chunks` chunks once and checks that all of it is cached.
Result<std::vector<TokenId>> store_prompt(Client& client, const Namespace& ns, size_t chunks,
                                          std::mt19937_64& rng) {
  const std::string what = "storing a " + std::to_string(chunks) + "-chunk prompt";
  std::vector<TokenId> tokens = random_tokens(rng, chunks * ns.layout.chunk_tokens);
  auto kv = PrefaultedBuffer::allocate(chunks * ns.chunk_bytes());
  if (!kv.ok()) return context(kv.status(), what);
  fill_pattern(kv->span(), chunks);
  auto put = client.put(ns, tokens, kv->span());
  if (!put.ok()) return context(put.status(), what);
  auto found = client.lookup(ns, tokens);
  if (!found.ok()) return context(found.status(), what + ": lookup");
  if (found->cached_chunks != chunks) {
    return Status::ResourceExhausted(what + ": only " + std::to_string(found->cached_chunks) +
                                     " chunks are cached after the put (" +
                                     std::to_string(put->written) + " written, " +
                                     std::to_string(put->no_space) + " without a slot)");
  }
  return tokens;
}

struct LoadFigures {
  double p50_us = 0;
  double p99_us = 0;
  size_t iterations = 0;
};

// Lease the prompt's chunks for reading in place, touch one byte of each (proof of access, no
// copy), release.
Result<LoadFigures> measure_load(Client& client, const Namespace& ns,
                                 const std::vector<TokenId>& tokens, size_t chunks,
                                 size_t iterations) {
  std::vector<double> us;
  us.reserve(iterations);
  uint64_t sum = 0;
  const size_t warmup = std::max<size_t>(iterations / 20, 10);
  for (size_t it = 0; it < warmup + iterations; ++it) {
    const auto t0 = Clock::now();
    auto lease = client.load(ns, tokens);
    if (!lease.ok()) return context(lease.status(), "load");
    if (lease->chunks() != chunks) {
      return Status::FailedPrecondition("load leased " + std::to_string(lease->chunks()) + " of " +
                                        std::to_string(chunks) +
                                        " chunks: the prompt was evicted during the bench");
    }
    for (size_t i = 0; i < chunks; ++i) sum += static_cast<uint64_t>(lease->chunk(i)[0]);
    Status released = lease->release();
    const double seconds = seconds_since(t0);
    if (!released.ok()) return context(released, "release");
    if (it >= warmup) us.push_back(seconds * 1e6);
  }
  do_not_optimize(sum);
  LoadFigures f;
  f.iterations = iterations;
  f.p50_us = quantile(us, 0.50);
  f.p99_us = quantile(us, 0.99);
  return f;
}

// Calls `lookup` (which returns the cached chunk count or an error) for at least `seconds`.
template <typename Lookup>
Result<double> lookups_per_second(double seconds, size_t expect_cached, Lookup lookup) {
  size_t n = 0;
  const auto t0 = Clock::now();
  double elapsed = 0;
  do {
    // Read the clock every few lookups only: it costs as much as a small part of a lookup.
    for (int i = 0; i < 16; ++i, ++n) {
      Result<size_t> cached = lookup();
      if (!cached.ok()) return context(cached.status(), "lookup");
      if (*cached != expect_cached) {
        return Status::FailedPrecondition("lookup found " + std::to_string(*cached) + " of " +
                                          std::to_string(expect_cached) +
                                          " chunks: the prompt was evicted during the bench");
      }
    }
    elapsed = seconds_since(t0);
  } while (elapsed < seconds);
  return static_cast<double>(n) / elapsed;
}

Result<BenchReport> HostBench::run(const CommonOptions& common) {
  const Settings& s = common.quick ? kQuick : kFull;
  const auto progress = [&](const std::string& line) {
    if (!common.json) std::fprintf(stderr, "tierkv-bench host: %s\n", line.c_str());
  };

  auto daemon = BenchDaemon::start(daemon_);
  if (!daemon.ok()) return daemon.status();
  if ((*daemon)->owned()) {
    progress("started " + (*daemon)->binary() + " (pid " + std::to_string((*daemon)->pid()) +
             ") with a " + std::to_string(daemon_.host_capacity_gib) + " GiB host tier");
  }
  auto connected = tools::connect_daemon((*daemon)->socket_path(), "tierkv-bench", true);
  if (!connected.ok()) return connected.status();
  Client& client = **connected;
  auto before = client.stats();
  if (!before.ok()) return context(before.status(), "stats");
  uint64_t host_capacity = 0, host_evictions_before = 0;
  for (const auto& t : before->tiers) {
    if (t.tier == proto::Tier::kHost) {
      host_capacity = t.capacity_bytes;
      host_evictions_before = t.evictions;
    }
  }

  // The machine's single-thread copy bandwidth, 32 MiB between private buffers: the faster of
  // glibc's memcpy and the streaming-store copy puts use. A reference figure; each put is judged
  // against the copy limit measured alongside it (measure_put).
  progress("memcpy bandwidth, 32 MiB buffers (memcpy and streaming stores)");
  auto mem = measure_memcpy(32 * kMiB, s.memcpy_runs, s.memcpy_run_seconds);
  if (!mem.ok()) return context(mem.status(), "memcpy");
  auto streamed = measure_memcpy(32 * kMiB, s.memcpy_runs, s.memcpy_run_seconds, true);
  if (!streamed.ok()) return context(streamed.status(), "streaming copy");

  // 1 layer x 8 kv heads x 128 dim bf16 = 4 KiB per token: 512 tokens make 2 MiB, 8192 make 32.
  const auto register_layout = [&](uint32_t layers, uint32_t heads, uint32_t dim,
                                   uint32_t chunk_tokens) -> Result<Namespace> {
    Layout l;
    l.num_layers = layers;
    l.num_kv_heads = heads;
    l.head_dim = dim;
    l.dtype = DType::kBFloat16;
    l.chunk_tokens = chunk_tokens;
    auto ns = client.register_layout(l, kTenant);
    if (!ns.ok()) return context(ns.status(), "register_layout " + l.to_string());
    return ns;
  };
  auto ns2 = register_layout(1, 8, 128, 512);
  if (!ns2.ok()) return ns2.status();
  auto ns32 = register_layout(1, 8, 128, 8192);
  if (!ns32.ok()) return ns32.status();
  // 1 x 1 x 64 bf16 = 256 B per token: 64 KiB chunks of 256 tokens, so a 512-chunk prompt is a
  // 128k-token context whose keys hash 512 KiB of token ids.
  auto ns_small = register_layout(1, 1, 64, 256);
  if (!ns_small.ok()) return ns_small.status();

  uint64_t put_bytes = 0;
  if (put_gib_ > 0) {
    put_bytes = static_cast<uint64_t>(put_gib_ * static_cast<double>(kGiB));
  } else if (common.quick) {
    put_bytes = 0;  // the minimum iteration count decides
  } else {
    put_bytes = std::clamp<uint64_t>(host_capacity, kGiB, 8 * kGiB);
  }

  std::random_device seed;
  std::mt19937_64 rng(seed());
  const size_t it2 = put_iterations(*ns2, 16, put_bytes, s.put_min_iterations);
  const size_t it32 = put_iterations(*ns32, 4, put_bytes, s.put_min_iterations);
  // Where the copy limits are measured: shared memory made the way the daemon makes its pool
  // (memfd, reserved and mapped up front), large enough that, as puts do across the pool, the
  // copies keep moving to memory that is not in the cache.
  const uint64_t largest_prompt = std::max(16 * ns2->chunk_bytes(), 4 * ns32->chunk_bytes());
  const uint64_t limit_bytes =
      common.quick ? 2 * largest_prompt : std::max(2 * largest_prompt, kGiB);
  auto limit_region = storage::ShmRegion::create("tierkv-bench-limit", limit_bytes, true);
  if (!limit_region.ok()) return context(limit_region.status(), "copy-limit region");
  const std::span<std::byte> limit_span(limit_region->data(), limit_region->size());
  progress("put, 16 x 2 MiB chunks, " + std::to_string(it2) + " times, with the copy limit");
  auto put2 = measure_put(client, *ns2, 16, it2, limit_span, rng);
  if (!put2.ok()) return put2.status();
  progress("put, 4 x 32 MiB chunks, " + std::to_string(it32) + " times, with the copy limit");
  auto put32 = measure_put(client, *ns32, 4, it32, limit_span, rng);
  if (!put32.ok()) return put32.status();
  limit_region = storage::ShmRegion();

  progress("load, 64 x 64 KiB chunks, " + std::to_string(s.load_iterations) + " times");
  auto load_tokens = store_prompt(client, *ns_small, 64, rng);
  if (!load_tokens.ok()) return load_tokens.status();
  auto load = measure_load(client, *ns_small, *load_tokens, 64, s.load_iterations);
  if (!load.ok()) return load.status();

  progress("lookup, 512-chunk prompt");
  auto lookup_tokens = store_prompt(client, *ns_small, 512, rng);
  if (!lookup_tokens.ok()) return lookup_tokens.status();
  auto lps = lookups_per_second(s.lookup_seconds, 512, [&]() -> Result<size_t> {
    auto r = client.lookup(*ns_small, *lookup_tokens);
    if (!r.ok()) return r.status();
    return r->cached_chunks;
  });
  if (!lps.ok()) return lps.status();
  const unsigned lookup_threads = std::max(1u, std::thread::hardware_concurrency());
  std::vector<Result<double>> per_thread(lookup_threads, Status::Internal("not run"));
  {
    std::vector<std::thread> threads;
    for (unsigned t = 0; t < lookup_threads; ++t) {
      threads.emplace_back([&, t] {
        per_thread[t] = lookups_per_second(s.lookup_seconds, 512, [&]() -> Result<size_t> {
          auto r = client.lookup(*ns_small, *lookup_tokens);
          if (!r.ok()) return r.status();
          return r->cached_chunks;
        });
      });
    }
    for (auto& th : threads) th.join();
  }
  double lps_concurrent = 0;
  for (const auto& r : per_thread) {
    if (!r.ok()) return r.status();
    lps_concurrent += *r;
  }
  const std::vector<ChunkKey> keys = Client::keys(*ns_small, *lookup_tokens);
  auto lps_keys = lookups_per_second(s.lookup_seconds, 512, [&]() -> Result<size_t> {
    auto r = client.lookup(ns_small->id, keys);
    if (!r.ok()) return r.status();
    return r->cached_chunks;
  });
  if (!lps_keys.ok()) return lps_keys.status();

  auto after = client.stats();
  if (!after.ok()) return context(after.status(), "stats");
  uint64_t host_evictions = 0;
  for (const auto& t : after->tiers) {
    if (t.tier == proto::Tier::kHost) host_evictions = t.evictions - host_evictions_before;
  }
  // A borrowed daemon keeps serving others: leave nothing of ours behind in it.
  if (!(*daemon)->owned()) {
    for (const Namespace* ns : {&*ns2, &*ns32, &*ns_small}) (void)client.remove_namespace(ns->id);
  }
  connected->reset();
  const bool owned = (*daemon)->owned();
  Status stopped = (*daemon)->stop();
  if (!stopped.ok()) return stopped;

  BenchReport r("host");
  r.add_info("daemon_version", before->daemon_version);
  r.add_info("daemon", owned ? "started by the bench: " + (*daemon)->binary()
                             : "running at " + (*daemon)->socket_path());
  r.add_info("host_capacity_bytes", host_capacity);
  r.add_info("cpus", uint64_t{std::thread::hardware_concurrency()});
  r.add_info("quick", common.quick);
  r.add_info("put_bytes_2MiB", put2->bytes);
  r.add_info("put_bytes_32MiB", put32->bytes);
  r.add_info("put_chunks_skipped", put2->skipped + put32->skipped);
  r.add_info("host_evictions", host_evictions);
  r.add_info("load_iterations", uint64_t{load->iterations});

  const double m = std::max(mem->median_GBps, streamed->median_GBps);
  r.add_info("copy_streaming_isa",
             std::string(detail::copy_isa_name(detail::copy_streaming_isa())));
  r.add_figure("memcpy_GBps", "memcpy, 1 thread, 32 MiB (best of the two below)", m, Unit::kGBps);
  r.add_figure("memcpy_glibc_GBps", "memcpy, 1 thread, 32 MiB", mem->median_GBps, Unit::kGBps);
  r.add_figure("memcpy_streaming_GBps", "streaming-store copy, 1 thread, 32 MiB",
               streamed->median_GBps, Unit::kGBps);
  const auto add_put = [&](const PutFigures& p, const std::string& key, const std::string& size) {
    r.add_figure("copy_limit_GBps_" + key,
                 "copy limit, the same " + size + " chunks into shm (best of the two below)",
                 p.limit_GBps, Unit::kGBps);
    r.add_figure("copy_limit_memcpy_GBps_" + key, "  memcpy", p.limit_memcpy_GBps, Unit::kGBps);
    r.add_figure("copy_limit_streaming_GBps_" + key, "  streaming stores", p.limit_streaming_GBps,
                 Unit::kGBps);
    r.add_figure("put_GBps_" + key, "put, " + size + " chunks", p.median_GBps, Unit::kGBps);
    r.add_figure("put_vs_memcpy_" + key, "put / copy limit, " + size + " chunks",
                 p.median_GBps / p.limit_GBps, Unit::kRatio);
    r.add_target("put_vs_memcpy_" + key, true, kPutVsMemcpyTarget);
  };
  add_put(*put2, "2MiB", "2 MiB");
  add_put(*put32, "32MiB", "32 MiB");
  r.add_figure("load_p50_us_64chunks", "load + release 64 chunks, p50", load->p50_us,
               Unit::kMicros);
  r.add_target("load_p50_us_64chunks", false, kLoadP50TargetUs);
  r.add_figure("load_p99_us_64chunks", "load + release 64 chunks, p99", load->p99_us,
               Unit::kMicros);
  r.add_info("lookup_threads", uint64_t{lookup_threads});
  r.add_figure("lookups_per_s_512chunks", "lookups, 512-chunk prompt, 1 thread per CPU",
               lps_concurrent, Unit::kPerSecond);
  r.add_target("lookups_per_s_512chunks", true, kLookupsPerSecondTarget);
  r.add_figure("lookups_per_s_512chunks_1thread", "lookups, 512-chunk prompt, 1 thread", *lps,
               Unit::kPerSecond);
  r.add_figure("lookups_per_s_512chunks_keys_precomputed", "lookups, 512 keys precomputed",
               *lps_keys, Unit::kPerSecond);
  return r;
}

}  // namespace

std::unique_ptr<BenchCommand> make_host_bench() { return std::make_unique<HostBench>(); }

}  // namespace tierkv::bench
