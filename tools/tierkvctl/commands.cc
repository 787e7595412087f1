#include "tierkvctl/commands.h"

#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "common/connect.h"
#include "common/format.h"
#include "common/json_writer.h"
#include "common/token_file.h"
#include "tierkv/client.h"

namespace tierkv::ctl {

namespace {

using tools::JsonWriter;
using tools::TextTable;

// The tiers in the order an operator reads them: fastest first.
constexpr std::array<proto::Tier, 4> kTierOrder = {proto::Tier::kGpu, proto::Tier::kHost,
                                                   proto::Tier::kNvme, proto::Tier::kRemote};

void print(const std::string& s) { std::fwrite(s.data(), 1, s.size(), stdout); }

void print_json(const JsonWriter& w) {
  print(w.str());
  print("\n");
}

Result<std::shared_ptr<Client>> connect(const GlobalOptions& g) {
  // Admin commands touch no chunk data: skip pre-faulting the host pool mapping.
  return tools::connect_daemon(g.socket_path, "tierkvctl", /*populate=*/false);
}

// Every tier in kTierOrder; one the daemon did not report is shown as disabled.
std::vector<proto::TierStats> all_tiers(const proto::StatsReply& st) {
  std::vector<proto::TierStats> out;
  for (const proto::Tier t : kTierOrder) {
    const auto it = std::find_if(st.tiers.begin(), st.tiers.end(),
                                 [t](const proto::TierStats& s) { return s.tier == t; });
    if (it != st.tiers.end()) {
      out.push_back(*it);
    } else {
      proto::TierStats off;
      off.tier = t;
      out.push_back(off);
    }
  }
  return out;
}

// `key`: num / den as a number, or null when den is 0.
void write_ratio(JsonWriter& w, std::string_view key, uint64_t num, uint64_t den) {
  w.key(key);
  if (den == 0) {
    w.null();
  } else {
    w.value(static_cast<double>(num) / static_cast<double>(den));
  }
}

// "2.41x" (logical / stored), or "-" when nothing is stored.
std::string ratio(uint64_t logical, uint64_t stored) {
  if (stored == 0) return "-";
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.2fx",
                static_cast<double>(logical) / static_cast<double>(stored));
  return buf;
}

std::string stage_name(const proto::CodecStageStats& s) {
  return std::string(s.name, strnlen(s.name, sizeof(s.name)));
}

std::string micros(double us) {
  char buf[32];
  if (us >= 1000)
    std::snprintf(buf, sizeof(buf), "%.1f ms", us / 1000);
  else
    std::snprintf(buf, sizeof(buf), "%.0f us", us);
  return buf;
}

// The codec figures (`codecs` in JSON): per tier logical vs stored bytes, the NVMe codec, its
// encode and decode stages, staging memory, fused representatives.
void write_codec_fields(JsonWriter& w, const proto::StatsReply& st) {
  w.key("codecs").begin_object();
  w.field("nvme_codec", st.nvme_codec);
  w.key("tiers").begin_array();
  for (const auto& t : st.tier_codecs) {
    w.begin_object()
        .field("tier", proto::tier_name(t.tier))
        .field("logical_bytes", t.logical_bytes)
        .field("stored_bytes", t.stored_bytes);
    write_ratio(w, "ratio", t.logical_bytes, t.stored_bytes);
    w.field("encoded_chunks", t.encoded_chunks).end_object();
  }
  w.end_array();
  w.key("stages").begin_array();
  for (const auto& s : st.codec_stages) {
    w.begin_object()
        .field("stage", stage_name(s))
        .field("workers", uint64_t{s.workers})
        .field("queue_depth", s.queue_depth)
        .field("max_queue_depth", s.max_queue_depth)
        .field("queue_capacity", s.queue_capacity)
        .field("batch_size", uint64_t{s.batch_size})
        .field("batches", s.batches)
        .field("items", s.items)
        .field("rejected", s.rejected)
        .field("last_batch_items", s.last_batch_items)
        .field("last_latency_us", s.last_latency_us)
        .field("mean_latency_us", s.mean_latency_us)
        .end_object();
  }
  w.end_array();
  const proto::CodecCounters& c = st.codec;
  w.field("encodes_in_flight", c.encodes_in_flight)
      .field("decodes_in_flight", c.decodes_in_flight)
      .field("encode_errors", c.encode_errors)
      .field("staging_capacity_bytes", c.staging_capacity_bytes)
      .field("staging_used_bytes", c.staging_used_bytes)
      .field("staged_reads_waiting", c.staged_reads_waiting)
      .field("encode_waits", c.encode_waits)
      .field("fused_representatives", c.fused_representatives)
      .field("fused_representative_bytes", c.fused_representative_bytes);
  w.end_object();
}

std::string render_codecs(const proto::StatsReply& st) {
  if (st.tier_codecs.empty()) return {};
  std::string out =
      "\ncodecs: nvme " + (st.nvme_codec.empty() ? std::string("off") : st.nvme_codec) +
      "; fused representatives " + tools::group_thousands(st.codec.fused_representatives) + "\n";
  TextTable tiers({"TIER", "LOGICAL", "STORED", "RATIO", "ENCODED CHUNKS"},
                  {false, true, true, true, true});
  for (const auto& t : st.tier_codecs) {
    tiers.add_row({std::string(proto::tier_name(t.tier)), tools::human_size(t.logical_bytes),
                   tools::human_size(t.stored_bytes), ratio(t.logical_bytes, t.stored_bytes),
                   tools::group_thousands(t.encoded_chunks)});
  }
  out += tiers.render(true, "  ");
  if (st.codec_stages.empty()) return out;
  TextTable stages({"STAGE", "WORKERS", "QUEUE", "MAX QUEUE", "BATCH", "LAST BATCH", "BATCHES",
                    "ITEMS", "LAST LATENCY", "MEAN LATENCY"},
                   {false, true, true, true, true, true, true, true, true, true});
  for (const auto& s : st.codec_stages) {
    char last_batch[32];
    std::snprintf(last_batch, sizeof(last_batch), "%.0f", s.last_batch_items);
    stages.add_row(
        {stage_name(s), std::to_string(s.workers),
         tools::group_thousands(s.queue_depth) + "/" + tools::group_thousands(s.queue_capacity),
         tools::group_thousands(s.max_queue_depth), std::to_string(s.batch_size), last_batch,
         tools::group_thousands(s.batches), tools::group_thousands(s.items),
         micros(s.last_latency_us), micros(s.mean_latency_us)});
  }
  out += stages.render(true, "  ");
  const proto::CodecCounters& c = st.codec;
  out += "  " + tools::group_thousands(c.encodes_in_flight) + " encodes and " +
         tools::group_thousands(c.decodes_in_flight) + " decodes in flight, " +
         tools::group_thousands(c.encode_errors) + " encode errors; staging " +
         tools::human_size(c.staging_used_bytes) + " of " +
         tools::human_size(c.staging_capacity_bytes) + " in use, " +
         tools::group_thousands(c.staged_reads_waiting) +
         " reads waiting for it; write-down "
         "waited " +
         tools::group_thousands(c.encode_waits) +
         " times for staging or the encode "
         "queue\n";
  return out;
}

void write_daemon_fields(JsonWriter& w, const std::string& socket, const proto::StatsReply& st) {
  w.field("socket", socket)
      .field("version", st.daemon_version)
      .field("pid", uint64_t{st.pid})
      .field("uptime_ms", st.uptime_ms)
      .field("sessions", uint64_t{st.sessions})
      .field("namespaces", uint64_t{st.namespaces})
      .field("read_leases", st.read_leases)
      .field("pending_writes", st.pending_writes)
      .field("requests", st.requests)
      .field("request_errors", st.request_errors);
}

// Finds a registered namespace by the id an operator typed.
Result<proto::NamespaceInfo> find_namespace(Client& client, const std::string& text) {
  auto id = tools::parse_namespace_id(text);
  if (!id.ok()) return id.status();
  auto list = client.list_namespaces();
  if (!list.ok()) return list.status();
  for (const auto& info : list->namespaces) {
    if (info.ns.id == *id) return info;
  }
  return Status::NotFound("namespace " + tools::namespace_hex(*id) +
                          " is not registered (tierkvctl ls lists the namespaces)");
}

// Co-scheduled prefill: totals, each tier's measured read cost, recent sessions.
void write_prefill_fields(JsonWriter& w, const proto::StatsReply& st) {
  const proto::PrefillStats& p = st.prefill;
  w.key("prefill")
      .begin_object()
      .field("sessions_started", p.sessions_started)
      .field("sessions_active", p.sessions_active)
      .field("sessions_met", p.sessions_met)
      .field("sessions_cancelled", p.sessions_cancelled)
      .field("chunks_handed_over", p.chunks_handed_over)
      .field("chunks_loaded", p.chunks_loaded)
      .field("chunks_computed", p.chunks_computed)
      .field("load_failures", p.load_failures)
      .field("wasted_loads", p.wasted_loads)
      .field("last_planned_meeting_point", uint64_t{p.last_planned_meeting_point})
      .field("last_chunks", uint64_t{p.last_chunks})
      .end_object();
  w.key("tier_bandwidth").begin_array();
  for (const proto::TierBandwidth& b : st.tier_bandwidth) {
    w.begin_object()
        .field("tier", proto::tier_name(b.tier))
        .field("resident", b.resident != 0)
        .field("read_GBps", b.read_GBps)
        .field("latency_us", b.latency_us)
        .field("samples", b.samples)
        .end_object();
  }
  w.end_array();
  w.key("recent_prefills").begin_array();
  for (const proto::PrefillRecord& r : st.recent_prefills) {
    w.begin_object()
        .field("session", r.session)
        .field("chunks", uint64_t{r.chunks})
        .field("handed_over", uint64_t{r.handed_over})
        .field("loaded", uint64_t{r.loaded})
        .field("computed", uint64_t{r.computed})
        .field("failed", uint64_t{r.failed})
        .field("planned_meeting_point", uint64_t{r.planned_meeting_point})
        .field("actual_meeting_point", uint64_t{r.actual_meeting_point})
        .field("met", r.met != 0)
        .field("predicted_compute_only_ms", r.predicted_compute_only_ms)
        .field("predicted_load_only_ms", r.predicted_load_only_ms)
        .field("predicted_bidir_ms", r.predicted_bidir_ms)
        .field("actual_ms", r.actual_ms)
        .field("saved_ms", r.saved_ms)
        .end_object();
  }
  w.end_array();
}

std::string fixed(double v, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.*f", decimals, v);
  return buf;
}

std::string render_prefill(const proto::StatsReply& st) {
  const proto::PrefillStats& p = st.prefill;
  std::string out = "\nprefill: " + tools::group_thousands(p.sessions_started) + " sessions (" +
                    tools::group_thousands(p.sessions_active) + " active, " +
                    tools::group_thousands(p.sessions_met) + " met, " +
                    tools::group_thousands(p.sessions_cancelled) + " cancelled); chunks " +
                    tools::group_thousands(p.chunks_handed_over) + " handed over, " +
                    tools::group_thousands(p.chunks_loaded) + " loaded, " +
                    tools::group_thousands(p.chunks_computed) + " computed, " +
                    tools::group_thousands(p.load_failures) + " load failures, " +
                    tools::group_thousands(p.wasted_loads) + " wasted loads\n";
  if (p.sessions_started > 0) {
    out += "last plan: meet at chunk " + std::to_string(p.last_planned_meeting_point) + " of " +
           std::to_string(p.last_chunks) + "\n";
  }
  if (!st.tier_bandwidth.empty()) {
    TextTable reads({"READS", "GB/s", "LATENCY us", "SAMPLES"}, {false, true, true, true});
    for (const proto::TierBandwidth& b : st.tier_bandwidth) {
      if (b.resident != 0) {
        reads.add_row({std::string(proto::tier_name(b.tier)), "resident", "-",
                       tools::group_thousands(b.samples)});
        continue;
      }
      // Until a tier is read, its figures are the configured priors.
      reads.add_row({std::string(proto::tier_name(b.tier)),
                     fixed(b.read_GBps, 2) + (b.samples == 0 ? " (prior)" : ""),
                     fixed(b.latency_us, 0), tools::group_thousands(b.samples)});
    }
    out += "\n" + reads.render();
  }
  if (!st.recent_prefills.empty()) {
    TextTable recent({"SESSION", "CHUNKS", "MEET PLANNED", "MEET ACTUAL", "LOADED", "COMPUTED",
                      "FAILED", "PREDICTED ms", "ACTUAL ms", "SAVED ms"},
                     {true, true, true, true, true, true, true, true, true, true});
    for (const proto::PrefillRecord& r : st.recent_prefills) {
      recent.add_row({std::to_string(r.session), std::to_string(r.chunks),
                      std::to_string(r.planned_meeting_point),
                      r.met != 0 ? std::to_string(r.actual_meeting_point) : "cancelled",
                      std::to_string(r.loaded), std::to_string(r.computed),
                      std::to_string(r.failed), fixed(r.predicted_bidir_ms, 1),
                      fixed(r.actual_ms, 1), r.met != 0 ? fixed(r.saved_ms, 1) : "-"});
    }
    out += "\n" + recent.render();
  }
  return out;
}

}  // namespace

