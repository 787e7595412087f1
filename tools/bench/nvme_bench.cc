// tierkv-bench nvme: the NVMe tier against the raw speed of the same file system.
//
// In one run, in one data directory: the raw O_DIRECT io_uring sequential write and read
// bandwidth of a file there (this file's own minimal reader/writer, at the daemon's queue depth
// and with the chunk size as block size; measured just before and just after each of the daemon's
// measurements, and their mean taken), and the daemon's write-down bandwidth (flush of chunks
// committed with write-back held off, timed from the flush to the last index record) and its load
// bandwidth for chunks that lie only on NVMe (evicted from RAM; O_DIRECT, so the page cache never
// serves them), with 2 MiB and 32 MiB chunks; and random loads of 256 KiB chunks at queue depth
// 32, in IOPS, beside the raw random-read IOPS of the same file at the same depth.
//
// Each round is also a row of the "per_round" table, with what the daemon's NVMe I/O counters say
// about that measurement (proto::NvmeIoStats): the mean queue depth while the disk was busy, the
// share of the time it was busy, the server thread's time per chunk in completion rounds and in
// hashing, the verify workers' hashing time per chunk. A load well below the raw read with a full
// queue is the disk's (placement, memory); with a starved queue, the daemon's.
#include <fcntl.h>
#include <liburing.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "bench/bench_command.h"
#include "bench/bench_daemon.h"
#include "bench/measure.h"
#include "common/format.h"
#include "tierkv/client.h"
#include "tierkv/storage/shm_region.h"

namespace tierkv::bench {

namespace {

constexpr uint32_t kQueueDepth = 32;
constexpr double kLoadVsRawTarget = 0.9;
constexpr double kWritedownVsRawTarget = 0.85;

void progress(const CommonOptions& common, const std::string& what) {
  if (!common.json) std::fprintf(stderr, "tierkv-bench nvme: %s\n", what.c_str());
}

// --- the raw limit: a minimal io_uring O_DIRECT reader/writer ------------------------------------

class RawFile {
 public:
  static Result<RawFile> open(const std::string& path, uint64_t bytes) {
    RawFile f;
    f.fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_DIRECT | O_CLOEXEC, 0600);
    if (f.fd_ < 0) return Status::FromErrno("open " + path + " with O_DIRECT", errno);
    if (const int rc = ::posix_fallocate(f.fd_, 0, static_cast<off_t>(bytes)); rc != 0) {
      return Status::FromErrno("fallocate " + path, rc);
    }
    if (const int rc = io_uring_queue_init(kQueueDepth, &f.ring_, 0); rc < 0) {
      return Status::FromErrno("io_uring_queue_init", -rc);
    }
    f.ring_ok_ = true;
    f.bytes_ = bytes;
    return f;
  }
  RawFile(RawFile&& o) noexcept : fd_(o.fd_), ring_(o.ring_), ring_ok_(o.ring_ok_), bytes_(o.bytes_) {
    o.fd_ = -1;
    o.ring_ok_ = false;
  }
  RawFile& operator=(RawFile&&) = delete;
  ~RawFile() {
    if (ring_ok_) io_uring_queue_exit(&ring_);
    if (fd_ >= 0) ::close(fd_);
  }

  // Sequential pass over the file in `block` requests, `kQueueDepth` in flight; GB/s.
  Result<double> sequential(bool write, uint64_t block, std::byte* buffers) {
    std::vector<uint64_t> offsets;
    for (uint64_t off = 0; off + block <= bytes_; off += block) offsets.push_back(off);
    return run(write, block, buffers, offsets);
  }
  // `count` reads of `block` bytes at random block-aligned offsets; requests per second.
  Result<double> random_reads(uint64_t block, size_t count, std::byte* buffers, uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::vector<uint64_t> offsets(count);
    for (auto& o : offsets) o = rng() % (bytes_ / block) * block;
    auto gbps = run(false, block, buffers, offsets);
    if (!gbps.ok()) return gbps.status();
    return *gbps * 1e9 / static_cast<double>(block);
  }

