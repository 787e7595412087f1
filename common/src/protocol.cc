#include "tierkv/protocol.h"

#include <cstring>

namespace tierkv::proto {

using wire::ByteReader;
using wire::ByteWriter;

std::string_view op_name(Op op) {
  switch (op) {
    case Op::kHello: return "hello";
    case Op::kRegisterLayout: return "register_layout";
    case Op::kLookup: return "lookup";
    case Op::kPutBegin: return "put_begin";
    case Op::kPutCommit: return "put_commit";
    case Op::kPutAbort: return "put_abort";
    case Op::kLoad: return "load";
    case Op::kRelease: return "release";
    case Op::kEvict: return "evict";
    case Op::kDelete: return "delete";
    case Op::kStats: return "stats";
    case Op::kListNamespaces: return "list_namespaces";
    case Op::kPrefetch: return "prefetch";
    case Op::kFlush: return "flush";
    case Op::kVerify: return "verify";
    case Op::kPrefillBegin: return "prefill_begin";
    case Op::kPrefillProfile: return "prefill_profile";
    case Op::kPrefillComputed: return "prefill_computed";
    case Op::kPrefillPoll: return "prefill_poll";
    case Op::kPrefillEnd: return "prefill_end";
    case Op::kGpuAttach: return "gpu_attach";
    case Op::kGpuLoad: return "gpu_load";
    case Op::kGpuRelease: return "gpu_release";
  }
  return "unknown";
}

bool is_known_op(uint16_t op) { return op_name(static_cast<Op>(op)) != "unknown"; }

bool is_prefill_op(uint16_t op) {
  return op >= static_cast<uint16_t>(Op::kPrefillBegin) &&
         op <= static_cast<uint16_t>(Op::kPrefillEnd);
}

std::string_view tier_name(Tier tier) {
  switch (tier) {
    case Tier::kNone: return "none";
    case Tier::kGpu: return "gpu";
    case Tier::kHost: return "host";
    case Tier::kNvme: return "nvme";
    case Tier::kRemote: return "remote";
  }
  return "unknown";
}

Result<FrameHeader> parse_header(std::span<const uint8_t, kHeaderBytes> bytes) {
  FrameHeader h;
  std::memcpy(&h, bytes.data(), sizeof(h));
  if (h.payload_bytes > kMaxPayloadBytes) {
    return Status::ProtocolError("frame payload length " + std::to_string(h.payload_bytes) +
                                 " exceeds the limit of " + std::to_string(kMaxPayloadBytes));
  }
  if (h.reserved != 0) {
    return Status::ProtocolError("frame header: reserved field is " + std::to_string(h.reserved) +
                                 ", must be 0");
  }
  return h;
}

void begin_frame(std::vector<uint8_t>& buf, Op op, uint32_t request_id, StatusCode status) {
  FrameHeader h;
  h.op = static_cast<uint16_t>(op);
  h.status = static_cast<uint16_t>(status);
  h.request_id = request_id;
  buf.resize(kHeaderBytes);
  std::memcpy(buf.data(), &h, sizeof(h));
}

Status end_frame(std::vector<uint8_t>& buf) {
  const size_t payload = buf.size() - kHeaderBytes;
  if (payload > kMaxPayloadBytes) {
    return Status::ResourceExhausted("reply payload of " + std::to_string(payload) +
                                     " bytes exceeds the frame limit of " +
                                     std::to_string(kMaxPayloadBytes));
  }
  const auto len = static_cast<uint32_t>(payload);
  std::memcpy(buf.data(), &len, sizeof(len));
  return Status::Ok();
}

void error_frame(std::vector<uint8_t>& buf, uint16_t op, uint32_t request_id,
                 const Status& status) {
  begin_frame(buf, static_cast<Op>(op), request_id, status.code());
  ByteWriter w(buf);
  std::string_view msg = status.message();
  if (msg.size() > 4096) msg = msg.substr(0, 4096);
  w.put_string(msg);
  (void)end_frame(buf);  // a 4 KiB message always fits
}

Status decode_error(StatusCode code, std::span<const uint8_t> payload) {
  ByteReader r(payload);
  std::string msg;
  if (!r.get_string("message", msg, 1u << 20).ok()) msg = "(daemon sent no readable message)";
  return Status(code, std::move(msg));
}

// --- layout helpers ------------------------------------------------------------------------------
namespace {
void put_layout(ByteWriter& w, const Layout& l) {
  w.put(l.num_layers);
  w.put(l.num_kv_heads);
  w.put(l.head_dim);
  w.put(static_cast<uint8_t>(l.dtype));
  w.put(l.chunk_tokens);
}
Status get_layout(ByteReader& r, Layout& l) {
  uint8_t dtype = 0;
  TIERKV_RETURN_IF_ERROR(r.get("layout.num_layers", l.num_layers));
  TIERKV_RETURN_IF_ERROR(r.get("layout.num_kv_heads", l.num_kv_heads));
  TIERKV_RETURN_IF_ERROR(r.get("layout.head_dim", l.head_dim));
  TIERKV_RETURN_IF_ERROR(r.get("layout.dtype", dtype));
  TIERKV_RETURN_IF_ERROR(r.get("layout.chunk_tokens", l.chunk_tokens));
  l.dtype = static_cast<DType>(dtype);
  if (dtype_bytes(l.dtype) == 0) {
    return Status::InvalidArgument("layout.dtype = " + std::to_string(dtype) +
                                   " is not a known dtype");
  }
  return Status::Ok();
}
}  // namespace

// --- encoders ------------------------------------------------------------------------------------
void encode(ByteWriter& w, const HelloRequest& m) {
  w.put(m.protocol_version);
  w.put_string(m.client_name);
}
void encode(ByteWriter& w, const HelloReply& m) {
  w.put(m.protocol_version);
  w.put_string(m.daemon_version);
  w.put(m.host_region_bytes);
  w.put(m.default_chunk_tokens);
}
void encode(ByteWriter& w, const RegisterLayoutRequest& m) {
  put_layout(w, m.layout);
  w.put_string(m.tenant);
  w.put_string(m.salt);
}
void encode(ByteWriter& w, const RegisterLayoutReply& m) {
  w.put(m.ns);
  put_layout(w, m.layout);
}
void encode(ByteWriter& w, const KeysRequest& m) { encode(w, KeysRequestView{m.ns, m.keys}); }
void encode(ByteWriter& w, const KeysRequestView& m) {
  w.put(m.ns);
  w.put_array(m.keys);
}
void encode(ByteWriter& w, const LookupReply& m) { w.put_array(std::span<const Tier>(m.tiers)); }
void encode(ByteWriter& w, const LoadReply& m) { w.put_array(std::span<const SlotRef>(m.slots)); }
void encode(ByteWriter& w, const PutBeginRequest& m) {
  w.put(m.ns);
  w.put(m.parent);
  w.put(m.chunk_bytes);
  w.put_array(std::span<const ChunkKey>(m.keys));
}
void encode(ByteWriter& w, const PutBeginReply& m) {
  w.put_array(std::span<const PutSlot>(m.slots));
}
void encode(ByteWriter& w, const SlotsRequest& m) { w.put_array(std::span<const uint32_t>(m.slots)); }
void encode(ByteWriter& w, const CountReply& m) { w.put(m.count); }
void encode(ByteWriter& w, const DropRequest& m) {
  w.put(m.ns);
  w.put(static_cast<uint8_t>(m.scope));
  w.put_array(std::span<const ChunkKey>(m.keys));
}
void encode(ByteWriter& w, const StatsReply& m) {
  w.put_string(m.daemon_version);
  w.put(m.pid);
  w.put(m.uptime_ms);
  w.put(m.sessions);
  w.put(m.namespaces);
  w.put(m.read_leases);
  w.put(m.pending_writes);
  w.put(m.requests);
  w.put(m.request_errors);
  w.put_array(std::span<const TierStats>(m.tiers));
  w.put(m.nvme);
  w.put(m.prefill);
  w.put_array(std::span<const TierBandwidth>(m.tier_bandwidth));
  w.put_array(std::span<const PrefillRecord>(m.recent_prefills));
  w.put_array(std::span<const TierCodecStats>(m.tier_codecs));
  w.put_string(m.nvme_codec);
  w.put_array(std::span<const CodecStageStats>(m.codec_stages));
  w.put(m.codec);
  w.put(m.gpu);
  w.put_string(m.gpu_status);
  w.put(m.nvme_io);
}
void encode(ByteWriter& w, const ListNamespacesReply& m) {
  w.put(static_cast<uint32_t>(m.namespaces.size()));
  for (const NamespaceInfo& n : m.namespaces) {
    w.put(n.ns.id);
    put_layout(w, n.ns.layout);
    w.put_string(n.ns.tenant);
    w.put_string(n.ns.salt);
    w.put(n.chunks);
    w.put(n.bytes);
  }
}

void encode(ByteWriter& w, const PrefetchReply& m) { w.put(m); }
void encode(ByteWriter& w, const FlushReply& m) { w.put(m); }
void encode(ByteWriter& w, const VerifyRequest& m) {
  w.put(m.cursor);
  w.put(m.max_chunks);
}
void encode(ByteWriter& w, const VerifyReply& m) {
  w.put(m.next_cursor);
  w.put(m.cursor_end);
  w.put(m.checked);
  w.put(m.corrupt);
  w.put(m.unreadable);
  w.put(m.done);
}

void encode(ByteWriter& w, const GpuAttachReply& m) { w.put(m); }

// --- decoders ------------------------------------------------------------------------------------
Status decode(ByteReader& r, HelloRequest& m) {
  TIERKV_RETURN_IF_ERROR(r.get("protocol_version", m.protocol_version));
  TIERKV_RETURN_IF_ERROR(r.get_string("client_name", m.client_name, kMaxNameBytes));
  return r.expect_end("hello");
}
Status decode(ByteReader& r, HelloReply& m) {
  TIERKV_RETURN_IF_ERROR(r.get("protocol_version", m.protocol_version));
  TIERKV_RETURN_IF_ERROR(r.get_string("daemon_version", m.daemon_version, kMaxNameBytes));
  TIERKV_RETURN_IF_ERROR(r.get("host_region_bytes", m.host_region_bytes));
  TIERKV_RETURN_IF_ERROR(r.get("default_chunk_tokens", m.default_chunk_tokens));
  return r.expect_end("hello reply");
}
Status decode(ByteReader& r, RegisterLayoutRequest& m) {
  TIERKV_RETURN_IF_ERROR(get_layout(r, m.layout));
  TIERKV_RETURN_IF_ERROR(r.get_string("tenant", m.tenant, kMaxNameBytes));
  TIERKV_RETURN_IF_ERROR(r.get_string("salt", m.salt, kMaxNameBytes));
  return r.expect_end("register_layout");
}
Status decode(ByteReader& r, RegisterLayoutReply& m) {
  TIERKV_RETURN_IF_ERROR(r.get("ns", m.ns));
  TIERKV_RETURN_IF_ERROR(get_layout(r, m.layout));
  return r.expect_end("register_layout reply");
}
Status decode(ByteReader& r, KeysRequest& m) {
  TIERKV_RETURN_IF_ERROR(r.get("ns", m.ns));
  TIERKV_RETURN_IF_ERROR(r.get_array("keys", m.keys, kMaxChunksPerRequest));
  return r.expect_end("keys request");
}
Status decode(ByteReader& r, LookupReply& m) {
  TIERKV_RETURN_IF_ERROR(r.get_array("tiers", m.tiers, kMaxChunksPerRequest));
  return r.expect_end("lookup reply");
}
Status decode(ByteReader& r, LoadReply& m) {
  TIERKV_RETURN_IF_ERROR(r.get_array("slots", m.slots, kMaxChunksPerRequest));
  return r.expect_end("load reply");
}
Status decode(ByteReader& r, PutBeginRequest& m) {
  TIERKV_RETURN_IF_ERROR(r.get("ns", m.ns));
  TIERKV_RETURN_IF_ERROR(r.get("parent", m.parent));
  TIERKV_RETURN_IF_ERROR(r.get("chunk_bytes", m.chunk_bytes));
  TIERKV_RETURN_IF_ERROR(r.get_array("keys", m.keys, kMaxChunksPerRequest));
  return r.expect_end("put_begin");
}
Status decode(ByteReader& r, PutBeginReply& m) {
  TIERKV_RETURN_IF_ERROR(r.get_array("slots", m.slots, kMaxChunksPerRequest));
  return r.expect_end("put_begin reply");
}
Status decode(ByteReader& r, SlotsRequest& m) {
  TIERKV_RETURN_IF_ERROR(r.get_array("slots", m.slots, kMaxChunksPerRequest));
  return r.expect_end("slots request");
}
Status decode(ByteReader& r, CountReply& m) {
  TIERKV_RETURN_IF_ERROR(r.get("count", m.count));
  return r.expect_end("count reply");
}
Status decode(ByteReader& r, DropRequest& m) {
  uint8_t scope = 0;
  TIERKV_RETURN_IF_ERROR(r.get("ns", m.ns));
  TIERKV_RETURN_IF_ERROR(r.get("scope", scope));
  if (scope > static_cast<uint8_t>(Scope::kKeys)) {
    return Status::InvalidArgument("scope = " + std::to_string(scope) +
                                   " is neither 0 (namespace) nor 1 (keys)");
  }
  m.scope = static_cast<Scope>(scope);
  TIERKV_RETURN_IF_ERROR(r.get_array("keys", m.keys, kMaxChunksPerRequest));
  return r.expect_end("drop request");
}
Status decode(ByteReader& r, StatsReply& m) {
  TIERKV_RETURN_IF_ERROR(r.get_string("daemon_version", m.daemon_version, kMaxNameBytes));
  TIERKV_RETURN_IF_ERROR(r.get("pid", m.pid));
  TIERKV_RETURN_IF_ERROR(r.get("uptime_ms", m.uptime_ms));
  TIERKV_RETURN_IF_ERROR(r.get("sessions", m.sessions));
  TIERKV_RETURN_IF_ERROR(r.get("namespaces", m.namespaces));
  TIERKV_RETURN_IF_ERROR(r.get("read_leases", m.read_leases));
  TIERKV_RETURN_IF_ERROR(r.get("pending_writes", m.pending_writes));
  TIERKV_RETURN_IF_ERROR(r.get("requests", m.requests));
  TIERKV_RETURN_IF_ERROR(r.get("request_errors", m.request_errors));
  TIERKV_RETURN_IF_ERROR(r.get_array("tiers", m.tiers, 16));
  TIERKV_RETURN_IF_ERROR(r.get("nvme", m.nvme));
  TIERKV_RETURN_IF_ERROR(r.get("prefill", m.prefill));
  TIERKV_RETURN_IF_ERROR(r.get_array("tier_bandwidth", m.tier_bandwidth, 16));
  TIERKV_RETURN_IF_ERROR(r.get_array("recent_prefills", m.recent_prefills, 1024));
  TIERKV_RETURN_IF_ERROR(r.get_array("tier_codecs", m.tier_codecs, 16));
  TIERKV_RETURN_IF_ERROR(r.get_string("nvme_codec", m.nvme_codec, 64 * 1024));
  TIERKV_RETURN_IF_ERROR(r.get_array("codec_stages", m.codec_stages, 16));
  TIERKV_RETURN_IF_ERROR(r.get("codec", m.codec));
  TIERKV_RETURN_IF_ERROR(r.get("gpu", m.gpu));
  TIERKV_RETURN_IF_ERROR(r.get_string("gpu_status", m.gpu_status, 4096));
  TIERKV_RETURN_IF_ERROR(r.get("nvme_io", m.nvme_io));
  return r.expect_end("stats reply");
}
Status decode(ByteReader& r, ListNamespacesReply& m) {
  uint32_t n = 0;
  TIERKV_RETURN_IF_ERROR(r.get("namespaces", n));
  if (n > 1u << 20) return Status::ProtocolError("namespaces: count " + std::to_string(n) + " too large");
  m.namespaces.resize(n);
  for (NamespaceInfo& info : m.namespaces) {
    TIERKV_RETURN_IF_ERROR(r.get("ns", info.ns.id));
    TIERKV_RETURN_IF_ERROR(get_layout(r, info.ns.layout));
    TIERKV_RETURN_IF_ERROR(r.get_string("tenant", info.ns.tenant, kMaxNameBytes));
    TIERKV_RETURN_IF_ERROR(r.get_string("salt", info.ns.salt, kMaxNameBytes));
    TIERKV_RETURN_IF_ERROR(r.get("chunks", info.chunks));
    TIERKV_RETURN_IF_ERROR(r.get("bytes", info.bytes));
  }
  return r.expect_end("list_namespaces reply");
}

Status decode(ByteReader& r, PrefetchReply& m) {
  return r.get_whole("prefetch reply", m, "prefetch reply");
}
Status decode(ByteReader& r, FlushReply& m) { return r.get_whole("flush reply", m, "flush reply"); }
Status decode(ByteReader& r, VerifyRequest& m) {
  TIERKV_RETURN_IF_ERROR(r.get("cursor", m.cursor));
  TIERKV_RETURN_IF_ERROR(r.get("max_chunks", m.max_chunks));
  if (m.max_chunks == 0 || m.max_chunks > kMaxChunksPerRequest) {
    return Status::InvalidArgument("max_chunks = " + std::to_string(m.max_chunks) +
                                   " is out of range [1, " +
                                   std::to_string(kMaxChunksPerRequest) + "]");
  }
  return r.expect_end("verify");
}
Status decode(ByteReader& r, VerifyReply& m) {
  TIERKV_RETURN_IF_ERROR(r.get("next_cursor", m.next_cursor));
  TIERKV_RETURN_IF_ERROR(r.get("cursor_end", m.cursor_end));
  TIERKV_RETURN_IF_ERROR(r.get("checked", m.checked));
  TIERKV_RETURN_IF_ERROR(r.get("corrupt", m.corrupt));
  TIERKV_RETURN_IF_ERROR(r.get("unreadable", m.unreadable));
  TIERKV_RETURN_IF_ERROR(r.get("done", m.done));
  return r.expect_end("verify reply");
}

Status decode(ByteReader& r, GpuAttachReply& m) {
  return r.get_whole("gpu_attach reply", m, "gpu_attach reply");
}

}  // namespace tierkv::proto