Status run_status(const GlobalOptions& g) {
  auto client = connect(g);
  if (!client.ok()) return client.status();
  auto st = (*client)->stats();
  if (!st.ok()) return st.status();

  if (g.json) {
    JsonWriter w;
    w.begin_object();
    write_daemon_fields(w, g.socket_path, *st);
    w.end_object();
    print_json(w);
    return Status::Ok();
  }
  TextTable t({"", ""});
  t.add_row({"socket", g.socket_path});
  t.add_row({"version", st->daemon_version});
  t.add_row({"pid", std::to_string(st->pid)});
  t.add_row({"uptime", tools::human_duration_ms(st->uptime_ms)});
  // Our own connection is one of them; say so, or an idle daemon looks busy.
  t.add_row({"sessions", std::to_string(st->sessions) + " (this one included)"});
  t.add_row({"namespaces", std::to_string(st->namespaces)});
  t.add_row({"read leases", tools::group_thousands(st->read_leases)});
  t.add_row({"pending writes", tools::group_thousands(st->pending_writes)});
  t.add_row({"requests", tools::group_thousands(st->requests) + " (" +
                             tools::group_thousands(st->request_errors) + " failed)"});
  print("tierkvd is running\n" + t.render(/*with_header=*/false, "  "));
  return Status::Ok();
}

