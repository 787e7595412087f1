#include "tierkv/scheduler/prefill_session.h"

#include <algorithm>
#include <string>

namespace tierkv::scheduler {

namespace {
constexpr size_t kTiers = 5;
size_t tier_index(proto::Tier t) {
  const auto i = static_cast<size_t>(t);
  return i < kTiers ? i : 0;
}
}  // namespace

PrefillSession::PrefillSession(const PrefillSessionOptions& options, Clock& clock,
                               ChunkLoader& loader, TierCostModel& costs,
                               const ComputeProfile& profile, std::span<const proto::Tier> tiers,
                               ComputeProfileFitter* fitter)
    : options_(options),
      clock_(clock),
      loader_(loader),
      costs_(costs),
      profile_(profile),
      fitter_(fitter),
      n_(static_cast<uint32_t>(tiers.size())),
      tiers_(tiers.begin(), tiers.end()),
      state_(n_, ChunkState::kUnassigned),
      resident_(n_, 0),
      sent_(n_, 0),
      busy_read_(n_, 0),
      slot_(n_),
      holds_slot_(n_, 0),
      base_ms_(n_, 0.0),
      cum_ms_(n_ + 1, 0.0),
      submitted_ns_(n_, 0),
      granted_ns_(n_, 0),
      predicted_done_ms_(n_, 0.0) {
  options_.queue_depth = std::max<uint32_t>(options_.queue_depth, 1);
  options_.compute_lookahead = std::max<uint32_t>(options_.compute_lookahead, 1);
  ready_.reserve(n_);
  failed_.reserve(n_);
  for (uint32_t i = 0; i < n_; ++i) {
    base_ms_[i] = profile_.chunk_ms(uint64_t{options_.chunk_tokens} * i, options_.chunk_tokens);
  }
  loader_.bind(this);
}

PrefillSession::~PrefillSession() { end(/*cancel=*/true); }

// --- start ---------------------------------------------------------------------------------------

void PrefillSession::start() {
  if (started_) return;
  started_ = true;
  begin_ns_ = last_report_ns_ = last_completion_ns_ = last_read_done_ns_ = clock_.now_ns();
  speed_ = options_.initial_compute_scale > 0 ? options_.initial_compute_scale : 1.0;

  // Chunks already in host RAM go first: no I/O, no cost. One that cannot be leased (it left the
  // host tier since the lookup) is treated like any other chunk.
  for (uint32_t i = 0; i < n_; ++i) {
    if (!costs_.cost(tiers_[i]).resident) continue;
    Result<proto::SlotRef> slot = loader_.hand_over(i);
    if (!slot.ok()) continue;
    state_[i] = ChunkState::kLoaded;
    resident_[i] = 1;
    slot_[i] = *slot;
    holds_slot_[i] = 1;
    ready_.push_back(proto::PrefillReady{i, 0, *slot, 0, 0});
    ++handed_over_;
    ++done_;
  }
  for (uint32_t i = 0; i < n_; ++i) {
    cum_ms_[i + 1] = cum_ms_[i] + (resident_[i] ? 0.0 : base_ms_[i]);
    if (!resident_[i]) ++unassigned_[tier_index(tiers_[i])];
  }

  PlannerInput in;
  in.tiers = tiers_;
  in.chunk_bytes = options_.chunk_bytes;
  in.chunk_tokens = options_.chunk_tokens;
  in.suffix_tokens = options_.suffix_tokens;
  in.queue_depth = options_.queue_depth;
  in.compute_scale = speed_;
  plan_ = plan_prefill(in, profile_, costs_);
  // The planner's depth keeps the tier busy; more reads in flight only commit chunks to the
  // loader earlier (and, with large chunks, queue seconds of I/O) without reading any faster.
  depth_ = std::min(options_.queue_depth, plan_.queue_depth);

  const double now = now_ms();
  stream_end_ms_ = engine_free_ms_ = now;
  load_front_ = claim_ptr_ = n_;
  if (options_.meeting_point != proto::kAutoMeetingPoint) {
    forced_m_ = std::min(options_.meeting_point, n_);
    while (grant_ptr_ < forced_m_) {
      if (state_[grant_ptr_] == ChunkState::kUnassigned) grant(grant_ptr_);
      ++grant_ptr_;
    }
  }
  pump();
}

// --- decisions -----------------------------------------------------------------------------------

void PrefillSession::pump() {
  if (!started_ || ended_) return;
  // Reads first: the loader takes what it can finish before the engine would get there; the
  // engine is then granted work from the front, unless the reads still to come cover it sooner.
  while (in_flight_ < depth_) {
    const uint32_t j = next_claim();
    if (j == n_) break;
    if (forced_m_ != proto::kAutoMeetingPoint ? j < forced_m_ : !worth_loading(j)) break;
    claim(j);
  }
  top_up_grant();
  if (!met_ && done_ == n_) {
    met_ = true;
    met_ns_ = clock_.now_ns();
  }
}

void PrefillSession::grant(uint32_t chunk) {
  const double now = now_ms();
  state_[chunk] = ChunkState::kGranted;
  --unassigned_[tier_index(tiers_[chunk])];
  granted_ns_[chunk] = clock_.now_ns();
  ++granted_open_;
  open_work_ms_ += base_ms_[chunk];
  engine_free_ms_ = std::max(engine_free_ms_, now) + chunk_ms(chunk);
}

void PrefillSession::top_up_grant() {
  const bool forced = forced_m_ != proto::kAutoMeetingPoint;
  while (granted_open_ < options_.compute_lookahead) {
    // Past chunks already handed over, computed or given back to the engine.
    while (grant_ptr_ < n_ &&
           (state_[grant_ptr_] == ChunkState::kComputed ||
            state_[grant_ptr_] == ChunkState::kFailed ||
            (state_[grant_ptr_] == ChunkState::kLoaded && resident_[grant_ptr_]))) {
      ++grant_ptr_;
    }
    if (grant_ptr_ >= n_ || state_[grant_ptr_] != ChunkState::kUnassigned) return;
    if (forced || hold_grant()) return;
    grant(grant_ptr_);
    ++grant_ptr_;
  }
}

bool PrefillSession::hold_grant() const {
  // Never leave the engine idle with no read in flight: that is how the session always moves.
  if (in_flight_ == 0 && granted_open_ == 0 && failed_open_ == 0) return false;
  // Every unassigned chunk read after the reads in flight, against the engine computing one more.
  const double now = now_ms();
  double first_latency = 0, reads = 0;
  for (size_t t = 0; t < kTiers; ++t) {
    if (unassigned_[t] == 0) continue;
    const TierCost& c = costs_.cost(static_cast<proto::Tier>(t));
    const double transfer = c.transfer_ms(options_.chunk_bytes);
    const double per_read = std::max(transfer, (c.latency_ms() + transfer) / depth_);
    first_latency = std::max(first_latency, c.latency_ms());
    reads += unassigned_[t] * per_read;
  }
  const double all_read = std::max(now + first_latency, stream_end_ms_) + reads;
  const double engine_done = std::max(engine_free_ms_, now) + chunk_ms(grant_ptr_);
  return all_read < engine_done;
}

uint32_t PrefillSession::next_claim() {
  while (claim_ptr_ > 0 && state_[claim_ptr_ - 1] != ChunkState::kUnassigned) --claim_ptr_;
  return claim_ptr_ == 0 ? n_ : claim_ptr_ - 1;
}

double PrefillSession::read_finish_ms(uint32_t chunk) const {
  const TierCost& c = costs_.cost(tiers_[chunk]);
  return std::max(now_ms() + c.latency_ms(), stream_end_ms_) + c.transfer_ms(options_.chunk_bytes);
}

double PrefillSession::engine_finish_ms(uint32_t chunk) const {
  // The engine finishes its granted work, then computes every unassigned chunk up to `chunk`
  // (all non-resident chunks of [grant_ptr_, chunk] are unassigned: claims come from the top).
  return std::max(engine_free_ms_, now_ms()) + speed_ * (cum_ms_[chunk + 1] - cum_ms_[grant_ptr_]);
}

bool PrefillSession::worth_loading(uint32_t chunk) const {
  // Load it only if the read ends before the engine would have finished computing it: then the
  // prefix is ready sooner, or at worst the engine waits less than computing would take.
  return read_finish_ms(chunk) < engine_finish_ms(chunk);
}

void PrefillSession::claim(uint32_t chunk) {
  const TierCost& c = costs_.cost(tiers_[chunk]);
  state_[chunk] = ChunkState::kLoading;
  --unassigned_[tier_index(tiers_[chunk])];
  busy_read_[chunk] = in_flight_ > 0 ? 1 : 0;
  ++in_flight_;
  submitted_ns_[chunk] = clock_.now_ns();
  const double done =
      std::max(now_ms() + c.latency_ms(), stream_end_ms_) + c.transfer_ms(options_.chunk_bytes);
  predicted_done_ms_[chunk] = done;
  stream_end_ms_ = done;
  load_front_ = std::min(load_front_, chunk);
  loader_.submit(chunk);
}

// --- events --------------------------------------------------------------------------------------

void PrefillSession::on_loaded(uint32_t chunk, const Result<proto::SlotRef>& slot,
                               int64_t completed_ns) {
  if (ended_ || chunk >= n_ || state_[chunk] != ChunkState::kLoading) {
    // Not a read of ours in flight (a loader breaking its contract): hold nothing we do not track.
    if (slot.ok() && chunk < n_) loader_.release(chunk, *slot);
    return;
  }
  const int64_t t = clock_.now_ns();
  const int64_t done_at = std::clamp(completed_ns, submitted_ns_[chunk], t);
  const double t_ms = static_cast<double>(t) / 1e6;
  --in_flight_;
  if (slot.ok()) {
    state_[chunk] = ChunkState::kLoaded;
    slot_[chunk] = *slot;
    holds_slot_[chunk] = 1;
    ++loaded_;
    ++done_;
    ready_.push_back(proto::PrefillReady{chunk, 0, *slot, since_begin_us(submitted_ns_[chunk]),
                                         since_begin_us(done_at)});
    measure_read(chunk, done_at);
  } else {
    state_[chunk] = ChunkState::kFailed;
    ++failed_count_;
    ++failed_open_;
    failed_.push_back(chunk);
  }
  // The reads behind this one run as late (or early) as it did.
  stream_end_ms_ += t_ms - predicted_done_ms_[chunk];
  if (in_flight_ == 0 || stream_end_ms_ < t_ms) stream_end_ms_ = t_ms;
  last_completion_ns_ = t;
  if (in_flight_ == 0) flush_reads();
  pump();
  news();
}

Status PrefillSession::computed(uint32_t chunk) {
  if (!started_ || ended_) return Status::FailedPrecondition("the prefill session has ended");
  if (chunk >= n_) {
    return Status::InvalidArgument("chunk " + std::to_string(chunk) +
                                   " is out of range: the cached prefix has " + std::to_string(n_) +
                                   " chunks");
  }
  const int64_t t = clock_.now_ns();
  switch (state_[chunk]) {
    case ChunkState::kGranted: {
      --granted_open_;
      open_work_ms_ -= base_ms_[chunk];
      // The engine computed it from when it finished the previous chunk or got this one.
      const int64_t from = std::max(last_report_ns_, granted_ns_[chunk]);
      const double took = static_cast<double>(t - from) / 1e6;
      if (took > 0 && base_ms_[chunk] > 0) {
        const double ratio = std::clamp(took / base_ms_[chunk], 0.02, 50.0);
        // The median of the last three measures goes into the average: one chunk stalled by
        // something else on the host does not move every prediction near the meeting point.
        recent_ratio_[recent_count_++ % recent_ratio_.size()] = ratio;
        double sample = ratio;
        if (recent_count_ >= recent_ratio_.size()) {
          std::array<double, 3> r = recent_ratio_;
          std::sort(r.begin(), r.end());
          sample = r[1];
        }
        speed_ = (1 - options_.compute_weight) * speed_ + options_.compute_weight * sample;
        if (fitter_ != nullptr) {
          fitter_->add(uint64_t{options_.chunk_tokens} * chunk, options_.chunk_tokens, took);
        }
      }
      break;
    }
    case ChunkState::kFailed:
      --failed_open_;
      break;
    case ChunkState::kComputed:
      return Status::FailedPrecondition("chunk " + std::to_string(chunk) +
                                        " was already reported computed");
    case ChunkState::kLoading:
    case ChunkState::kLoaded:
      ++wasted_;
      return Status::FailedPrecondition(
          "chunk " + std::to_string(chunk) + " is the loader's (" +
          (state_[chunk] == ChunkState::kLoading ? "being loaded" : "loaded") +
          "): the engine may compute only chunks below grant_end (" + std::to_string(grant_ptr_) +
          ") or named in failed");
    case ChunkState::kUnassigned:
      return Status::FailedPrecondition("chunk " + std::to_string(chunk) +
                                        " has not been granted to the engine (grant_end is " +
                                        std::to_string(grant_ptr_) + ")");
  }
  state_[chunk] = ChunkState::kComputed;
  ++computed_;
  ++done_;
  last_report_ns_ = t;
  engine_free_ms_ = static_cast<double>(t) / 1e6 + speed_ * open_work_ms_;
  pump();
  return Status::Ok();
}

Status PrefillSession::release(uint32_t chunk) {
  if (chunk >= n_) {
    return Status::InvalidArgument("release: chunk " + std::to_string(chunk) +
                                   " is out of range: the cached prefix has " + std::to_string(n_) +
                                   " chunks");
  }
  if (!holds_slot_[chunk] || !sent_[chunk]) {
    return Status::FailedPrecondition("release: chunk " + std::to_string(chunk) +
                                      " is not a delivered chunk this session still holds");
  }
  loader_.release(chunk, slot_[chunk]);
  holds_slot_[chunk] = 0;
  return Status::Ok();
}

void PrefillSession::measure_read(uint32_t chunk, int64_t t) {
  const proto::Tier tier = tiers_[chunk];
  const int64_t previous_done = last_read_done_ns_;
  last_read_done_ns_ = std::max(last_read_done_ns_, t);
  if (!busy_read_[chunk]) {
    // Into an idle stream: its whole time is latency plus one transfer.
    flush_reads();
    const double latency = static_cast<double>(t - submitted_ns_[chunk]) / 1e6;
    costs_.record_read(tier, options_.chunk_bytes, latency, -1.0);
    return;
  }
  // Behind other reads: the stream's throughput. Completions can be delivered in bursts (a
  // late timer, a batch of io_uring completions), so bytes are summed over at least
  // kMinReadSampleNs of stream time before they make one bandwidth sample.
  if (batch_reads_ > 0 && batch_tier_ != tier) flush_reads();
  if (batch_reads_ == 0) {
    batch_tier_ = tier;
    batch_start_ns_ = std::max(submitted_ns_[chunk], previous_done);
  }
  ++batch_reads_;
  batch_bytes_ += options_.chunk_bytes;
  batch_end_ns_ = t;
  if (batch_end_ns_ - batch_start_ns_ >= kMinReadSampleNs) flush_reads();
}

void PrefillSession::flush_reads() {
  if (batch_reads_ > 0 && batch_end_ns_ > batch_start_ns_) {
    const double ms = static_cast<double>(batch_end_ns_ - batch_start_ns_) / 1e6;
    costs_.record_read(batch_tier_, batch_bytes_, ms, ms);
  }
  batch_reads_ = 0;
  batch_bytes_ = 0;
}

void PrefillSession::take_progress(proto::PrefillProgress& out) {
  out.grant_end = grant_ptr_;
  out.load_front = load_front_;
  out.met = met_ ? 1 : 0;
  out.ready.assign(ready_.begin(), ready_.end());
  for (const proto::PrefillReady& r : ready_) sent_[r.chunk] = 1;
  out.failed.assign(failed_.begin(), failed_.end());
  ready_.clear();
  failed_.clear();
  reported_grant_ = grant_ptr_;
  reported_met_ = met_;
}

bool PrefillSession::has_news() const {
  return !ready_.empty() || !failed_.empty() || grant_ptr_ != reported_grant_ ||
         met_ != reported_met_;
}

void PrefillSession::news() {
  if (notify_ && has_news()) {
    auto fn = std::move(notify_);
    notify_ = nullptr;
    fn();
  }
}

void PrefillSession::end(bool cancel) {
  if (ended_) return;
  ended_ = true;
  end_ns_ = clock_.now_ns();
  cancelled_ = cancel || !met_;
  loader_.cancel_all();
  in_flight_ = 0;
  flush_reads();
  for (uint32_t i = 0; i < n_; ++i) {
    if (holds_slot_[i]) {
      loader_.release(i, slot_[i]);
      holds_slot_[i] = 0;
    }
  }
  ready_.clear();
  failed_.clear();
  notify_ = nullptr;
}

proto::PrefillSummary PrefillSession::summary() const {
  proto::PrefillSummary s;
  s.chunks = n_;
  s.handed_over = handed_over_;
  s.loaded = loaded_;
  s.computed = computed_;
  s.failed = failed_count_;
  s.planned_meeting_point = plan_.meeting_point;
  s.actual_meeting_point = n_;
  for (uint32_t i = 0; i < n_; ++i) {
    if (state_[i] == ChunkState::kLoaded && !resident_[i]) {
      s.actual_meeting_point = i;
      break;
    }
  }
  s.met = met_ ? 1 : 0;
  s.cancelled = ended_ && cancelled_ ? 1 : 0;
  const int64_t until = ended_ ? end_ns_ : clock_.now_ns();
  s.elapsed_us = since_begin_us(until);
  s.met_us = met_ ? since_begin_us(met_ns_) : 0;
  return s;
}

}  // namespace tierkv::scheduler
