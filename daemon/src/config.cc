#include "tierkv/daemon/config.h"

#include <toml++/toml.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <fstream>
#include <set>
#include <sstream>

namespace tierkv::daemon {

std::string_view default_config_toml() {
  return R"(# tierkvd configuration. Every option, its default and what it does.
# Sizes take a unit: KiB, MiB, GiB, TiB (or KB, MB, GB, TB for powers of ten); a bare number is bytes.

[server]
# Unix socket the daemon listens on. Clients find it through $TIERKV_SOCKET or this default.
socket_path = "/run/tierkv/tierkvd.sock"
# File mode of the socket. Access is decided by allowed_uids (checked with SO_PEERCRED), so the
# socket itself may be open to all: a refused client gets an error that says why.
socket_mode = 0o666
# Users (numeric uids) allowed to connect, besides the daemon's own user and root.
allowed_uids = []
# Most clients connected at once; more are refused with an error.
max_clients = 1024

[host]
# Shared-memory host tier: total bytes of KV it holds. Rounded down to whole slabs.
capacity = "2GiB"
# Slab size: the host pool is cut into slabs, each carved into slots of one size class.
# Also the largest chunk the host tier holds. A power of two.
slab_size = "64MiB"
# Smallest slot size class; classes run 1x, 1.5x, 2x, 3x, 4x ... of it up to slab_size.
min_slot_size = "64KiB"
# Reserve and map every page of the host tier at start-up: fails early if the memory is not there,
# and no chunk write ever page-faults.
prefault = true

[cache]
# Tokens per chunk for layouts that do not set their own.
chunk_tokens = 256

[nvme]
# NVMe tier: chunks written down from host RAM to preallocated files, read back on a miss in RAM,
# kept across restarts and crashes. One directory per device; slabs are striped across them.
# Empty = the tier is off.
directories = []
# Total bytes of chunk data over all directories, split evenly; each directory gets one
# fallocate'd file, tierkv-data.bin, at start-up. Rounded down to whole slabs.
capacity = "64GiB"
# Slab size inside the data files (a power of two, at most 1GiB); also the largest chunk on NVMe.
slab_size = "256MiB"
# Smallest slot size class on NVMe, as for [host].
min_slot_size = "64KiB"
# io_uring queue depth: the most reads and writes in flight at once.
queue_depth = 32
# Reads and writes of at least this size are issued by the kernel's I/O worker threads rather than
# inside the daemon's submit call, which blocks while the device's request queue is full (32 reads
# of 32 MiB at once can hold it for half a second, and every client waits). "0" = none.
async_io_min = "4MiB"
# "write-back": chunks are written down once the host tier runs short of free space (see
# writeback_free_fraction), coldest first in commit order, so hot chunks may never touch the disk.
# "write-through": every committed chunk is written down at once.
mode = "write-back"
# Write-back starts when less than this fraction of the host tier is free.
writeback_free_fraction = 0.25
# Tenants whose chunks go to NVMe; empty = every tenant.
tenants = []
# Where the RocksDB index lives; empty = an "index" folder in the first directory.
index_dir = ""
# After disk full (ENOSPC) the tier stops admitting chunks for this many seconds, then tries again.
retry_after_full_s = 30
# Threads that check the checksum of every chunk read from NVMe, off the server thread (which then
# only submits and reaps I/O). 0 = the server thread checks them itself.
verify_threads = 2
# How chunks are stored on NVMe (host RAM always holds them as they are):
#   "raw"                    as they are: read and written by DMA straight between RAM and disk
#   "zstd[:LEVEL][:bytes|bits|none]"   lossless; the 16-bit floats' bytes (or bits) in planes,
#                            then zstd at LEVEL (-7..19, default 1)
#   "int8[:kGROUP]"          lossy: 8-bit values; keys per channel over GROUP tokens, values
#                            per token and head (the more accurate 1-byte codec)
#   "fp8[:auto|e4m3]"        lossy: 8-bit floats, a scale per token and head; auto (default)
#                            picks each row's split of exponent and mantissa bits, e4m3 is
#                            OCP e4m3 with power-of-two scales
#   "int4[:gGROUP]"          lossy: 4-bit values, keys grouped per channel, values per token
#   "fused[:THRESHOLD]..."   lossy: blocks close to a block already stored (cosine similarity at
#                            least THRESHOLD, default 0.95) are stored as a reference to it plus
#                            a small residual; the shared blocks live in the index beside the
#                            chunks. Chunks written down together are matched together.
# An encoded chunk takes a disk slot sized to its encoded bytes, so the tier holds more; each
# chunk records its codec, so chunks written under another codec still load. `tierkv-bench codec`
# shows each codec's ratio, speed and error on real KV (and every parameter of each codec).
codec = "raw"
# Threads that encode chunks on their way down and decode them on their way up (off the
# daemon's request thread). 0 = a quarter of the cores, at least 1.
encode_threads = 0
decode_threads = 0
# Staging memory for encoded chunks' disk I/O (encoded into before a write, read into before a
# decode). When it is full, write-down waits; reads go first. A namespace whose chunks need
# more than a quarter of it is stored raw. Registered with io_uring like the host tier.
staging_size = "256MiB"

[nvme.codec_by_tenant]
# Per-tenant codec, overriding nvme.codec, e.g.  "batch-jobs" = "fp8"

[nvme.fault_injection]
# For tests only: make the I/O backend fail on purpose. Every Nth read fails with EIO, every Nth
# write fails with EIO, every Nth read returns half its bytes, writes fail with ENOSPC once this
# many bytes were written, every Nth request completes slow_ms late. 0 = never.
read_eio_every = 0
write_eio_every = 0
short_read_every = 0
enospc_after = 0
slow_every = 0
slow_ms = 0

[prefill]
# Co-scheduled prefill: while an engine computes a prompt's cached prefix from the front, tierkvd
# loads it from the back, and the two meet where the prefix is ready soonest.
# Reads in flight per prefill session, at most.
queue_depth = 8
# Prefill sessions one client may have open at once.
max_sessions_per_client = 16
# The engine's compute time per chunk, until the engine registers its own profile (or enough is
# learned from its reports): c tokens after a prefix of L tokens take a*c + b*c*(L + c/2) ms.
# The default is an 8B-class Llama on one H100.
compute_a_ms_per_token = 0.02942
compute_b_ms_per_token2 = 7.97e-7
# What a read from the slower tiers costs until reads are measured (then moving averages of them):
# bandwidth in GB/s, fixed latency per read in microseconds.
nvme_read_GBps = 2.0
nvme_read_latency_us = 100.0
remote_read_GBps = 1.0
remote_read_latency_us = 1000.0
# For benchmarks and tests of the schedule: read chunks that are in host RAM through an emulated
# tier of this bandwidth (GB/s) and latency (us) instead of handing them over at once. 0 = off.
host_read_throttle_GBps = 0.0
host_read_throttle_latency_us = 0.0
# For benchmarks and tests of the schedule: pace reads of chunks on NVMe to this bandwidth (GB/s),
# each read held this extra latency (us) and its transfer time at that bandwidth before it is
# issued; every read is still a real read of the disk. 0 = off.
nvme_read_throttle_GBps = 0.0
nvme_read_throttle_latency_us = 0.0
# Recent prefill sessions kept for `tierkvctl stats`.
recent_sessions = 16

[gpu]
# GPU tier: a pool of GPU memory tierkvd allocates at start-up and shares with the engines on this
# host (CUDA IPC), holding copies of the host chunks loaded most, so that an engine loads them with
# a device-to-device copy instead of over PCIe. A GPU copy is an extra copy of a host chunk: it
# goes when the host chunk goes. Off unless capacity is set; off too, with the reason in
# `tierkvctl stats`, when tierkvd was built without CUDA or finds no such device (it runs on).
# CUDA device index, as tierkvd sees the devices (CUDA_VISIBLE_DEVICES applies), or "off".
device = 0
# Bytes of GPU memory for the tier. Rounded down to whole slabs. 0 = the tier is off.
capacity = 0
# Slab size and smallest slot size class inside the GPU pool, as for [host].
slab_size = "64MiB"
min_slot_size = "64KiB"
# A host chunk is copied up to the GPU once it has been loaded this many times.
promote_after_loads = 2
# Promotion copies in flight at once, on tierkvd's own CUDA stream.
copies_in_flight = 16

[log]
# trace, debug, info, warn, error, critical or off.
level = "info"
)";
}