namespace {

// The GPU tier: on which device, or why it is off; promotions and leases.
std::string render_gpu(const proto::StatsReply& st) {
  if (st.gpu_status.empty()) return "";  // a daemon that predates the GPU tier
  const proto::GpuStats& g = st.gpu;
  std::string out = "\ngpu: " + st.gpu_status + "\n";
  if (g.device < 0) return out;
  out += "     " + tools::group_thousands(g.promotions) + " chunks promoted from host RAM (" +
         tools::group_thousands(g.promotions_in_flight) + " copying, " +
         tools::group_thousands(g.promotions_queued) + " queued, " +
         tools::group_thousands(g.promotion_failures) + " failed); " +
         tools::group_thousands(g.leases) + " GPU leases held by " +
         tools::group_thousands(g.attached_clients) + " attached clients; " +
         tools::group_thousands(g.dropped_with_host) + " copies dropped with their host chunk\n";
  return out;
}

}  // namespace

Status run_stats(const GlobalOptions& g) {
  auto client = connect(g);
  if (!client.ok()) return client.status();
  auto st = (*client)->stats();
  if (!st.ok()) return st.status();
  const auto tiers = all_tiers(*st);

  if (g.json) {
    JsonWriter w;
    w.begin_object();
    write_daemon_fields(w, g.socket_path, *st);
    w.key("tiers").begin_array();
    for (const auto& t : tiers) {
      w.begin_object()
          .field("tier", proto::tier_name(t.tier))
          .field("enabled", t.enabled != 0)
          .field("capacity_bytes", t.capacity_bytes)
          .field("used_bytes", t.used_bytes)
          .field("chunks", t.chunks)
          .field("hits", t.hits)
          .field("misses", t.misses);
      write_ratio(w, "hit_ratio", t.hits, t.hits + t.misses);
      w.field("evictions", t.evictions)
          .field("bytes_in", t.bytes_in)
          .field("bytes_out", t.bytes_out)
          .end_object();
    }
    w.end_array();
    const proto::NvmeStats& n = st->nvme;
    w.key("nvme")
        .begin_object()
        .field("admitting", n.admitting != 0)
        .field("mode", n.write_through ? "write-through" : "write-back")
        .field("dirty_chunks", n.dirty_chunks)
        .field("writes_in_flight", n.writes_in_flight)
        .field("reads_in_flight", n.reads_in_flight)
        .field("read_errors", n.read_errors)
        .field("write_errors", n.write_errors)
        .field("checksum_failures", n.checksum_failures)
        .field("dropped_unwritten", n.dropped_unwritten)
        .field("recovered_chunks", n.recovered_chunks)
        .field("recovery_ms", n.recovery_ms)
        .field("logical_bytes", n.logical_bytes)
        .field("stored_bytes", n.stored_bytes);
    const proto::NvmeIoStats& io = st->nvme_io;
    w.key("io")
        .begin_object()
        .field("submits", io.submits)
        .field("submit_ns", io.submit_ns)
        .field("busy_ns", io.busy_ns)
        .field("depth_ns", io.depth_ns)
        .field("polls", io.polls)
        .field("poll_ns", io.poll_ns)
        .field("reads_verified", io.reads_verified)
        .field("verified_inline", io.verified_inline)
        .field("inline_hash_ns", io.inline_hash_ns)
        .field("worker_hash_ns", io.worker_hash_ns)
        .field("verify_threads", uint64_t{io.verify_threads})
        .field("verifies_in_flight", uint64_t{io.verifies_in_flight})
        .end_object();
    w.end_object();
    write_codec_fields(w, *st);
    const proto::GpuStats& g = st->gpu;
    w.key("gpu").begin_object()
        .field("status", st->gpu_status)
        .field("device", static_cast<int64_t>(g.device))
        .field("promotions", g.promotions)
        .field("promotions_in_flight", g.promotions_in_flight)
        .field("promotions_queued", g.promotions_queued)
        .field("promotion_failures", g.promotion_failures)
        .field("leases", g.leases)
        .field("attached_clients", g.attached_clients)
        .field("dropped_with_host", g.dropped_with_host)
        .end_object();
    write_prefill_fields(w, *st);
    w.end_object();
    print_json(w);
    return Status::Ok();
  }

  std::string out = "tierkvd " + st->daemon_version + ", pid " + std::to_string(st->pid) + ", up " +
                    tools::human_duration_ms(st->uptime_ms) + ": " + std::to_string(st->sessions) +
                    " sessions, " + std::to_string(st->namespaces) + " namespaces, " +
                    tools::group_thousands(st->read_leases) + " read leases, " +
                    tools::group_thousands(st->pending_writes) + " pending writes\n\n";
  TextTable table({"TIER", "CAPACITY", "USED", "USED%", "CHUNKS", "HITS", "MISSES", "HIT RATIO",
                   "EVICTIONS", "IN", "OUT"},
                  {false, true, true, true, true, true, true, true, true, true, true});
  for (const auto& t : tiers) {
    const std::string name(proto::tier_name(t.tier));
    if (t.enabled == 0) {
      table.add_row({name, "off"});
      continue;
    }
    table.add_row({name, tools::human_size(t.capacity_bytes), tools::human_size(t.used_bytes),
                   tools::percent(t.used_bytes, t.capacity_bytes), tools::group_thousands(t.chunks),
                   tools::group_thousands(t.hits), tools::group_thousands(t.misses),
                   tools::percent(t.hits, t.hits + t.misses), tools::group_thousands(t.evictions),
                   tools::human_size(t.bytes_in), tools::human_size(t.bytes_out)});
  }
  out += table.render();
  const bool nvme_on = std::any_of(tiers.begin(), tiers.end(), [](const proto::TierStats& t) {
    return t.tier == proto::Tier::kNvme && t.enabled != 0;
  });
  if (nvme_on) {
    const proto::NvmeStats& n = st->nvme;
    out += "\nnvme: " + std::string(n.write_through ? "write-through" : "write-back") + ", " +
           (n.admitting ? std::string("admitting") : std::string("NOT ADMITTING (disk full)")) +
           "; " + tools::group_thousands(n.dirty_chunks) + " host chunks not yet written down, " +
           tools::group_thousands(n.writes_in_flight) + " writes and " +
           tools::group_thousands(n.reads_in_flight) + " reads in flight\n" +
           "      errors: " + tools::group_thousands(n.read_errors) + " read, " +
           tools::group_thousands(n.write_errors) + " write, " +
           tools::group_thousands(n.checksum_failures) + " checksum failures (never served); " +
           tools::group_thousands(n.dropped_unwritten) + " chunks evicted before written down\n" +
           "      recovered " + tools::group_thousands(n.recovered_chunks) + " chunks in " +
           std::to_string(n.recovery_ms) + " ms at start-up; stores " +
           tools::human_size(n.logical_bytes) + " of chunks in " +
           tools::human_size(n.stored_bytes) + " (" + ratio(n.logical_bytes, n.stored_bytes) +
           ")\n";
    const proto::NvmeIoStats& io = st->nvme_io;
    const auto per = [](uint64_t num, uint64_t den) {
      return den == 0 ? 0.0 : static_cast<double>(num) / static_cast<double>(den);
    };
    char line[256];
    std::snprintf(line, sizeof(line),
                  "      io: queue depth %.1f on average while busy, busy %s of the time up; "
                  "%s checksums checked (%s on the server thread, %u verify threads)\n",
                  per(io.depth_ns, io.busy_ns),
                  tools::percent(io.busy_ns / 1000000, st->uptime_ms).c_str(),
                  tools::group_thousands(io.reads_verified).c_str(),
                  tools::group_thousands(io.verified_inline).c_str(), io.verify_threads);
    out += line;
  }
  out += render_codecs(*st);
  out += render_gpu(*st);
  out += render_prefill(*st);
  print(out);
  return Status::Ok();
}

