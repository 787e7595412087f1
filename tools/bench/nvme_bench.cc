// tierkv-bench nvme: the NVMe tier against the raw speed of the same file system.
//
// In one run, in one data directory: the raw O_DIRECT io_uring sequential write and read
// bandwidth of a file there (this file's own minimal reader/writer, at the daemon's queue depth
// and with the chunk size as block size), then the daemon's write-down bandwidth (flush of chunks
// committed with write-back held off, timed from the flush to the last index record) and its load
// bandwidth for chunks that lie only on NVMe (evicted from RAM; O_DIRECT, so the page cache never
// serves them), with 2 MiB and 32 MiB chunks; and random single-chunk loads of 256 KiB chunks at
// queue depth 32, in IOPS, beside the raw random-read IOPS of the same file.
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
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "bench/bench_command.h"
#include "bench/bench_daemon.h"
#include "bench/measure.h"
#include "common/format.h"
#include "tierkv/storage/shm_region.h"
#include "tierkv/client.h"

namespace tierkv::bench {

namespace {

constexpr uint64_t kMiB = 1ull << 20;
constexpr uint64_t kGiB = 1ull << 30;
constexpr uint32_t kQueueDepth = 32;
constexpr double kLoadVsRawTarget = 0.9;
constexpr double kWritedownVsRawTarget = 0.85;

Status context(const Status& s, const std::string& what) {
  return {s.code(), what + ": " + s.message()};
}

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

// Loads `keys` (all on NVMe only) in requests of `per_request` keys; GB/s of chunk bytes.
Result<double> load_all(Client& c, const Namespace& ns, const std::vector<ChunkKey>& keys,
                        size_t per_request) {
  const auto t0 = Clock::now();
  uint64_t bytes = 0;
  for (size_t at = 0; at < keys.size(); at += per_request) {
    const size_t n = std::min(per_request, keys.size() - at);
    auto lease = c.load(ns.id, std::span(keys).subspan(at, n));
    if (!lease.ok()) return lease.status();
    if (lease->chunks() != n) {
      return Status::Internal("load returned " + std::to_string(lease->chunks()) + " of " +
                              std::to_string(n) + " chunks (see the daemon's stats)");
    }
    bytes += n * ns.chunk_bytes();
  }
  return static_cast<double>(bytes) / seconds_since(t0) / 1e9;
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
  }
  Result<BenchReport> run(const CommonOptions& common) override;

 private:
  std::string dir_;
  double gib_ = 0;
  int rounds_ = 5;
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
  const std::string toml = "slab_size = \"64MiB\"\n[nvme]\ndirectories = [\"" + work +
                           "/nvme\"]\ncapacity = \"" + std::to_string(3 * bytes / kMiB + 512) +
                           "MiB\"\nslab_size = \"64MiB\"\nqueue_depth = " +
                           std::to_string(kQueueDepth) +
                           "\nmode = \"write-back\"\nwriteback_free_fraction = 0.0\n";
  progress(common, "starting tierkvd with a " + std::to_string(d.host_capacity_gib) +
                       " GiB host tier and an NVMe tier in " + work);
  auto daemon = BenchDaemon::start(d, toml, std::chrono::seconds(120));
  if (!daemon.ok()) return daemon.status();
  auto client = Client::connect({(*daemon)->socket_path(), "tierkv-bench nvme", true});
  if (!client.ok()) return client.status();
  Client& c = **client;