Result<uint64_t> parse_size(std::string_view text) {
  size_t i = 0;
  while (i < text.size() && std::isspace(static_cast<unsigned char>(text[i]))) ++i;
  uint64_t value = 0;
  size_t digits = 0;
  for (; i < text.size() && std::isdigit(static_cast<unsigned char>(text[i])); ++i, ++digits) {
    if (value > (UINT64_MAX - 9) / 10) return Status::InvalidArgument("size '" + std::string(text) + "' is too large");
    value = value * 10 + static_cast<uint64_t>(text[i] - '0');
  }
  if (digits == 0) return Status::InvalidArgument("size '" + std::string(text) + "' does not start with a number");
  while (i < text.size() && std::isspace(static_cast<unsigned char>(text[i]))) ++i;
  const std::string_view unit = text.substr(i);
  static constexpr struct {
    std::string_view name;
    uint64_t factor;
  } kUnits[] = {{"", 1},          {"B", 1},
                {"KiB", 1ull << 10}, {"MiB", 1ull << 20}, {"GiB", 1ull << 30}, {"TiB", 1ull << 40},
                {"KB", 1000ull},     {"MB", 1000000ull},  {"GB", 1000000000ull},
                {"TB", 1000000000000ull}};
  for (const auto& u : kUnits) {
    if (unit == u.name) {
      if (value > UINT64_MAX / u.factor) return Status::InvalidArgument("size '" + std::string(text) + "' is too large");
      return value * u.factor;
    }
  }
  return Status::InvalidArgument("size '" + std::string(text) + "': unknown unit '" +
                                 std::string(unit) + "' (use KiB, MiB, GiB, TiB, KB, MB, GB, TB)");
}