namespace {

// A progress line on stderr: redrawn in place on a terminal, a line per tenth otherwise.
class ProgressBar {
 public:
  explicit ProgressBar(std::string what) : what_(std::move(what)), tty_(::isatty(2) != 0) {}
  void update(uint64_t done, uint64_t total, const std::string& detail) {
    const int pct = total == 0 ? 100 : static_cast<int>(done * 100 / total);
    if (!tty_) {
      if (pct / 10 == last_decile_) return;
      last_decile_ = pct / 10;
      std::fprintf(stderr, "%s: %3d%% %s\n", what_.c_str(), pct, detail.c_str());
      return;
    }
    constexpr int kWidth = 30;
    const int filled = pct * kWidth / 100;
    std::fprintf(stderr, "\r%s [%s%s] %3d%% %s\x1b[K", what_.c_str(),
                 std::string(static_cast<size_t>(filled), '#').c_str(),
                 std::string(static_cast<size_t>(kWidth - filled), '.').c_str(), pct,
                 detail.c_str());
  }
  void finish() {
    if (tty_) std::fprintf(stderr, "\n");
  }

 private:
  std::string what_;
  bool tty_;
  int last_decile_ = -1;
};

}  // namespace

Status run_flush(const GlobalOptions& g) {
  auto client = connect(g);
  if (!client.ok()) return client.status();
  auto first = (*client)->flush();
  if (!first.ok()) return first.status();
  const uint64_t start_written = first->written_total;
  const uint64_t total = first->dirty_chunks + first->writes_in_flight;
  ProgressBar bar("flush");
  proto::FlushReply now = *first;
  int stalled_polls = 0;
  uint64_t last_written = now.written_total;
  // Until nothing is left to write, or nothing moves for 10 s (disk full, failing writes).
  while ((now.dirty_chunks > 0 || now.writes_in_flight > 0) && stalled_polls < 100) {
    if (!g.json) {
      bar.update(now.written_total - start_written, total,
                 tools::group_thousands(now.dirty_chunks) + " chunks left");
    }
    ::usleep(100000);
    auto r = (*client)->flush();
    if (!r.ok()) return r.status();
    now = *r;
    stalled_polls = now.written_total == last_written ? stalled_polls + 1 : 0;
    last_written = now.written_total;
  }
  const uint64_t written = now.written_total - start_written;
  const bool complete = now.dirty_chunks == 0 && now.writes_in_flight == 0;
  if (g.json) {
    JsonWriter w;
    w.begin_object()
        .field("written", written)
        .field("dirty_chunks", now.dirty_chunks)
        .field("complete", complete)
        .end_object();
    print_json(w);
  } else {
    bar.update(written, total, "");
    bar.finish();
    print("flushed: " + tools::group_thousands(written) + " chunks written down" +
          (complete ? "; every host chunk bound for NVMe is there\n"
                    : "; " + tools::group_thousands(now.dirty_chunks) +
                          " could not be written (see tierkvctl stats and the daemon log)\n"));
  }
  return complete ? Status::Ok()
                  : Status::Unavailable("flush stopped with " +
                                        std::to_string(now.dirty_chunks) + " chunks unwritten");
}

