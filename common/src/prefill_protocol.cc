#include "tierkv/prefill_protocol.h"

#include <string>

namespace tierkv::proto {

using wire::ByteReader;
using wire::ByteWriter;

namespace {

// A progress inside another message (the begin reply) or alone (computed and poll replies).
void put_progress(ByteWriter& w, const PrefillProgress& m) {
  w.put(m.grant_end);
  w.put(m.load_front);
  w.put(m.met);
  w.put_array(std::span<const PrefillReady>(m.ready));
  w.put_array(std::span<const uint32_t>(m.failed));
}

Status get_progress(ByteReader& r, PrefillProgress& m) {
  TIERKV_RETURN_IF_ERROR(r.get("grant_end", m.grant_end));
  TIERKV_RETURN_IF_ERROR(r.get("load_front", m.load_front));
  TIERKV_RETURN_IF_ERROR(r.get("met", m.met));
  TIERKV_RETURN_IF_ERROR(r.get_array("ready", m.ready, kMaxChunksPerRequest));
  TIERKV_RETURN_IF_ERROR(r.get_array("failed", m.failed, kMaxChunksPerRequest));
  return Status::Ok();
}

}  // namespace

void encode(ByteWriter& w, const PrefillBeginRequest& m) {
  w.put(m.ns);
  w.put(m.prompt_tokens);
  w.put(m.compute_lookahead);
  w.put(m.meeting_point);
  w.put_array(std::span<const ChunkKey>(m.keys));
}
void encode(ByteWriter& w, const PrefillBeginReply& m) {
  w.put(m.session);
  w.put(m.total_chunks);
  w.put(m.cached_chunks);
  w.put_array(std::span<const Tier>(m.tiers));
  w.put(m.plan);
  put_progress(w, m.progress);
}
void encode(ByteWriter& w, const PrefillProgress& m) { put_progress(w, m); }
void encode(ByteWriter& w, const PrefillProfileRequest& m) {
  w.put(m.ns);
  w.put(static_cast<uint8_t>(m.kind));
  w.put(m.a_ms_per_token);
  w.put(m.b_ms_per_token2);
  w.put(m.table_chunk_tokens);
  w.put_array(std::span<const ProfilePoint>(m.table));
}
void encode(ByteWriter& w, const PrefillComputedRequest& m) {
  w.put(m.session);
  w.put(m.chunk);
  w.put_array(std::span<const uint32_t>(m.release));
}
void encode(ByteWriter& w, const PrefillPollRequest& m) {
  w.put(m.session);
  w.put(m.timeout_us);
  w.put_array(std::span<const uint32_t>(m.release));
}
void encode(ByteWriter& w, const PrefillEndRequest& m) {
  w.put(m.session);
  w.put(m.cancel);
}
void encode(ByteWriter& w, const PrefillSummary& m) { w.put(m); }

Status decode(ByteReader& r, PrefillBeginRequest& m) {
  TIERKV_RETURN_IF_ERROR(r.get("ns", m.ns));
  TIERKV_RETURN_IF_ERROR(r.get("prompt_tokens", m.prompt_tokens));
  TIERKV_RETURN_IF_ERROR(r.get("compute_lookahead", m.compute_lookahead));
  TIERKV_RETURN_IF_ERROR(r.get("meeting_point", m.meeting_point));
  TIERKV_RETURN_IF_ERROR(r.get_array("keys", m.keys, kMaxChunksPerRequest));
  if (m.compute_lookahead == 0) {
    return Status::InvalidArgument(
        "compute_lookahead = 0: the engine must be granted at least "
        "one chunk at a time");
  }
  return r.expect_end("prefill_begin");
}
Status decode(ByteReader& r, PrefillBeginReply& m) {
  TIERKV_RETURN_IF_ERROR(r.get("session", m.session));
  TIERKV_RETURN_IF_ERROR(r.get("total_chunks", m.total_chunks));
  TIERKV_RETURN_IF_ERROR(r.get("cached_chunks", m.cached_chunks));
  TIERKV_RETURN_IF_ERROR(r.get_array("tiers", m.tiers, kMaxChunksPerRequest));
  TIERKV_RETURN_IF_ERROR(r.get("plan", m.plan));
  TIERKV_RETURN_IF_ERROR(get_progress(r, m.progress));
  return r.expect_end("prefill_begin reply");
}
Status decode(ByteReader& r, PrefillProgress& m) {
  TIERKV_RETURN_IF_ERROR(get_progress(r, m));
  return r.expect_end("prefill progress");
}
Status decode(ByteReader& r, PrefillProfileRequest& m) {
  uint8_t kind = 0;
  TIERKV_RETURN_IF_ERROR(r.get("ns", m.ns));
  TIERKV_RETURN_IF_ERROR(r.get("kind", kind));
  if (kind > static_cast<uint8_t>(ProfileKind::kLearn)) {
    return Status::InvalidArgument("profile kind = " + std::to_string(kind) +
                                   " is not 0 (model), 1 (table) or 2 (learn)");
  }
  m.kind = static_cast<ProfileKind>(kind);
  TIERKV_RETURN_IF_ERROR(r.get("a_ms_per_token", m.a_ms_per_token));
  TIERKV_RETURN_IF_ERROR(r.get("b_ms_per_token2", m.b_ms_per_token2));
  TIERKV_RETURN_IF_ERROR(r.get("table_chunk_tokens", m.table_chunk_tokens));
  TIERKV_RETURN_IF_ERROR(r.get_array("table", m.table, kMaxProfilePoints));
  return r.expect_end("prefill_profile");
}
Status decode(ByteReader& r, PrefillComputedRequest& m) {
  TIERKV_RETURN_IF_ERROR(r.get("session", m.session));
  TIERKV_RETURN_IF_ERROR(r.get("chunk", m.chunk));
  TIERKV_RETURN_IF_ERROR(r.get_array("release", m.release, kMaxChunksPerRequest));
  return r.expect_end("prefill_computed");
}
Status decode(ByteReader& r, PrefillPollRequest& m) {
  TIERKV_RETURN_IF_ERROR(r.get("session", m.session));
  TIERKV_RETURN_IF_ERROR(r.get("timeout_us", m.timeout_us));
  if (m.timeout_us > kMaxPrefillWaitUs) {
    return Status::InvalidArgument("timeout_us = " + std::to_string(m.timeout_us) +
                                   " exceeds the limit of " + std::to_string(kMaxPrefillWaitUs));
  }
  TIERKV_RETURN_IF_ERROR(r.get_array("release", m.release, kMaxChunksPerRequest));
  return r.expect_end("prefill_poll");
}
Status decode(ByteReader& r, PrefillEndRequest& m) {
  TIERKV_RETURN_IF_ERROR(r.get("session", m.session));
  TIERKV_RETURN_IF_ERROR(r.get("cancel", m.cancel));
  if (m.cancel > 1) {
    return Status::InvalidArgument("cancel = " + std::to_string(m.cancel) + " is neither 0 nor 1");
  }
  return r.expect_end("prefill_end");
}
Status decode(ByteReader& r, PrefillSummary& m) {
  return r.get_whole("summary", m, "prefill_end reply");
}

}  // namespace tierkv::proto