 private:
  RawFile() = default;
  // One buffer of `block` bytes per queue slot, at buffers + slot * block, registered as fixed
  // buffers (pinned once, as the daemon's pool is): the best this file system can do.
  Result<double> run(bool write, uint64_t block, std::byte* buffers,
                     const std::vector<uint64_t>& offsets) {
    std::vector<iovec> iov(kQueueDepth);
    for (uint32_t i = 0; i < kQueueDepth; ++i) iov[i] = {buffers + i * block, block};
    if (const int rc = io_uring_register_buffers(&ring_, iov.data(), kQueueDepth); rc < 0) {
      return Status::FromErrno("io_uring_register_buffers", -rc);
    }
    struct Unregister {
      io_uring* ring;
      ~Unregister() { io_uring_unregister_buffers(ring); }
    } unregister{&ring_};
    size_t next = 0, done = 0, in_flight = 0;
    std::vector<uint32_t> free_slots;
    for (uint32_t i = 0; i < kQueueDepth; ++i) free_slots.push_back(i);
    const auto t0 = Clock::now();
    while (done < offsets.size()) {
      while (next < offsets.size() && !free_slots.empty()) {
        const uint32_t slot = free_slots.back();
        free_slots.pop_back();
        io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
        std::byte* buf = buffers + slot * block;
        const auto len = static_cast<unsigned>(block);
        if (write) io_uring_prep_write_fixed(sqe, fd_, buf, len, offsets[next], static_cast<int>(slot));
        else io_uring_prep_read_fixed(sqe, fd_, buf, len, offsets[next], static_cast<int>(slot));
        io_uring_sqe_set_data64(sqe, slot);
        ++next;
        ++in_flight;
      }
      if (const int rc = io_uring_submit(&ring_); rc < 0) return Status::FromErrno("io_uring_submit", -rc);
      io_uring_cqe* cqe = nullptr;
      if (const int rc = io_uring_wait_cqe(&ring_, &cqe); rc < 0) {
        return Status::FromErrno("io_uring_wait_cqe", -rc);
      }
      unsigned head = 0, seen = 0;
      io_uring_for_each_cqe(&ring_, head, cqe) {
        if (cqe->res != static_cast<int>(block)) {
          return Status::IoError(std::string("raw ") + (write ? "write" : "read") + ": " +
                                 (cqe->res < 0 ? std::strerror(-cqe->res) : "short transfer"));
        }
        free_slots.push_back(static_cast<uint32_t>(io_uring_cqe_get_data64(cqe)));
        ++seen;
      }
      io_uring_cq_advance(&ring_, seen);
      done += seen;
      in_flight -= seen;
    }
    return static_cast<double>(offsets.size() * block) / seconds_since(t0) / 1e9;
  }