Status run_verify(const GlobalOptions& g) {
  auto client = connect(g);
  if (!client.ok()) return client.status();
  ProgressBar bar("verify");
  proto::VerifyReply total;
  uint64_t cursor = 0;
  for (;;) {
    auto r = (*client)->verify(cursor, 256);
    if (!r.ok()) return r.status();
    total.checked += r->checked;
    total.corrupt += r->corrupt;
    total.unreadable += r->unreadable;
    total.cursor_end = r->cursor_end;
    cursor = r->next_cursor;
    if (!g.json) {
      bar.update(cursor, r->cursor_end,
                 tools::group_thousands(total.checked) + " chunks checked, " +
                     tools::group_thousands(total.corrupt + total.unreadable) + " bad");
    }
    if (r->done) break;
  }
  if (g.json) {
    JsonWriter w;
    w.begin_object()
        .field("checked", total.checked)
        .field("corrupt", total.corrupt)
        .field("unreadable", total.unreadable)
        .end_object();
    print_json(w);
  } else {
    bar.finish();
    print("verified " + tools::group_thousands(total.checked) + " NVMe chunks: " +
          tools::group_thousands(total.checked - total.corrupt - total.unreadable) + " good, " +
          tools::group_thousands(total.corrupt) + " corrupt, " +
          tools::group_thousands(total.unreadable) + " unreadable" +
          (total.corrupt + total.unreadable ? " (removed: they read as misses from now on)\n"
                                            : "\n"));
  }
  return Status::Ok();
}