  // A virtual or shared disk's speed moves between runs: each round measures the raw limit and
  // then tierkv on the same block size back to back, and the figures are the rounds' medians.
  const uint64_t blocks[2] = {2 * kMiB, 32 * kMiB};
  for (int b = 0; b < 2; ++b) {
    const uint64_t chunk = blocks[b];
    const std::string size = tools::human_size(chunk);
    auto ns = c.register_layout(layout_for(chunk), "bench-nvme");
    if (!ns.ok()) return ns.status();
    std::vector<double> raw_w, raw_r, down, load, down_ratio, load_ratio;
    for (int round = 0; round < rounds; ++round) {
      progress(common, size + " blocks, round " + std::to_string(round + 1) + " of " +
                           std::to_string(rounds) + ": raw write and read, then put, flush, "
                           "evict and load through tierkvd");
      auto w = file->sequential(true, chunk, buffers->data());
      if (!w.ok()) return context(w.status(), "raw write");
      auto rd = file->sequential(false, chunk, buffers->data());
      if (!rd.ok()) return context(rd.status(), "raw read");
      const auto keys = single_chunk_keys(*ns, bytes / chunk, static_cast<uint32_t>(b * 100 + round));
      TIERKV_RETURN_IF_ERROR(store_chunks(c, *ns, keys, {buffers->data(), chunk}));
      auto secs = flush_all(c);
      if (!secs.ok()) return context(secs.status(), "flush");
      if (auto e = c.evict(ns->id, keys); !e.ok() || *e != keys.size()) {
        return Status::Internal("evicting the " + size + " chunks from RAM failed");
      }
      auto l = load_all(c, *ns, keys, keys.size());
      if (!l.ok()) return context(l.status(), "load of " + size + " chunks");
      (void)c.remove_namespace(ns->id);  // room on NVMe for the next round
      raw_w.push_back(*w);
      raw_r.push_back(*rd);
      down.push_back(static_cast<double>(bytes) / *secs / 1e9);
      load.push_back(*l);
      down_ratio.push_back(down.back() / *w);
      load_ratio.push_back(*l / *rd);
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

  // Random single-chunk loads: batches of 32 distinct random chunks, each batch one load request
  // (32 reads in flight), evicted from RAM again after each batch so every load is cold; the raw
  // random reads of the same file system at the same depth alternate with them.
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
    std::mt19937_64 rng(5);
    std::vector<ChunkKey> batch;
    std::vector<double> ours, raw, ratio;
    const size_t batches = common.quick ? 16 : 128;
    std::vector<size_t> picks(keys.size());
    for (int round = 0; round < rounds; ++round) {
      auto raw_iops = file->random_reads(chunk, batches * kQueueDepth, buffers->data(), 11 + round);
      if (!raw_iops.ok()) return context(raw_iops.status(), "raw random reads");
      size_t loaded = 0;
      double seconds = 0;
      for (size_t i = 0; i < batches; ++i) {
        batch.clear();
        for (size_t k = 0; k < picks.size(); ++k) picks[k] = k;
        for (size_t k = 0; k < kQueueDepth && k < picks.size(); ++k) {
          std::swap(picks[k], picks[k + rng() % (picks.size() - k)]);
          batch.push_back(keys[picks[k]]);
        }
        const auto t0 = Clock::now();
        auto lease = c.load(ns->id, batch);
        if (!lease.ok()) return lease.status();
        seconds += seconds_since(t0);
        loaded += lease->chunks();
        (void)lease->release();
        (void)c.evict(ns->id, batch);
      }
      ours.push_back(static_cast<double>(loaded) / seconds);
      raw.push_back(*raw_iops);
      ratio.push_back(ours.back() / raw.back());
    }
    r.add_figure("random_load_iops_256KiB", "random loads, 256 KiB chunks, QD 32", median(ours),
                 Unit::kPerSecond);
    r.add_figure("raw_random_read_iops_256KiB", "raw random reads, 256 KiB, QD 32", median(raw),
                 Unit::kPerSecond);
    r.add_figure("random_load_vs_raw_256KiB", "random loads / raw random reads", median(ratio),
                 Unit::kRatio);
  }
  auto st = c.stats();
  if (st.ok()) {
    r.add_info("checksum_failures", st->nvme.checksum_failures);
    r.add_info("read_errors", st->nvme.read_errors);
  }
  client->reset();
  TIERKV_RETURN_IF_ERROR((*daemon)->stop());
  return r;
}

}  // namespace

std::unique_ptr<BenchCommand> make_nvme_bench() { return std::make_unique<NvmeBench>(); }

}  // namespace tierkv::bench