std::string format_size(uint64_t bytes) {
  static constexpr const char* kNames[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024.0 && u < 5) {
    v /= 1024.0;
    ++u;
  }
  char buf[32];
  if (u == 0 || v == static_cast<double>(static_cast<uint64_t>(v))) {
    std::snprintf(buf, sizeof(buf), "%llu %s", static_cast<unsigned long long>(v), kNames[u]);
  } else {
    std::snprintf(buf, sizeof(buf), "%.1f %s", v, kNames[u]);
  }
  return buf;
}

namespace {

// Reads one table's keys into the config, rejecting unknown keys and wrong types.
class TableReader {
 public:
  TableReader(const toml::table& root, std::string_view origin) : root_(root), origin_(origin) {}

  Status check_known(const std::set<std::string>& known) {
    return check_table(root_, "", known);
  }
  Status check_table(const toml::table& table, const std::string& prefix,
                     const std::set<std::string>& known) {
    for (const auto& [key, node] : table) {
      const std::string full = prefix + std::string(key.str());
      if (known.count(full)) continue;
      const toml::table* t = node.as_table();
      // A [section] (or [section.sub]) that some known option lives in: look inside.
      const bool is_section = std::any_of(known.begin(), known.end(), [&](const std::string& k) {
        return k.rfind(full + ".", 0) == 0;
      });
      if (t == nullptr || !is_section) {
        return error(node, full, t ? "is not a known section" : "is not a known option");
      }
      TIERKV_RETURN_IF_ERROR(check_table(*t, full + ".", known));
    }
    return Status::Ok();
  }
  Status get_string_list(const char* path, std::vector<std::string>& out) {
    const toml::node* n = root_.at_path(path).node();
    if (n == nullptr) return Status::Ok();
    const toml::array* a = n->as_array();
    if (a == nullptr) return error(*n, path, "must be an array of strings");
    out.clear();
    for (const toml::node& item : *a) {
      if (!item.is_string() || item.as_string()->get().empty()) {
        return error(item, path, "must hold only non-empty strings");
      }
      out.push_back(item.as_string()->get());
    }
    return Status::Ok();
  }