Status run_ls(const GlobalOptions& g) {
  auto client = connect(g);
  if (!client.ok()) return client.status();
  auto list = (*client)->list_namespaces();
  if (!list.ok()) return list.status();
  auto namespaces = list->namespaces;
  // Biggest first: the question is usually "who is using the cache".
  std::stable_sort(namespaces.begin(), namespaces.end(),
                   [](const proto::NamespaceInfo& a, const proto::NamespaceInfo& b) {
                     return a.bytes > b.bytes;
                   });

  if (g.json) {
    JsonWriter w;
    w.begin_object().key("namespaces").begin_array();
    for (const auto& info : namespaces) {
      const Layout& l = info.ns.layout;
      w.begin_object()
          .field("id", tools::namespace_hex(info.ns.id))
          .field("tenant", info.ns.tenant)
          .field("salt", info.ns.salt)
          .field("layout", l.to_string())
          .field("num_layers", uint64_t{l.num_layers})
          .field("num_kv_heads", uint64_t{l.num_kv_heads})
          .field("head_dim", uint64_t{l.head_dim})
          .field("dtype", dtype_name(l.dtype))
          .field("chunk_tokens", uint64_t{l.chunk_tokens})
          .field("chunk_bytes", info.ns.chunk_bytes())
          .field("chunks", info.chunks)
          .field("bytes", info.bytes)
          .end_object();
    }
    w.end_array().end_object();
    print_json(w);
    return Status::Ok();
  }

  if (namespaces.empty()) {
    print("no namespaces registered\n");
    return Status::Ok();
  }
  TextTable table({"NAMESPACE", "TENANT", "SALT", "LAYOUT", "CHUNK", "CHUNKS", "BYTES"},
                  {false, false, false, false, true, true, true});
  for (const auto& info : namespaces) {
    table.add_row({tools::namespace_hex(info.ns.id), tools::printable(info.ns.tenant),
                   tools::printable(info.ns.salt), info.ns.layout.to_string(),
                   tools::human_size(info.ns.chunk_bytes()), tools::group_thousands(info.chunks),
                   tools::human_size(info.bytes)});
  }
  print(table.render());
  return Status::Ok();
}