  int fd_ = -1;
  io_uring ring_{};
  bool ring_ok_ = false;
  uint64_t bytes_ = 0;
};

// --- the daemon ----------------------------------------------------------------------------------

// A layout whose chunks are `bytes` long: 8 KV heads x 128 dim x bf16, 256 tokens a chunk (64 for
// chunks under 1 MiB), as many layers as that takes.
Layout layout_for(uint64_t bytes) {
  const uint32_t tokens = bytes >= kMiB ? 256 : 64;
  const uint64_t per_layer = 2ull * 8 * 128 * 2 * tokens;
  return Layout{static_cast<uint32_t>(bytes / per_layer), 8, 128, DType::kBFloat16, tokens};
}

// `count` single-chunk prompts' keys in `ns`, all distinct.
std::vector<ChunkKey> single_chunk_keys(const Namespace& ns, size_t count, uint32_t salt) {
  std::vector<ChunkKey> keys;
  std::vector<TokenId> tokens(ns.layout.chunk_tokens);
  for (size_t i = 0; i < count; ++i) {
    for (size_t t = 0; t < tokens.size(); ++t) tokens[t] = static_cast<TokenId>(salt * 7919 + i * 131 + t);
    keys.push_back(Client::keys(ns, tokens)[0]);
  }
  return keys;
}

// Stores `keys` as root chunks (each its own prompt) with pattern bytes; nothing skipped.
Status store_chunks(Client& c, const Namespace& ns, const std::vector<ChunkKey>& keys,
                    std::span<const std::byte> pattern) {
  constexpr size_t kBatch = 64;
  for (size_t at = 0; at < keys.size(); at += kBatch) {
    const size_t n = std::min(kBatch, keys.size() - at);
    for (size_t i = 0; i < n; ++i) {
      auto lease = c.begin_put(ns, std::span(&keys[at + i], 1));
      if (!lease.ok()) return lease.status();
      if (!lease->needs_write(0)) {
        return Status::ResourceExhausted("the daemon had no host slot for chunk " +
                                         std::to_string(at + i) + " (host tier too small)");
      }
      std::memcpy(lease->slot(0).data(), pattern.data(), ns.chunk_bytes());
      auto done = lease->commit();
      if (!done.ok()) return done.status();
    }
  }
  return Status::Ok();
}

// flush until nothing is dirty or in flight; seconds taken.
Result<double> flush_all(Client& c) {
  const auto t0 = Clock::now();
  for (;;) {
    auto f = c.flush();
    if (!f.ok()) return f.status();
    if (f->dirty_chunks == 0 && f->writes_in_flight == 0) return seconds_since(t0);
    if (seconds_since(t0) > 600) return Status::Unavailable("flush did not finish in 10 minutes");
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
}

// Loads `keys` (all on NVMe only) in requests of `per_request` keys; seconds taken.
Result<double> load_all(Client& c, const Namespace& ns, const std::vector<ChunkKey>& keys,
                        size_t per_request) {
  const auto t0 = Clock::now();
  for (size_t at = 0; at < keys.size(); at += per_request) {
    const size_t n = std::min(per_request, keys.size() - at);
    auto lease = c.load(ns.id, std::span(keys).subspan(at, n));
    if (!lease.ok()) return lease.status();
    if (lease->chunks() != n) {
      return Status::Internal("load returned " + std::to_string(lease->chunks()) + " of " +
                              std::to_string(n) + " chunks (see the daemon's stats)");
    }
  }
  return seconds_since(t0);
}

// The daemon's NVMe I/O counters over one measurement of `chunks` chunks in `seconds`.
struct IoDiagnosis {
  double mean_depth = 0;         // requests in the queue while the disk was busy
  double busy_fraction = 0;      // of the measurement's time
  double poll_us_per_chunk = 0;  // server thread, completion rounds
  double inline_hash_us_per_chunk = 0;
  double worker_hash_us_per_chunk = 0;
  double submit_us = 0;  // per io_uring submission
};

Result<proto::NvmeIoStats> io_stats(Client& c) {
  auto st = c.stats();
  if (!st.ok()) return st.status();
  return st->nvme_io;
}

IoDiagnosis diagnose(const proto::NvmeIoStats& a, const proto::NvmeIoStats& b, size_t chunks,
                     double seconds) {
  const auto per = [](uint64_t num, uint64_t den, double scale) {
    return den == 0 ? 0.0 : static_cast<double>(num) / static_cast<double>(den) * scale;
  };
  IoDiagnosis d;
  d.mean_depth = per(b.depth_ns - a.depth_ns, b.busy_ns - a.busy_ns, 1);
  d.busy_fraction = seconds > 0 ? static_cast<double>(b.busy_ns - a.busy_ns) / 1e9 / seconds : 0;
  d.poll_us_per_chunk = per(b.poll_ns - a.poll_ns, chunks, 1e-3);
  d.inline_hash_us_per_chunk = per(b.inline_hash_ns - a.inline_hash_ns, chunks, 1e-3);
  d.worker_hash_us_per_chunk = per(b.worker_hash_ns - a.worker_hash_ns, chunks, 1e-3);
  d.submit_us = per(b.submit_ns - a.submit_ns, b.submits - a.submits, 1e-3);
  return d;
}

// `clients` connections, each loading random batches of `queue_depth / clients` distinct cold
// chunks (its own share of `keys`, so no two clients wait on one read) as one request, releasing
// and evicting them again, `batches` times; together they keep up to `queue_depth` reads in
// flight. Chunks per second over the whole run.
Result<double> random_loads(const std::string& socket, NamespaceId ns,
                            const std::vector<ChunkKey>& keys, uint32_t clients,
                            uint32_t queue_depth, size_t batches, uint64_t seed) {
  std::vector<std::shared_ptr<Client>> conns;
  for (uint32_t i = 0; i < clients; ++i) {
    auto c = Client::connect({socket, "tierkv-bench nvme random " + std::to_string(i), true});
    if (!c.ok()) return c.status();
    conns.push_back(std::move(c).value());
  }
  const size_t per = queue_depth / clients;
  std::vector<Status> failed(clients);
  std::vector<size_t> loaded(clients, 0);
  std::vector<std::thread> threads;
  const auto t0 = Clock::now();
  for (uint32_t i = 0; i < clients; ++i) {
    threads.emplace_back([&, i] {
      std::vector<ChunkKey> mine, batch;
      for (size_t k = i; k < keys.size(); k += clients) mine.push_back(keys[k]);
      std::mt19937_64 rng(seed * 1000 + i);
      for (size_t b = 0; b < batches; ++b) {
        batch.clear();
        // A partial Fisher-Yates shuffle: `per` distinct picks.
        for (size_t k = 0; k < per && k < mine.size(); ++k) {
          std::swap(mine[k], mine[k + rng() % (mine.size() - k)]);
          batch.push_back(mine[k]);
        }
        auto lease = conns[i]->load(ns, batch);
        if (!lease.ok()) {
          failed[i] = lease.status();
          return;
        }
        loaded[i] += lease->chunks();
        (void)lease->release();
        (void)conns[i]->evict(ns, batch);
      }
    });
  }
  for (std::thread& t : threads) t.join();
  const double seconds = seconds_since(t0);
  size_t total = 0;
  for (uint32_t i = 0; i < clients; ++i) {
    if (!failed[i].ok()) return failed[i];
    total += loaded[i];
  }
  return static_cast<double>(total) / seconds;
}

class NvmeBench : public BenchCommand {
 public:
  [[nodiscard]] std::string name() const override { return "nvme"; }
  [[nodiscard]] std::string summary() const override {
    return "NVMe tier: load and write-down bandwidth, random-load IOPS, against raw O_DIRECT io_uring";
  }
  void add_options(CLI::App& app) override {
    app.add_option("--dir", dir_,
                   "directory on the disk to measure (default $TMPDIR or /var/tmp); the bench "
                   "works in a fresh subdirectory and removes it")
        ->check(CLI::ExistingDirectory);
    app.add_option("--gib", gib_, "GiB moved per measurement (default 1; --quick: 1/16)");
    app.add_option("--rounds", rounds_, "rounds of raw-then-tierkv measurements; medians reported")
        ->check(CLI::Range(1, 100));
    app.add_option("--daemon", daemon_.daemon_path, "tierkvd binary (default: found beside this one)");
    app.add_option("--random-clients", random_clients_,
                   "connections sharing the random loads' queue depth of 32 (a divisor of 32; "
                   "default 4)")
        ->check(CLI::IsMember({1, 2, 4, 8, 16, 32}));
    app.add_option("--nvme-option", nvme_options_,
                   "KEY=VALUE added to the daemon's [nvme] section, e.g. verify_threads=0 "
                   "(repeatable; to see what a knob does)");
  }
  Result<BenchReport> run(const CommonOptions& common) override;

 private:
  std::string dir_;
  double gib_ = 0;
  int rounds_ = 5;
  uint32_t random_clients_ = 4;
  std::vector<std::string> nvme_options_;
  DaemonOptions daemon_;
};

Result<BenchReport> NvmeBench::run(const CommonOptions& common) {
  const uint64_t bytes =
      static_cast<uint64_t>((gib_ > 0 ? gib_ : common.quick ? 1.0 / 16 : 1.0) * kGiB) /
      (32 * kMiB) * (32 * kMiB);
  if (bytes == 0) return Status::InvalidArgument("--gib must be at least 1/32");
  const int rounds = common.quick ? 1 : rounds_;
  std::string base = dir_;
  if (base.empty()) base = std::getenv("TMPDIR") ? std::getenv("TMPDIR") : "/var/tmp";
  auto scratch = ScratchDir::create(base, "tierkv-bench-nvme");
  if (!scratch.ok()) return scratch.status();
  const std::string& work = scratch->path();

  BenchReport r("nvme");
  r.add_info("dir", base);
  r.add_info("bytes_per_measurement", bytes);
  r.add_info("queue_depth", uint64_t{kQueueDepth});
  r.add_info("rounds", uint64_t(rounds));
  r.add_info("quick", common.quick);

  // The raw reader's buffers are shared memory made exactly as the daemon makes its host pool
  // (memfd, every page reserved and mapped): on some machines, virtual ones especially, direct
  // I/O into such memory is much faster than into private anonymous memory, and the limit must
  // be measured on the memory the tier really uses.
  auto buffers = storage::ShmRegion::create("tierkv-bench-nvme", kQueueDepth * 32 * kMiB, true);
  if (!buffers.ok()) return buffers.status();
  fill_pattern({buffers->data(), buffers->size()}, 7);
  auto file = RawFile::open(work + "/raw.bin", bytes);
  if (!file.ok()) return file.status();

  // The daemon: RAM for one measurement's chunks, NVMe for all of them; write-back held off so a
  // flush times the write-down alone.
  DaemonOptions d = daemon_;
  d.host_capacity_gib = bytes / kGiB + (common.quick ? 1 : 2);
  std::string toml = "slab_size = \"64MiB\"\n[nvme]\ndirectories = [\"" + work +
                     "/nvme\"]\ncapacity = \"" + std::to_string(3 * bytes / kMiB + 512) +
                     "MiB\"\nslab_size = \"64MiB\"\nqueue_depth = " + std::to_string(kQueueDepth) +
                     "\nmode = \"write-back\"\nwriteback_free_fraction = 0.0\n";
  for (const std::string& kv : nvme_options_) {
    if (kv.find('=') == std::string::npos) {
      return Status::InvalidArgument("--nvme-option '" + kv + "' is not KEY=VALUE");
    }
    toml += kv + "\n";
    r.add_info("nvme_option_" + kv.substr(0, kv.find('=')), kv.substr(kv.find('=') + 1));
  }
  progress(common, "starting tierkvd with a " + std::to_string(d.host_capacity_gib) +
                       " GiB host tier and an NVMe tier in " + work);
  auto daemon = BenchDaemon::start(d, toml, std::chrono::seconds(120));
  if (!daemon.ok()) return daemon.status();
  auto client = Client::connect({(*daemon)->socket_path(), "tierkv-bench nvme", true});
  if (!client.ok()) return client.status();
  Client& c = **client;

  // A virtual or shared disk's speed moves between runs: each round measures the raw limit and
  // then tierkv on the same block size back to back, and the figures are the rounds' medians.
  std::vector<std::vector<BenchReport::Cell>> rows;
  const auto diag_cells = [](const IoDiagnosis& d) {
    return std::vector<BenchReport::Cell>{d.mean_depth,
                                          d.busy_fraction,
                                          d.poll_us_per_chunk,
                                          d.inline_hash_us_per_chunk,
                                          d.worker_hash_us_per_chunk,
                                          d.submit_us};
  };
  const uint64_t blocks[2] = {2 * kMiB, 32 * kMiB};
  for (int b = 0; b < 2; ++b) {
    const uint64_t chunk = blocks[b];
    const std::string size = tools::human_size(chunk);
    auto ns = c.register_layout(layout_for(chunk), "bench-nvme");
    if (!ns.ok()) return ns.status();
    std::vector<double> raw_w, raw_r, down, load, down_ratio, load_ratio;
    for (int round = 0; round < rounds; ++round) {
      progress(common, size + " blocks, round " + std::to_string(round + 1) + " of " +
                           std::to_string(rounds) +
                           ": put; raw write, write-down, raw write; raw read, load, raw read");
      const auto keys = single_chunk_keys(*ns, bytes / chunk, static_cast<uint32_t>(b * 100 + round));
      TIERKV_RETURN_IF_ERROR(store_chunks(c, *ns, keys, {buffers->data(), chunk}));
      // Each tierkv measurement sits between two raw ones and is compared with their mean, so a
      // disk whose speed drifts during the round favours neither side.
      auto w = file->sequential(true, chunk, buffers->data());
      if (!w.ok()) return context(w.status(), "raw write");
      auto io0 = io_stats(c);
      if (!io0.ok()) return io0.status();
      auto secs = flush_all(c);
      if (!secs.ok()) return context(secs.status(), "flush");
      auto io1 = io_stats(c);
      if (!io1.ok()) return io1.status();
      auto w2 = file->sequential(true, chunk, buffers->data());
      if (!w2.ok()) return context(w2.status(), "raw write");
      if (auto e = c.evict(ns->id, keys); !e.ok() || *e != keys.size()) {
        return Status::Internal("evicting the " + size + " chunks from RAM failed");
      }
      auto rd = file->sequential(false, chunk, buffers->data());
      if (!rd.ok()) return context(rd.status(), "raw read");
      auto io2 = io_stats(c);
      if (!io2.ok()) return io2.status();
      auto l = load_all(c, *ns, keys, keys.size());
      if (!l.ok()) return context(l.status(), "load of " + size + " chunks");
      auto io3 = io_stats(c);
      if (!io3.ok()) return io3.status();
      auto rd2 = file->sequential(false, chunk, buffers->data());
      if (!rd2.ok()) return context(rd2.status(), "raw read");
      *w = (*w + *w2) / 2;
      *rd = (*rd + *rd2) / 2;
      (void)c.remove_namespace(ns->id);  // room on NVMe for the next round
      raw_w.push_back(*w);
      raw_r.push_back(*rd);
      down.push_back(static_cast<double>(bytes) / *secs / 1e9);
      load.push_back(static_cast<double>(bytes) / *l / 1e9);
      down_ratio.push_back(down.back() / *w);
      load_ratio.push_back(load.back() / *rd);
      for (const bool is_load : {false, true}) {
        std::vector<BenchReport::Cell> row = {std::string(is_load ? "load " : "write-down ") + size,
                                              double(round + 1), is_load ? *rd : *w,
                                              is_load ? load.back() : down.back(),
                                              is_load ? load_ratio.back() : down_ratio.back()};
        const auto d = is_load ? diagnose(*io2, *io3, keys.size(), *l)
                               : diagnose(*io0, *io1, keys.size(), *secs);
        for (auto& cell : diag_cells(d)) row.push_back(cell);
        rows.push_back(std::move(row));
      }
    }
    const std::string sfx = b == 0 ? "_2MiB" : "_32MiB";
    r.add_figure("raw_write_GBps" + sfx, "raw O_DIRECT write, " + size + " blocks", median(raw_w),
                 Unit::kGBps);
    r.add_figure("raw_read_GBps" + sfx, "raw O_DIRECT read, " + size + " blocks", median(raw_r),
                 Unit::kGBps);
    r.add_figure("writedown_GBps" + sfx, "write-down, " + size + " chunks", median(down),
                 Unit::kGBps);
    r.add_figure("writedown_vs_raw" + sfx, "write-down / raw write, " + size, median(down_ratio),
                 Unit::kRatio);
    r.add_target("writedown_vs_raw" + sfx, true, kWritedownVsRawTarget);
    r.add_figure("load_GBps" + sfx, "load from NVMe, " + size + " chunks", median(load),
                 Unit::kGBps);
    r.add_figure("load_vs_raw" + sfx, "load / raw read, " + size, median(load_ratio),
                 Unit::kRatio);
    r.add_target("load_vs_raw" + sfx, true, kLoadVsRawTarget);
    if (b == 1) {
      r.add_figure("raw_read_GBps", "raw read (32 MiB blocks, the headline)", median(raw_r),
                   Unit::kGBps);
      r.add_figure("raw_write_GBps", "raw write (32 MiB blocks, the headline)", median(raw_w),
                   Unit::kGBps);
    }
  }

  // Random loads at queue depth 32, two ways, each chunk evicted from RAM again after its load so
  // every load is cold; raw random reads of the same file system at the same depth run before and
  // after them. The headline: --random-clients connections (4) each keep a batch of 32 / 4 distinct
  // random chunks in one load request, so up to 32 reads stay in flight as one client's batches
  // end and the next begin, as the raw reader's do. Beside it, one client whose batches of 32 are
  // each one request: the queue drains to nothing at the end of every batch, which costs a read's
  // latency per batch however fast the daemon is.
  {
    const uint64_t chunk = 256 * 1024;
    auto ns = c.register_layout(layout_for(chunk), "bench-nvme");
    if (!ns.ok()) return ns.status();
    const auto keys = single_chunk_keys(*ns, std::min<uint64_t>(bytes / chunk, 8192), 9);
    progress(common, "random loads of 256 KiB chunks over " + std::to_string(keys.size()) +
                         " chunks on NVMe, 32 at a time, beside raw random reads");
    TIERKV_RETURN_IF_ERROR(store_chunks(c, *ns, keys, {buffers->data(), chunk}));
    if (auto f = flush_all(c); !f.ok()) return f.status();
    (void)c.evict(ns->id, keys);
    std::vector<double> ours, ours_one, raw, ratio, ratio_one;
    const size_t batches = common.quick ? 16 : 128;  // of 32 chunks
    for (int round = 0; round < rounds; ++round) {
      auto raw_iops = file->random_reads(chunk, batches * kQueueDepth, buffers->data(), 11 + round);
      if (!raw_iops.ok()) return context(raw_iops.status(), "raw random reads");
      auto io0 = io_stats(c);
      if (!io0.ok()) return io0.status();
      const auto t0 = Clock::now();
      auto iops = random_loads((*daemon)->socket_path(), ns->id, keys, random_clients_, kQueueDepth,
                               batches * random_clients_, 100 + round);
      if (!iops.ok()) return context(iops.status(), "random loads");
      const double secs = seconds_since(t0);
      auto io1 = io_stats(c);
      if (!io1.ok()) return io1.status();
      auto one = random_loads((*daemon)->socket_path(), ns->id, keys, 1, kQueueDepth, batches,
                              200 + round);
      if (!one.ok()) return context(one.status(), "random loads, one client");
      auto raw_iops2 =
          file->random_reads(chunk, batches * kQueueDepth, buffers->data(), 51 + round);
      if (!raw_iops2.ok()) return context(raw_iops2.status(), "raw random reads");
      *raw_iops = (*raw_iops + *raw_iops2) / 2;  // before and after ours, as above
      ours.push_back(*iops);
      ours_one.push_back(*one);
      raw.push_back(*raw_iops);
      ratio.push_back(*iops / *raw_iops);
      ratio_one.push_back(*one / *raw_iops);
      std::vector<BenchReport::Cell> row = {std::string("random 256 KiB"), double(round + 1),
                                            *raw_iops, *iops, ratio.back()};
      for (auto& cell : diag_cells(diagnose(*io0, *io1, batches * kQueueDepth, secs))) {
        row.push_back(cell);
      }
      rows.push_back(std::move(row));
    }
    r.add_info("random_clients", uint64_t{random_clients_});
    r.add_figure(
        "random_load_iops_256KiB",
        "random loads, 256 KiB chunks, QD 32 (" + std::to_string(random_clients_) + " clients)",
        median(ours), Unit::kPerSecond);
    r.add_figure("raw_random_read_iops_256KiB", "raw random reads, 256 KiB, QD 32", median(raw),
                 Unit::kPerSecond);
    r.add_figure("random_load_vs_raw_256KiB", "random loads / raw random reads", median(ratio),
                 Unit::kRatio);
    r.add_figure("random_load_iops_256KiB_1client", "random loads, one client, 32 chunks a request",
                 median(ours_one), Unit::kPerSecond);
    r.add_figure("random_load_vs_raw_256KiB_1client", "the same / raw random reads",
                 median(ratio_one), Unit::kRatio);
  }
  r.add_rows(
      "per_round",
      {"what", "round", "raw", "tierkv", "ratio", "mean_depth", "busy_fraction",
       "poll_us_per_chunk", "inline_hash_us_per_chunk", "worker_hash_us_per_chunk", "submit_us"},
      std::move(rows));
  auto st = c.stats();
  if (st.ok()) {
    r.add_info("checksum_failures", st->nvme.checksum_failures);
    r.add_info("read_errors", st->nvme.read_errors);
    r.add_info("verify_threads", uint64_t{st->nvme_io.verify_threads});
    r.add_info("verified_inline", st->nvme_io.verified_inline);
  }
  client->reset();
  TIERKV_RETURN_IF_ERROR((*daemon)->stop());
  return r;
}

}  // namespace

std::unique_ptr<BenchCommand> make_nvme_bench() { return std::make_unique<NvmeBench>(); }

}  // namespace tierkv::bench
