#include "tierkv/scheduler/prefill_service.h"

#include <algorithm>
#include <string>

namespace tierkv::scheduler {

namespace {
// A fit needs this many measured chunks before it replaces the default profile.
constexpr size_t kMinFitSamples = 8;
// A session's measured speed is carried to the next only if it computed at least this many.
constexpr uint32_t kMinScaleSamples = 3;
}  // namespace

PrefillService::PrefillService(CacheEngine& engine, Clock& clock, const PrefillOptions& options,
                               ChunkLoaderFactory* factory)
    : engine_(engine),
      clock_(clock),
      options_(options),
      factory_(factory),
      costs_(options.tier_costs) {
  // A throttled tier's throttle is its prior: host chunks then go through the emulated tier (not
  // resident), NVMe reads come no faster than the throttle.
  TierCostOptions o = options.tier_costs;
  if (options_.host_throttle.enabled()) {
    o.host = TierCost{false, options_.host_throttle.read_GBps, options_.host_throttle.latency_us};
  }
  if (options_.nvme_throttle.enabled()) {
    o.nvme.read_GBps = std::min(o.nvme.read_GBps, options_.nvme_throttle.read_GBps);
    o.nvme.latency_us += options_.nvme_throttle.latency_us;
  }
  costs_ = TierCostModel(o);
  options_.queue_depth = std::max<uint32_t>(options_.queue_depth, 1);
  options_.max_lookahead = std::max<uint32_t>(options_.max_lookahead, 1);
}

PrefillService::~PrefillService() {
  while (!live_.empty()) finish(live_.begin()->first, /*cancel=*/true);
}

Result<PrefillService::Live*> PrefillService::find(SessionId client, uint64_t session,
                                                   const char* op) {
  auto it = live_.find(session);
  if (it == live_.end() || it->second->client != client) {
    return Status::NotFound(std::string(op) + ": prefill session " + std::to_string(session) +
                            " is not open on this connection");
  }
  return it->second.get();
}

PrefillService::NamespaceProfile& PrefillService::profile_of(NamespaceId ns) {
  auto it = profiles_.find(ns);
  if (it == profiles_.end()) {
    it = profiles_.emplace(ns, NamespaceProfile{}).first;
    it->second.profile = options_.default_profile;
  }
  return it->second;
}

const ComputeProfile& PrefillService::current_profile(NamespaceProfile& p) {
  if (!p.registered) {
    ComputeProfile fitted;
    if (p.fitter.fit(fitted, kMinFitSamples)) {
      p.profile = fitted;
      if (!p.learned) {
        p.learned = true;
        ++p.version;
      }
    }
  }
  return p.profile;
}

// --- requests ------------------------------------------------------------------------------------

Status PrefillService::begin(SessionId client, const proto::PrefillBeginRequest& req,
                             proto::PrefillBeginReply& reply) {
  auto ns = engine_.find_registered(req.ns, "prefill_begin");
  if (!ns.ok()) return ns.status();
  if (req.compute_lookahead == 0 || req.compute_lookahead > options_.max_lookahead) {
    return Status::InvalidArgument("compute_lookahead = " + std::to_string(req.compute_lookahead) +
                                   " is out of range [1, " +
                                   std::to_string(options_.max_lookahead) + "]");
  }
  size_t mine = 0;
  for (const auto& [id, live] : live_) mine += live->client == client ? 1 : 0;
  if (mine >= options_.max_sessions_per_client) {
    return Status::ResourceExhausted("this connection already has " + std::to_string(mine) +
                                     " prefill sessions open (prefill.max_sessions_per_client); "
                                     "end one first");
  }

  proto::LookupReply found;
  TIERKV_RETURN_IF_ERROR(engine_.lookup(proto::KeysRequest{req.ns, req.keys}, found));
  const auto n = static_cast<uint32_t>(found.tiers.size());
  reply = proto::PrefillBeginReply{};
  reply.total_chunks = static_cast<uint32_t>(req.keys.size());
  reply.cached_chunks = n;
  reply.tiers = found.tiers;
  if (n == 0) {
    // Nothing cached: nothing to co-schedule; the engine computes the prompt as usual.
    reply.session = 0;
    reply.progress.met = 1;
    return Status::Ok();
  }

  auto live = std::make_unique<Live>();
  live->client = client;
  live->ns = req.ns;
  live->keys.assign(req.keys.begin(), req.keys.begin() + n);
  live->tiers = std::move(found.tiers);
  live->lease_session = engine_.open_session();
  if (factory_ != nullptr) {
    LoaderContext context{live->lease_session, &*ns, live->keys, live->tiers};
    live->loader = factory_->make(context);
  }
  if (live->loader == nullptr) {
    live->loader = std::make_unique<TierChunkLoader>(
        engine_, clock_, live->lease_session, req.ns, ns->chunk_bytes(), live->keys, live->tiers,
        TierLoaderOptions{options_.host_throttle, options_.nvme_throttle});
  }

  NamespaceProfile& np = profile_of(req.ns);
  const ComputeProfile& profile = current_profile(np);
  live->profile_version = np.version;
  PrefillSessionOptions so;
  so.chunk_bytes = ns->chunk_bytes();
  so.chunk_tokens = ns->layout.chunk_tokens;
  const uint64_t chunk_tokens = ns->layout.chunk_tokens;
  const uint64_t prompt = std::max<uint64_t>(req.prompt_tokens, req.keys.size() * chunk_tokens);
  so.suffix_tokens = prompt - uint64_t{n} * chunk_tokens;
  so.queue_depth = options_.queue_depth;
  so.compute_lookahead = req.compute_lookahead;
  so.meeting_point = req.meeting_point;
  // A learned profile already is the engine's speed; a given one is scaled by the last measure.
  so.initial_compute_scale = !np.learned && np.scale_version == np.version ? np.compute_scale : 1.0;
  live->session = std::make_unique<PrefillSession>(so, clock_, *live->loader, costs_, profile,
                                                   live->tiers, &np.fitter);
  live->session->start();

  const uint64_t id = next_id_++;
  reply.session = id;
  const PrefillPlan& plan = live->session->plan();
  reply.plan.meeting_point = plan.meeting_point;
  reply.plan.load_chunks = plan.load_chunks;
  reply.plan.resident_chunks = plan.resident_chunks;
  reply.plan.queue_depth = plan.queue_depth;
  reply.plan.loading_helps = plan.loading_helps ? 1 : 0;
  reply.plan.compute_only_ms = plan.compute_only_ms;
  reply.plan.load_only_ms = plan.load_only_ms;
  reply.plan.bidir_ms = plan.bidir_ms;
  live->session->take_progress(reply.progress);

  ++stats_.sessions_started;
  stats_.last_planned_meeting_point = plan.meeting_point;
  stats_.last_chunks = n;
  live_.emplace(id, std::move(live));
  return Status::Ok();
}

Status PrefillService::set_profile(SessionId, const proto::PrefillProfileRequest& req) {
  TIERKV_RETURN_IF_ERROR(engine_.find_registered(req.ns, "prefill_profile").status());
  NamespaceProfile& np = profile_of(req.ns);
  if (req.kind == proto::ProfileKind::kLearn) {
    np.registered = false;
    np.learned = false;
    np.profile = options_.default_profile;
    np.fitter.reset();
    ++np.version;
    return Status::Ok();
  }
  ComputeProfile p;
  if (req.kind == proto::ProfileKind::kModel) {
    p.a_ms_per_token = req.a_ms_per_token;
    p.b_ms_per_token2 = req.b_ms_per_token2;
  } else {
    if (req.table.empty()) return Status::InvalidArgument("profile table is empty");
    p.table_chunk_tokens = req.table_chunk_tokens;
    for (const proto::ProfilePoint& pt : req.table)
      p.table.push_back({pt.prefix_tokens, pt.chunk_ms});
  }
  TIERKV_RETURN_IF_ERROR(p.validate());
  np.registered = true;
  np.learned = false;
  np.profile = std::move(p);
  ++np.version;
  return Status::Ok();
}

void PrefillService::release_chunks(PrefillSession& s, std::span<const uint32_t> chunks,
                                    Status& first_error) {
  for (uint32_t c : chunks) {
    Status st = s.release(c);
    if (!st.ok() && first_error.ok()) first_error = std::move(st);
  }
}

Status PrefillService::computed(SessionId client, const proto::PrefillComputedRequest& req,
                                proto::PrefillProgress& out) {
  auto live = find(client, req.session, "prefill_computed");
  if (!live.ok()) return live.status();
  PrefillSession& s = *(*live)->session;
  Status released;
  release_chunks(s, req.release, released);
  if (!released.ok()) return released;
  TIERKV_RETURN_IF_ERROR(s.computed(req.chunk));
  s.take_progress(out);
  return Status::Ok();
}

Result<bool> PrefillService::poll(SessionId client, const proto::PrefillPollRequest& req,
                                  proto::PrefillProgress& out, std::function<void()> wake) {
  auto live = find(client, req.session, "prefill_poll");
  if (!live.ok()) return live.status();
  PrefillSession& s = *(*live)->session;
  Status released;
  release_chunks(s, req.release, released);
  if (!released.ok()) return released;
  if (req.timeout_us == 0 || s.has_news() || s.met() || wake == nullptr) {
    s.take_progress(out);
    return true;
  }
  s.notify_once(std::move(wake));
  return false;
}

Status PrefillService::take(SessionId client, uint64_t session, proto::PrefillProgress& out) {
  auto live = find(client, session, "prefill_poll");
  if (!live.ok()) return live.status();
  (*live)->session->notify_once(nullptr);
  (*live)->session->take_progress(out);
  return Status::Ok();
}

void PrefillService::cancel_wait(SessionId client, uint64_t session) {
  auto live = find(client, session, "prefill_poll");
  if (live.ok()) (*live)->session->notify_once(nullptr);
}

Status PrefillService::end(SessionId client, const proto::PrefillEndRequest& req,
                           proto::PrefillSummary& out) {
  auto live = find(client, req.session, "prefill_end");
  if (!live.ok()) return live.status();
  out = finish(req.session, req.cancel != 0);
  return Status::Ok();
}

size_t PrefillService::close_client(SessionId client) {
  std::vector<uint64_t> ids;
  for (const auto& [id, live] : live_) {
    if (live->client == client) ids.push_back(id);
  }
  for (uint64_t id : ids) finish(id, /*cancel=*/true);
  return ids.size();
}

proto::PrefillSummary PrefillService::finish(uint64_t id, bool cancel) {
  auto it = live_.find(id);
  Live& live = *it->second;
  PrefillSession& s = *live.session;
  s.end(cancel);
  const proto::PrefillSummary sum = s.summary();
  const PrefillPlan& plan = s.plan();

  stats_.chunks_handed_over += sum.handed_over;
  stats_.chunks_loaded += sum.loaded;
  stats_.chunks_computed += sum.computed;
  stats_.load_failures += sum.failed;
  stats_.wasted_loads += s.wasted_loads();
  (sum.cancelled ? stats_.sessions_cancelled : stats_.sessions_met)++;

  NamespaceProfile& np = profile_of(live.ns);
  if (sum.computed >= kMinScaleSamples && live.profile_version == np.version) {
    np.compute_scale = s.compute_scale();
    np.scale_version = np.version;
  }

  proto::PrefillRecord rec;
  rec.session = id;
  rec.chunks = sum.chunks;
  rec.handed_over = sum.handed_over;
  rec.loaded = sum.loaded;
  rec.computed = sum.computed;
  rec.failed = sum.failed;
  rec.planned_meeting_point = sum.planned_meeting_point;
  rec.actual_meeting_point = sum.actual_meeting_point;
  rec.met = sum.met;
  rec.predicted_compute_only_ms = plan.compute_only_ms;
  rec.predicted_load_only_ms = plan.load_only_ms;
  rec.predicted_bidir_ms = plan.bidir_ms;
  rec.actual_ms = static_cast<double>(sum.met ? sum.met_us : sum.elapsed_us) / 1000.0;
  rec.saved_ms = sum.met ? plan.compute_only_ms - plan.suffix_ms - rec.actual_ms : 0.0;
  recent_.push_back(rec);
  while (recent_.size() > options_.recent_sessions) recent_.pop_front();

  const SessionId lease_session = live.lease_session;
  live.session.reset();
  live.loader.reset();
  live_.erase(it);
  engine_.close_session(lease_session);  // anything still leased goes with it
  return sum;
}

void PrefillService::fill_stats(proto::StatsReply& stats) const {
  stats.prefill = stats_;
  stats.prefill.sessions_active = live_.size();
  // Live sessions' counts join the totals when they end; wasted loads count at once.
  for (const auto& [id, live] : live_) stats.prefill.wasted_loads += live->session->wasted_loads();
  stats.tier_bandwidth.clear();
  for (proto::Tier t :
       {proto::Tier::kGpu, proto::Tier::kHost, proto::Tier::kNvme, proto::Tier::kRemote}) {
    const TierCost& c = costs_.cost(t);
    proto::TierBandwidth b;
    b.tier = t;
    b.resident = c.resident ? 1 : 0;
    b.read_GBps = c.read_GBps;
    b.latency_us = c.latency_us;
    b.samples = costs_.samples(t);
    stats.tier_bandwidth.push_back(b);
  }
  stats.recent_prefills.assign(recent_.begin(), recent_.end());
}

}  // namespace tierkv::scheduler