Status run_inspect(const GlobalOptions& g, const InspectOptions& o) {
  // Read the file first: a typo in it should not need a daemon to be reported.
  auto tokens = tools::read_token_file(o.tokens_file);
  if (!tokens.ok()) return tokens.status();
  auto client = connect(g);
  if (!client.ok()) return client.status();
  auto info = find_namespace(**client, o.ns);
  if (!info.ok()) return info.status();
  const Namespace& ns = info->ns;

  const std::vector<ChunkKey> keys = Client::keys(ns, *tokens);
  auto prefix = (*client)->lookup(ns.id, keys);
  if (!prefix.ok()) return prefix.status();
  const size_t cached = prefix->tiers.size();

  // Chunks past the first gap are unreachable by a lookup but may still be stored (their parent
  // was evicted first). Show them: it explains space used by a prompt that no longer hits. Probe
  // in windows so no request carries more than a few keys, whatever the prompt's length.
  constexpr size_t kProbeWindow = 64;
  std::vector<proto::Tier> tier_of(keys.size(), proto::Tier::kNone);
  std::copy(prefix->tiers.begin(), prefix->tiers.end(), tier_of.begin());
  for (size_t i = cached + 1; i < keys.size();) {
    const size_t n = std::min(kProbeWindow, keys.size() - i);
    auto run = (*client)->lookup(ns.id, std::span<const ChunkKey>(keys).subspan(i, n));
    if (!run.ok()) return run.status();
    std::copy(run->tiers.begin(), run->tiers.end(), tier_of.begin() + static_cast<ptrdiff_t>(i));
    i += std::max<size_t>(run->tiers.size(), 1);
  }

  const uint32_t ct = ns.layout.chunk_tokens;
  if (g.json) {
    JsonWriter w;
    w.begin_object()
        .field("ns", tools::namespace_hex(ns.id))
        .field("tenant", ns.tenant)
        .field("layout", ns.layout.to_string())
        .field("chunk_tokens", uint64_t{ct})
        .field("tokens", uint64_t{tokens->size()})
        .field("total_chunks", uint64_t{keys.size()})
        .field("cached_chunks", uint64_t{cached})
        .field("cached_tokens", uint64_t{cached} * ct);
    w.key("chunks").begin_array();
    for (size_t i = 0; i < keys.size(); ++i) {
      w.begin_object()
          .field("index", uint64_t{i})
          .field("key", keys[i].to_hex())
          .field("tier", proto::tier_name(tier_of[i]))
          .field("in_cached_prefix", i < cached)
          .end_object();
    }
    w.end_array().end_object();
    print_json(w);
    return Status::Ok();
  }

  std::string out = "namespace " + tools::namespace_hex(ns.id) + " (tenant " +
                    tools::printable(ns.tenant) + ", " + ns.layout.to_string() + ")\n";
  const size_t partial = tokens->size() - keys.size() * ct;
  out += "prompt:    " + tools::group_thousands(tokens->size()) + " tokens, " +
         std::to_string(keys.size()) + " full chunks";
  if (partial > 0) {
    out += " + " + std::to_string(partial) + " tokens in a trailing partial chunk (never cached)";
  }
  out += "\ncached:    " + std::to_string(cached) + " of " + std::to_string(keys.size()) +
         " leading chunks (" + tools::group_thousands(uint64_t{cached} * ct) + " tokens, " +
         tools::percent(cached, keys.size()) + ")\n";
  size_t stranded = 0;
  for (size_t i = cached; i < keys.size(); ++i) stranded += tier_of[i] != proto::Tier::kNone;
  if (stranded > 0) {
    out += "stranded:  " + std::to_string(stranded) +
           " chunks after the first missing one are stored but cannot hit\n";
  }
  if (!keys.empty()) {
    out += "\n";
    TextTable table({"CHUNK", "TOKENS", "KEY", "TIER"}, {true, false, false, false});
    for (size_t i = 0; i < keys.size(); ++i) {
      std::string tier =
          tier_of[i] == proto::Tier::kNone ? "-" : std::string(proto::tier_name(tier_of[i]));
      if (i >= cached && tier_of[i] != proto::Tier::kNone) tier += " (after a gap)";
      table.add_row({std::to_string(i),
                     std::to_string(uint64_t{i} * ct) + "-" + std::to_string((i + 1) * ct - 1),
                     keys[i].to_hex(), tier});
    }
    out += table.render();
  }
  print(out);
  return Status::Ok();
}