  Status get_string(const char* path, std::string& out) {
    const toml::node* n = root_.at_path(path).node();
    if (n == nullptr) return Status::Ok();
    if (!n->is_string()) return error(*n, path, "must be a string");
    out = n->as_string()->get();
    return Status::Ok();
  }
  Status get_bool(const char* path, bool& out) {
    const toml::node* n = root_.at_path(path).node();
    if (n == nullptr) return Status::Ok();
    if (!n->is_boolean()) return error(*n, path, "must be true or false");
    out = n->as_boolean()->get();
    return Status::Ok();
  }
  Status get_uint(const char* path, uint64_t max, uint64_t& out) {
    const toml::node* n = root_.at_path(path).node();
    if (n == nullptr) return Status::Ok();
    if (!n->is_integer()) return error(*n, path, "must be an integer");
    const int64_t v = n->as_integer()->get();
    if (v < 0 || static_cast<uint64_t>(v) > max) {
      return error(*n, path, "= " + std::to_string(v) + " is out of range [0, " + std::to_string(max) + "]");
    }
    out = static_cast<uint64_t>(v);
    return Status::Ok();
  }
  Status get_double(const char* path, double min, double max, double& out) {
    const toml::node* n = root_.at_path(path).node();
    if (n == nullptr) return Status::Ok();
    double v = 0;
    if (n->is_floating_point()) {
      v = n->as_floating_point()->get();
    } else if (n->is_integer()) {
      v = static_cast<double>(n->as_integer()->get());
    } else {
      return error(*n, path, "must be a number");
    }
    if (!(v >= min && v <= max)) {
      return error(*n, path,
                   "= " + std::to_string(v) + " is out of range [" + std::to_string(min) + ", " +
                       std::to_string(max) + "]");
    }
    out = v;
    return Status::Ok();
  }
  Status get_size(const char* path, uint64_t& out) {
    const toml::node* n = root_.at_path(path).node();
    if (n == nullptr) return Status::Ok();
    if (n->is_integer()) return get_uint(path, UINT64_MAX >> 1, out);
    if (!n->is_string()) return error(*n, path, "must be a size such as \"2GiB\"");
    auto v = parse_size(n->as_string()->get());
    if (!v.ok()) return error(*n, path, v.status().message());
    out = *v;
    return Status::Ok();
  }
  // A codec for the NVMe tier (scheduler::parse_nvme_codec); the message names key and value.
  Status get_nvme_codec(const char* path, std::string& out) {
    const toml::node* n = root_.at_path(path).node();
    if (n == nullptr) return Status::Ok();
    if (!n->is_string()) return error(*n, path, "must be a codec string such as \"zstd\"");
    auto c = scheduler::parse_nvme_codec(path, n->as_string()->get());
    if (!c.ok()) return error(*n, "", c.status().message());
    out = n->as_string()->get();
    return Status::Ok();
  }
  // A table of tenant = codec.
  Status get_nvme_codec_table(const char* path,
                              std::vector<std::pair<std::string, std::string>>& out) {
    const toml::node* n = root_.at_path(path).node();
    if (n == nullptr) return Status::Ok();
    const toml::table* t = n->as_table();
    if (t == nullptr) return error(*n, path, "must be a table of tenant = \"codec\"");
    out.clear();
    for (const auto& [tenant, value] : *t) {
      const std::string key = std::string(path) + "." + std::string(tenant.str());
      if (tenant.str().empty()) return error(value, key, "names an empty tenant");
      if (!value.is_string()) return error(value, key, "must be a codec string such as \"fp8\"");
      auto c = scheduler::parse_nvme_codec(key, value.as_string()->get());
      if (!c.ok()) return error(value, "", c.status().message());
      out.emplace_back(std::string(tenant.str()), value.as_string()->get());
    }
    return Status::Ok();
  }
  Status get_uid_list(const char* path, std::vector<uint32_t>& out) {
    const toml::node* n = root_.at_path(path).node();
    if (n == nullptr) return Status::Ok();
    const toml::array* a = n->as_array();
    if (a == nullptr) return error(*n, path, "must be an array of uids");
    out.clear();
    for (const toml::node& item : *a) {
      if (!item.is_integer() || item.as_integer()->get() < 0 || item.as_integer()->get() > UINT32_MAX) {
        return error(item, path, "must hold only numeric uids");
      }
      out.push_back(static_cast<uint32_t>(item.as_integer()->get()));
    }
    return Status::Ok();
  }

