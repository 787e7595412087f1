#include "tierkv/prefill.h"

#include <algorithm>
#include <string>

namespace tierkv {

// Client's private round trip, for the prefill messages.
struct PrefillWire {
  template <typename Req, typename Rep>
  static Status call(Client& c, proto::Op op, const Req& req, Rep& rep) {
    return c.call_erased(
        op, &req,
        [](wire::ByteWriter& w, const void* m) { proto::encode(w, *static_cast<const Req*>(m)); },
        &rep, [](wire::ByteReader& r, void* m) { return proto::decode(r, *static_cast<Rep*>(m)); });
  }
  static bool in_region(const Client& c, const proto::SlotRef& s) {
    return s.offset <= c.region_bytes_ && c.region_bytes_ - s.offset >= s.bytes;
  }
  static const std::byte* at(const Client& c, uint64_t offset) { return c.at(offset); }
};

namespace {
Status send_profile(Client& client, const proto::PrefillProfileRequest& req) {
  proto::CountReply rep;
  return PrefillWire::call(client, proto::Op::kPrefillProfile, req, rep);
}
}  // namespace

Status set_compute_profile(Client& client, NamespaceId ns, double a_ms_per_token,
                           double b_ms_per_token2) {
  return send_profile(client,
                      {ns, proto::ProfileKind::kModel, a_ms_per_token, b_ms_per_token2, 0, {}});
}

Status set_compute_profile_table(Client& client, NamespaceId ns, uint32_t table_chunk_tokens,
                                 std::span<const proto::ProfilePoint> table) {
  return send_profile(client, {ns, proto::ProfileKind::kTable, 0, 0, table_chunk_tokens,
                               std::vector<proto::ProfilePoint>(table.begin(), table.end())});
}

Status learn_compute_profile(Client& client, NamespaceId ns) {
  return send_profile(client, {ns, proto::ProfileKind::kLearn, 0, 0, 0, {}});
}

Result<std::unique_ptr<PrefillSession>> PrefillSession::begin(std::shared_ptr<Client> client,
                                                              const Namespace& ns,
                                                              std::span<const TokenId> tokens,
                                                              PrefillOptions options) {
  const std::vector<ChunkKey> keys = Client::keys(ns, tokens);
  options.prompt_tokens = tokens.size();
  return begin(std::move(client), ns, keys, options);
}

Result<std::unique_ptr<PrefillSession>> PrefillSession::begin(std::shared_ptr<Client> client,
                                                              const Namespace& ns,
                                                              std::span<const ChunkKey> keys,
                                                              PrefillOptions options) {
  if (client == nullptr) return Status::InvalidArgument("client must not be null");
  proto::PrefillBeginRequest req;
  req.ns = ns.id;
  req.prompt_tokens = options.prompt_tokens;
  req.compute_lookahead = options.compute_lookahead;
  req.meeting_point = options.meeting_point;
  req.keys.assign(keys.begin(), keys.end());
  proto::PrefillBeginReply rep;
  TIERKV_RETURN_IF_ERROR(PrefillWire::call(*client, proto::Op::kPrefillBegin, req, rep));
  if (rep.cached_chunks > keys.size() || rep.tiers.size() != rep.cached_chunks) {
    return Status::ProtocolError("prefill_begin reply: " + std::to_string(rep.cached_chunks) +
                                 " cached chunks and " + std::to_string(rep.tiers.size()) +
                                 " tiers for " + std::to_string(keys.size()) + " keys");
  }
  std::unique_ptr<PrefillSession> s(new PrefillSession(std::move(client), rep));
  // A reply that names slots outside the pool or chunks outside the prefix is not ours to read.
  for (const proto::PrefillReady& r : rep.progress.ready) {
    if (r.chunk >= s->n_ || !PrefillWire::in_region(*s->client_, r.slot)) {
      return Status::ProtocolError("prefill_begin reply: chunk " + std::to_string(r.chunk) +
                                   " is outside the prefix or its slot outside the host pool");
    }
  }
  s->apply(rep.progress);
  return s;
}

PrefillSession::PrefillSession(std::shared_ptr<Client> client,
                               const proto::PrefillBeginReply& reply)
    : client_(std::move(client)),
      id_(reply.session),
      total_(reply.total_chunks),
      n_(reply.cached_chunks),
      tiers_(reply.tiers),
      plan_(reply.plan),
      state_(n_, kMissing),
      failed_(n_, 0),
      ready_(n_),
      missing_(n_) {
  fresh_.reserve(n_);
  taken_.reserve(n_);
  to_release_.reserve(n_);
  ended_ = id_ == 0;
}

PrefillSession::~PrefillSession() { (void)finish(/*cancel=*/true, nullptr); }

void PrefillSession::apply(const proto::PrefillProgress& p) {
  grant_end_ = std::min(p.grant_end, n_);
  for (const proto::PrefillReady& r : p.ready) {
    if (r.chunk >= n_ || state_[r.chunk] != kMissing) continue;  // checked by the callers
    state_[r.chunk] = kReady;
    ready_[r.chunk] = r;
    fresh_.push_back(r.chunk);
    --missing_;
  }
  for (uint32_t f : p.failed) {
    if (f < n_) failed_[f] = 1;
  }
  while (front_ < n_ && state_[front_] != kMissing) ++front_;
}

PrefillSession::Next PrefillSession::next() const {
  if (front_ >= n_) return {Action::kDone, n_};
  if (front_ < grant_end_ || failed_[front_]) return {Action::kCompute, front_};
  return {Action::kWait, front_};
}

Status PrefillSession::computed(uint32_t chunk) {
  if (ended_) return Status::FailedPrecondition("the prefill session has ended");
  if (chunk >= n_ || state_[chunk] != kMissing) {
    return Status::InvalidArgument("computed: chunk " + std::to_string(chunk) +
                                   " is not a missing chunk of the " + std::to_string(n_) +
                                   "-chunk prefix");
  }
  computed_req_.session = id_;
  computed_req_.chunk = chunk;
  computed_req_.release.swap(to_release_);
  to_release_.clear();
  Status s = PrefillWire::call(*client_, proto::Op::kPrefillComputed, computed_req_, progress_);
  if (!s.ok()) return s;
  state_[chunk] = kComputed;
  --missing_;
  for (const proto::PrefillReady& r : progress_.ready) {
    if (r.chunk >= n_ || !PrefillWire::in_region(*client_, r.slot)) {
      return Status::ProtocolError("prefill reply names chunk " + std::to_string(r.chunk) +
                                   " outside the prefix or a slot outside the host pool");
    }
  }
  apply(progress_);
  return Status::Ok();
}

Status PrefillSession::poll() { return wait_ready(std::chrono::microseconds(0)); }

Status PrefillSession::wait_ready(std::chrono::microseconds timeout) {
  if (ended_) return Status::Ok();
  poll_req_.session = id_;
  poll_req_.timeout_us =
      static_cast<uint32_t>(std::clamp<int64_t>(timeout.count(), 0, proto::kMaxPrefillWaitUs));
  poll_req_.release.swap(to_release_);
  to_release_.clear();
  TIERKV_RETURN_IF_ERROR(
      PrefillWire::call(*client_, proto::Op::kPrefillPoll, poll_req_, progress_));
  for (const proto::PrefillReady& r : progress_.ready) {
    if (r.chunk >= n_ || !PrefillWire::in_region(*client_, r.slot)) {
      return Status::ProtocolError("prefill reply names chunk " + std::to_string(r.chunk) +
                                   " outside the prefix or a slot outside the host pool");
    }
  }
  apply(progress_);
  return Status::Ok();
}

std::span<const uint32_t> PrefillSession::take_ready() {
  taken_.swap(fresh_);
  fresh_.clear();
  return taken_;
}

std::span<const std::byte> PrefillSession::chunk(uint32_t i) const {
  if (ended_ || i >= n_ || state_[i] != kReady) return {};
  return {PrefillWire::at(*client_, ready_[i].slot.offset), ready_[i].slot.bytes};
}

const proto::PrefillReady* PrefillSession::ready_info(uint32_t i) const {
  if (i >= n_ || (state_[i] != kReady && state_[i] != kReleased)) return nullptr;
  return &ready_[i];
}

void PrefillSession::release(uint32_t i) {
  if (ended_ || i >= n_ || state_[i] != kReady) return;
  state_[i] = kReleased;
  to_release_.push_back(i);
}

Result<proto::PrefillSummary> PrefillSession::end() {
  proto::PrefillSummary out;
  out.chunks = n_;
  out.met = met() ? 1 : 0;
  TIERKV_RETURN_IF_ERROR(finish(/*cancel=*/false, &out));
  return out;
}

Status PrefillSession::cancel() { return finish(/*cancel=*/true, nullptr); }

Status PrefillSession::finish(bool cancel, proto::PrefillSummary* out) {
  if (ended_) return Status::Ok();
  ended_ = true;
  proto::PrefillEndRequest req{id_, static_cast<uint8_t>(cancel ? 1 : 0)};
  proto::PrefillSummary summary;
  Status s = PrefillWire::call(*client_, proto::Op::kPrefillEnd, req, summary);
  if (s.ok() && out != nullptr) *out = summary;
  return s;
}

}  // namespace tierkv