Status run_evict(const GlobalOptions& g, const EvictOptions& o) {
  std::vector<TokenId> tokens;
  if (!o.tokens_file.empty()) {
    auto t = tools::read_token_file(o.tokens_file);
    if (!t.ok()) return t.status();
    tokens = std::move(*t);
  }
  auto id = tools::parse_namespace_id(o.ns);
  if (!id.ok()) return id.status();
  auto client = connect(g);
  if (!client.ok()) return client.status();
  Client& c = **client;

  Result<uint64_t> removed = uint64_t{0};
  size_t prompt_chunks = 0;
  if (o.tokens_file.empty()) {
    removed = o.remove ? c.remove_namespace(*id) : c.evict_namespace(*id);
  } else {
    // The chunk keys depend on the namespace's chunk_tokens, which only the daemon knows.
    auto info = find_namespace(c, o.ns);
    if (!info.ok()) return info.status();
    const std::vector<ChunkKey> keys = Client::keys(info->ns, tokens);
    prompt_chunks = keys.size();
    removed = o.remove ? c.remove(*id, keys) : c.evict(*id, keys);
  }
  if (!removed.ok()) return removed.status();

  if (g.json) {
    JsonWriter w;
    w.begin_object()
        .field("ns", tools::namespace_hex(*id))
        .field("action", o.remove ? "delete" : "evict")
        .field("scope", o.tokens_file.empty() ? "namespace" : "prompt");
    if (!o.tokens_file.empty()) w.field("prompt_chunks", uint64_t{prompt_chunks});
    w.field("removed", *removed).end_object();
    print_json(w);
    return Status::Ok();
  }
  std::string out = o.remove ? "deleted " : "evicted ";
  out += tools::group_thousands(*removed) + (*removed == 1 ? " chunk" : " chunks");
  if (o.tokens_file.empty()) {
    out += " of namespace " + tools::namespace_hex(*id);
  } else {
    out += " of the prompt's " + std::to_string(prompt_chunks) + " in namespace " +
           tools::namespace_hex(*id);
  }
  out += o.remove ? " from every tier\n" : " from the memory tiers\n";
  print(out);
  return Status::Ok();
}

}  // namespace tierkv::ctl