 private:
  Status error(const toml::node& n, std::string_view key, const std::string& what) const {
    return Status::InvalidArgument(std::string(origin_) + ":" +
                                   std::to_string(n.source().begin.line) + ": " +
                                   (key.empty() ? std::string() : std::string(key) + " ") + what);
  }

  const toml::table& root_;
  std::string_view origin_;
};

}  // namespace

Result<DaemonConfig> parse_config(std::string_view toml_text, std::string_view origin) {
  toml::table root;
  try {
    root = toml::parse(toml_text, origin);
  } catch (const toml::parse_error& e) {
    return Status::InvalidArgument(std::string(origin) + ":" +
                                   std::to_string(e.source().begin.line) + ": " +
                                   std::string(e.description()));
  }
  DaemonConfig c;
  TableReader r(root, origin);
  TIERKV_RETURN_IF_ERROR(r.check_known({"server.socket_path", "server.socket_mode",
                                        "server.allowed_uids", "server.max_clients",
                                        "host.capacity", "host.slab_size", "host.min_slot_size",
                                        "host.prefault", "cache.chunk_tokens", "log.level",
                                        "nvme.directories", "nvme.capacity", "nvme.slab_size",
                                        "nvme.min_slot_size", "nvme.queue_depth", "nvme.mode",
                                        "nvme.writeback_free_fraction", "nvme.tenants",
                                        "nvme.index_dir", "nvme.retry_after_full_s",
                                        "nvme.codec", "nvme.codec_by_tenant",
                                        "nvme.encode_threads", "nvme.decode_threads",
                                        "nvme.staging_size",
                                        "nvme.async_io_min", "nvme.verify_threads",
                                        "nvme.fault_injection.read_eio_every",
                                        "nvme.fault_injection.write_eio_every",
                                        "nvme.fault_injection.short_read_every",
                                        "nvme.fault_injection.enospc_after",
                                        "nvme.fault_injection.slow_every",
                                        "nvme.fault_injection.slow_ms",
                                        "prefill.queue_depth", "prefill.max_sessions_per_client",
                                        "prefill.compute_a_ms_per_token",
                                        "prefill.compute_b_ms_per_token2", "prefill.nvme_read_GBps",
                                        "prefill.nvme_read_latency_us", "prefill.remote_read_GBps",
                                        "prefill.remote_read_latency_us",
                                        "prefill.host_read_throttle_GBps",
                                        "prefill.host_read_throttle_latency_us",
                                        "prefill.nvme_read_throttle_GBps",
                                        "prefill.nvme_read_throttle_latency_us",
                                        "prefill.recent_sessions", "gpu.device", "gpu.capacity",
                                        "gpu.slab_size", "gpu.min_slot_size",
                                        "gpu.promote_after_loads", "gpu.copies_in_flight"}));
  uint64_t v = 0;
  TIERKV_RETURN_IF_ERROR(r.get_string("server.socket_path", c.socket_path));
  v = c.socket_mode;
  TIERKV_RETURN_IF_ERROR(r.get_uint("server.socket_mode", 0777, v));
  c.socket_mode = static_cast<uint32_t>(v);
  TIERKV_RETURN_IF_ERROR(r.get_uid_list("server.allowed_uids", c.allowed_uids));
  v = c.max_clients;
  TIERKV_RETURN_IF_ERROR(r.get_uint("server.max_clients", 1u << 20, v));
  c.max_clients = static_cast<uint32_t>(v);
  TIERKV_RETURN_IF_ERROR(r.get_size("host.capacity", c.cache.host_capacity_bytes));
  TIERKV_RETURN_IF_ERROR(r.get_size("host.slab_size", c.cache.slab_bytes));
  TIERKV_RETURN_IF_ERROR(r.get_size("host.min_slot_size", c.cache.min_slot_bytes));
  TIERKV_RETURN_IF_ERROR(r.get_bool("host.prefault", c.cache.prefault));
  v = c.cache.default_chunk_tokens;
  TIERKV_RETURN_IF_ERROR(r.get_uint("cache.chunk_tokens", Layout::kMaxChunkTokens, v));
  c.cache.default_chunk_tokens = static_cast<uint32_t>(v);
  TIERKV_RETURN_IF_ERROR(r.get_string("log.level", c.log_level));
  scheduler::PrefillOptions& p = c.prefill;
  v = p.queue_depth;
  TIERKV_RETURN_IF_ERROR(r.get_uint("prefill.queue_depth", 4096, v));
  p.queue_depth = static_cast<uint32_t>(v);
  v = p.max_sessions_per_client;
  TIERKV_RETURN_IF_ERROR(r.get_uint("prefill.max_sessions_per_client", 1u << 16, v));
  p.max_sessions_per_client = static_cast<uint32_t>(v);
  v = p.recent_sessions;
  TIERKV_RETURN_IF_ERROR(r.get_uint("prefill.recent_sessions", 4096, v));
  p.recent_sessions = static_cast<uint32_t>(v);
  TIERKV_RETURN_IF_ERROR(r.get_double("prefill.compute_a_ms_per_token", 0, 1e6,
                                      p.default_profile.a_ms_per_token));
  TIERKV_RETURN_IF_ERROR(r.get_double("prefill.compute_b_ms_per_token2", 0, 1e6,
                                      p.default_profile.b_ms_per_token2));
  TIERKV_RETURN_IF_ERROR(r.get_double("prefill.nvme_read_GBps", 1e-6, 1e6,
                                      p.tier_costs.nvme.read_GBps));
  TIERKV_RETURN_IF_ERROR(r.get_double("prefill.nvme_read_latency_us", 0, 1e9,
                                      p.tier_costs.nvme.latency_us));
  TIERKV_RETURN_IF_ERROR(r.get_double("prefill.remote_read_GBps", 1e-6, 1e6,
                                      p.tier_costs.remote.read_GBps));
  TIERKV_RETURN_IF_ERROR(r.get_double("prefill.remote_read_latency_us", 0, 1e9,
                                      p.tier_costs.remote.latency_us));
  TIERKV_RETURN_IF_ERROR(r.get_double("prefill.host_read_throttle_GBps", 0, 1e6,
                                      p.host_throttle.read_GBps));
  TIERKV_RETURN_IF_ERROR(r.get_double("prefill.host_read_throttle_latency_us", 0, 1e9,
                                      p.host_throttle.latency_us));
  TIERKV_RETURN_IF_ERROR(r.get_double("prefill.nvme_read_throttle_GBps", 0, 1e6,
                                      p.nvme_throttle.read_GBps));
  TIERKV_RETURN_IF_ERROR(r.get_double("prefill.nvme_read_throttle_latency_us", 0, 1e9,
                                      p.nvme_throttle.latency_us));

  scheduler::NvmeTierOptions& nv = c.cache.nvme;
  TIERKV_RETURN_IF_ERROR(r.get_string_list("nvme.directories", nv.store.directories));
  TIERKV_RETURN_IF_ERROR(r.get_size("nvme.capacity", nv.store.capacity_bytes));
  TIERKV_RETURN_IF_ERROR(r.get_size("nvme.slab_size", nv.store.slab_bytes));
  TIERKV_RETURN_IF_ERROR(r.get_size("nvme.min_slot_size", nv.store.min_slot_bytes));
  v = nv.store.queue_depth;
  TIERKV_RETURN_IF_ERROR(r.get_uint("nvme.queue_depth", 4096, v));
  nv.store.queue_depth = static_cast<uint32_t>(v);
  TIERKV_RETURN_IF_ERROR(r.get_size("nvme.async_io_min", nv.store.async_min_bytes));
  std::string mode = "write-back";
  TIERKV_RETURN_IF_ERROR(r.get_string("nvme.mode", mode));
  if (mode != "write-back" && mode != "write-through") {
    return Status::InvalidArgument(std::string(origin) + ": nvme.mode '" + mode +
                                   "' is neither \"write-back\" nor \"write-through\"");
  }
  nv.write_through = mode == "write-through";
  TIERKV_RETURN_IF_ERROR(
      r.get_double("nvme.writeback_free_fraction", 0.0, 1.0, nv.writeback_free_fraction));
  TIERKV_RETURN_IF_ERROR(r.get_string_list("nvme.tenants", nv.tenants));
  TIERKV_RETURN_IF_ERROR(r.get_string("nvme.index_dir", nv.store.index_dir));
  v = static_cast<uint64_t>(nv.retry_after_full.count() / 1000);
  TIERKV_RETURN_IF_ERROR(r.get_uint("nvme.retry_after_full_s", 86400, v));
  nv.retry_after_full = std::chrono::milliseconds(v * 1000);
  TIERKV_RETURN_IF_ERROR(r.get_nvme_codec("nvme.codec", nv.codec));
  TIERKV_RETURN_IF_ERROR(r.get_nvme_codec_table("nvme.codec_by_tenant", nv.codec_by_tenant));
  v = nv.encode_threads;
  TIERKV_RETURN_IF_ERROR(r.get_uint("nvme.encode_threads", 1024, v));
  nv.encode_threads = static_cast<uint32_t>(v);
  v = nv.decode_threads;
  TIERKV_RETURN_IF_ERROR(r.get_uint("nvme.decode_threads", 1024, v));
  nv.decode_threads = static_cast<uint32_t>(v);
  TIERKV_RETURN_IF_ERROR(r.get_size("nvme.staging_size", nv.staging_bytes));
  if (nv.staging_bytes < (1u << 20)) {
    return Status::InvalidArgument(std::string(origin) + ": nvme.staging_size = " +
                                   std::to_string(nv.staging_bytes) +
                                   " bytes is less than the minimum 1MiB");
  }
  v = nv.verify_threads;
  TIERKV_RETURN_IF_ERROR(r.get_uint("nvme.verify_threads", 64, v));
  nv.verify_threads = static_cast<uint32_t>(v);
  storage::FaultPlan& f = nv.store.faults;
  for (auto [key, field] : {std::pair{"nvme.fault_injection.read_eio_every", &f.read_eio_every},
                            std::pair{"nvme.fault_injection.write_eio_every", &f.write_eio_every},
                            std::pair{"nvme.fault_injection.short_read_every", &f.short_read_every},
                            std::pair{"nvme.fault_injection.slow_every", &f.slow_every},
                            std::pair{"nvme.fault_injection.slow_ms", &f.slow_ms}}) {
    v = *field;
    TIERKV_RETURN_IF_ERROR(r.get_uint(key, UINT32_MAX, v));
    *field = static_cast<uint32_t>(v);
  }
  TIERKV_RETURN_IF_ERROR(r.get_size("nvme.fault_injection.enospc_after", f.enospc_after_bytes));

  // [gpu]: device is an index or "off".
  scheduler::GpuTierOptions& g = c.cache.gpu;
  if (const toml::node* n = root.at_path("gpu.device").node(); n != nullptr) {
    const bool off = n->is_string() && n->as_string()->get() == "off";
    const int64_t d = n->is_integer() ? n->as_integer()->get() : -2;
    if (!off && (d < -1 || d > 1023)) {
      const std::string value = n->is_string()    ? "\"" + n->as_string()->get() + "\""
                                : n->is_integer() ? std::to_string(d)
                                                  : std::string("(not a string or integer)");
      return Status::InvalidArgument(std::string(origin) + ":" +
                                     std::to_string(n->source().begin.line) + ": gpu.device = " +
                                     value +
                                     " is neither a CUDA device index (0 to 1023), -1 nor \"off\"");
    }
    g.device = off ? -1 : static_cast<int>(d);
  }
  TIERKV_RETURN_IF_ERROR(r.get_size("gpu.capacity", g.capacity_bytes));
  TIERKV_RETURN_IF_ERROR(r.get_size("gpu.slab_size", g.slab_bytes));
  TIERKV_RETURN_IF_ERROR(r.get_size("gpu.min_slot_size", g.min_slot_bytes));
  v = g.promote_after_loads;
  TIERKV_RETURN_IF_ERROR(r.get_uint("gpu.promote_after_loads", 1u << 20, v));
  g.promote_after_loads = static_cast<uint32_t>(v);
  v = g.copies_in_flight;
  TIERKV_RETURN_IF_ERROR(r.get_uint("gpu.copies_in_flight", 1024, v));
  g.copies_in_flight = static_cast<uint32_t>(v);
  if (g.capacity_bytes > 0) {
    if (Status s = g.validate(); !s.ok()) {
      return Status::InvalidArgument(std::string(origin) + ": " + s.message());
    }
  }

  // Cross-field checks, named by key.
  if (c.socket_path.empty() || c.socket_path.size() >= 108) {
    return Status::InvalidArgument(std::string(origin) + ": server.socket_path '" + c.socket_path +
                                   "' must be 1 to 107 characters (a Unix socket path)");
  }
  if (c.prefill.queue_depth == 0) {
    return Status::InvalidArgument(std::string(origin) + ": prefill.queue_depth must be at least 1");
  }
  if (c.cache.default_chunk_tokens == 0) {
    return Status::InvalidArgument(std::string(origin) + ": cache.chunk_tokens must be at least 1");
  }
  storage::SlotPoolOptions pool{"host", c.cache.host_capacity_bytes, c.cache.slab_bytes,
                                c.cache.min_slot_bytes};
  if (Status s = pool.validate(); !s.ok()) {
    return Status::InvalidArgument(std::string(origin) + ": " + s.message());
  }
  if (!nv.store.directories.empty()) {
    storage::SlotPoolOptions disk{"nvme", nv.store.capacity_bytes / nv.store.directories.size(),
                                  nv.store.slab_bytes, nv.store.min_slot_bytes};
    if (Status s = disk.validate(); !s.ok()) {
      return Status::InvalidArgument(std::string(origin) + ": " + s.message() +
                                     " (capacity per directory)");
    }
    if (nv.store.slab_bytes > (1ull << 30)) {
      return Status::InvalidArgument(std::string(origin) + ": nvme.slab_size must be at most 1GiB");
    }
    if (nv.store.queue_depth == 0) {
      return Status::InvalidArgument(std::string(origin) + ": nvme.queue_depth must be at least 1");
    }
  }
  static const std::set<std::string> kLevels = {"trace", "debug", "info", "warn",
                                                "error", "critical", "off"};
  if (!kLevels.count(c.log_level)) {
    return Status::InvalidArgument(std::string(origin) + ": log.level '" + c.log_level +
                                   "' is not one of trace, debug, info, warn, error, critical, off");
  }
  return c;
}

Result<DaemonConfig> load_config_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Status::FromErrno("cannot read config file " + path, errno);
  std::stringstream text;
  text << in.rdbuf();
  return parse_config(text.str(), path);
}

}  // namespace tierkv::daemon
