#include "tierkv/scheduler/prefill_planner.h"

#include <algorithm>
#include <cmath>
#include <string>

namespace tierkv::scheduler {

// --- ComputeProfile ------------------------------------------------------------------------------

double ComputeProfile::chunk_ms(uint64_t prefix_tokens, uint32_t chunk_tokens) const {
  const double c = chunk_tokens;
  if (table.empty()) {
    return a_ms_per_token * c + b_ms_per_token2 * c * (static_cast<double>(prefix_tokens) + c / 2);
  }
  const double x = static_cast<double>(prefix_tokens);
  double ms = table.front().chunk_ms;
  if (table.size() >= 2 && x > table.front().prefix_tokens) {
    size_t hi = 1;
    while (hi + 1 < table.size() && table[hi].prefix_tokens < x) ++hi;
    const Point& p0 = table[hi - 1];
    const Point& p1 = table[hi];
    const double slope = (p1.chunk_ms - p0.chunk_ms) / (p1.prefix_tokens - p0.prefix_tokens);
    ms = p0.chunk_ms + slope * (x - p0.prefix_tokens);
    // Past the last point: along the last segment, but never below the last measurement.
    if (x > p1.prefix_tokens && ms < p1.chunk_ms) ms = p1.chunk_ms;
  }
  const double scale = table_chunk_tokens == 0 ? 1.0 : c / table_chunk_tokens;
  return std::max(0.0, ms * scale);
}

double ComputeProfile::span_ms(uint64_t start_tokens, uint64_t tokens,
                               uint32_t chunk_tokens) const {
  if (tokens == 0) return 0;
  if (table.empty()) {
    // The chunk sum is exact in closed form: a*N + b*N*(L + N/2).
    const double n = static_cast<double>(tokens);
    return a_ms_per_token * n + b_ms_per_token2 * n * (static_cast<double>(start_tokens) + n / 2);
  }
  double total = 0;
  uint64_t done = 0;
  while (done < tokens) {
    const uint64_t c = std::min<uint64_t>(chunk_tokens == 0 ? tokens : chunk_tokens, tokens - done);
    total += chunk_ms(start_tokens + done, static_cast<uint32_t>(c));
    done += c;
  }
  return total;
}

Status ComputeProfile::validate() const {
  auto bad = [](double v) { return !std::isfinite(v) || v < 0; };
  if (bad(a_ms_per_token)) {
    return Status::InvalidArgument("profile a_ms_per_token = " + std::to_string(a_ms_per_token) +
                                   " must be finite and >= 0");
  }
  if (bad(b_ms_per_token2)) {
    return Status::InvalidArgument("profile b_ms_per_token2 = " + std::to_string(b_ms_per_token2) +
                                   " must be finite and >= 0");
  }
  if (!table.empty() && table_chunk_tokens == 0) {
    return Status::InvalidArgument(
        "profile table: table_chunk_tokens must be set (the chunk size "
        "the table was measured with)");
  }
  for (size_t i = 0; i < table.size(); ++i) {
    if (bad(table[i].prefix_tokens) || bad(table[i].chunk_ms)) {
      return Status::InvalidArgument("profile table[" + std::to_string(i) +
                                     "]: values must be finite and >= 0");
    }
    if (i > 0 && table[i].prefix_tokens <= table[i - 1].prefix_tokens) {
      return Status::InvalidArgument("profile table[" + std::to_string(i) +
                                     "].prefix_tokens = " + std::to_string(table[i].prefix_tokens) +
                                     " does not ascend from the point before it");
    }
  }
  return Status::Ok();
}

// --- ComputeProfileFitter ------------------------------------------------------------------------

void ComputeProfileFitter::add(uint64_t prefix_tokens, uint32_t chunk_tokens, double chunk_ms) {
  if (chunk_tokens == 0 || !std::isfinite(chunk_ms) || chunk_ms < 0) return;
  // One chunk size per fitter (a namespace has one); a change of size starts over.
  if (n_ > 0 && chunk_tokens != chunk_tokens_) reset();
  chunk_tokens_ = chunk_tokens;
  const double x = static_cast<double>(prefix_tokens);
  ++n_;
  sx_ += x;
  sy_ += chunk_ms;
  sxx_ += x * x;
  sxy_ += x * chunk_ms;
}

bool ComputeProfileFitter::fit(ComputeProfile& out, size_t min_samples) const {
  if (n_ == 0 || n_ < min_samples) return false;
  const double n = static_cast<double>(n_);
  const double c = chunk_tokens_;
  const double var = sxx_ - sx_ * sx_ / n;
  double beta = 0;
  // A spread of prefix lengths below one chunk says nothing about the slope.
  if (var > c * c * n / 4) beta = (sxy_ - sx_ * sy_ / n) / var;
  if (beta < 0) beta = 0;
  const double alpha = (sy_ - beta * sx_) / n;
  // t(L) = alpha + beta*L = a*c + b*c*(L + c/2)  =>  b = beta/c, a = (alpha - b*c*c/2)/c.
  const double b = beta / c;
  const double a = std::max(0.0, (alpha - b * c * c / 2) / c);
  out = ComputeProfile{};
  out.a_ms_per_token = a;
  out.b_ms_per_token2 = b;
  return true;
}

// --- TierCostModel -------------------------------------------------------------------------------

TierCostModel::TierCostModel(const TierCostOptions& o) : weight_(o.ema_weight) {
  costs_[static_cast<size_t>(proto::Tier::kNone)] = TierCost{false, 1.0, 0};
  costs_[static_cast<size_t>(proto::Tier::kGpu)] = o.gpu;
  costs_[static_cast<size_t>(proto::Tier::kHost)] = o.host;
  costs_[static_cast<size_t>(proto::Tier::kNvme)] = o.nvme;
  costs_[static_cast<size_t>(proto::Tier::kRemote)] = o.remote;
}

void TierCostModel::record_read(proto::Tier tier, uint64_t bytes, double latency_ms,
                                double service_ms) {
  const size_t t = index(tier);
  TierCost& c = costs_[t];
  ++samples_[t];
  // The first measurement replaces the prior outright; later ones move the average.
  auto blend = [&](double& avg, double sample, bool& measured) {
    avg = measured ? (1 - weight_) * avg + weight_ * sample : sample;
    measured = true;
  };
  if (service_ms > 0 && bytes > 0) {
    const double gbps = static_cast<double>(bytes) / (service_ms * 1e6);
    if (std::isfinite(gbps) && gbps > 0) blend(c.read_GBps, gbps, bw_measured_[t]);
  } else if (service_ms < 0 && latency_ms >= 0) {
    const double fixed_us = std::max(0.0, latency_ms - c.transfer_ms(bytes)) * 1000.0;
    blend(c.latency_us, fixed_us, lat_measured_[t]);
  }
}

// --- LoadStream ----------------------------------------------------------------------------------

LoadStream::LoadStream(uint32_t depth) : done_(std::max<uint32_t>(depth, 1), 0.0) {}

double LoadStream::add(double earliest_ms, double latency_ms, double transfer_ms) {
  // A queue slot frees when the read `depth` places ahead completes (completions are in order).
  const double slot_free = count_ >= done_.size() ? done_[count_ % done_.size()] : 0.0;
  const double submit = std::max(earliest_ms, slot_free);
  const double start = std::max(submit + latency_ms, end_);
  end_ = start + transfer_ms;
  done_[count_ % done_.size()] = end_;
  ++count_;
  return end_;
}

// --- planner -------------------------------------------------------------------------------------

namespace {

// Everything both plan_prefill and predict_splits need, computed once.
struct Splits {
  std::vector<double> ttft;  // per m in [0, n]
  double compute_all = 0;    // every chunk computed, resident ones too
  double suffix = 0;
  uint32_t resident = 0;
  double min_transfer = 0;  // smallest transfer of a non-resident chunk (0 if none)
  double max_latency = 0;
};

Splits evaluate(const PlannerInput& in, const ComputeProfile& profile, const TierCostModel& costs) {
  const size_t n = in.tiers.size();
  Splits s;
  s.ttft.assign(n + 1, 0.0);
  // compute[m]: the engine's time for the non-resident chunks of [0, m).
  std::vector<double> compute(n + 1, 0.0);
  for (size_t i = 0; i < n; ++i) {
    const double c =
        profile.chunk_ms(uint64_t{in.chunk_tokens} * i, in.chunk_tokens) * in.compute_scale;
    s.compute_all += c;
    const bool resident = costs.cost(in.tiers[i]).resident;
    s.resident += resident ? 1 : 0;
    compute[i + 1] = compute[i] + (resident ? 0.0 : c);
  }
  s.suffix = profile.span_ms(uint64_t{in.chunk_tokens} * n, in.suffix_tokens, in.chunk_tokens) *
             in.compute_scale;
  // load[m]: the stream of the non-resident chunks of [m, n), read from n-1 down, done.
  LoadStream stream(in.queue_depth);
  double load = 0;
  s.min_transfer = 0;
  for (size_t m = n + 1; m-- > 0;) {
    if (m < n) {
      const TierCost& tc = costs.cost(in.tiers[m]);
      if (!tc.resident) {
        const double t = tc.transfer_ms(in.chunk_bytes);
        load = stream.add(0.0, tc.latency_ms(), t);
        s.min_transfer = s.min_transfer == 0 ? t : std::min(s.min_transfer, t);
        s.max_latency = std::max(s.max_latency, tc.latency_ms());
      }
    }
    s.ttft[m] = std::max(compute[m], load) + s.suffix;
  }
  return s;
}

}  // namespace

void predict_splits(const PlannerInput& in, const ComputeProfile& profile,
                    const TierCostModel& costs, std::vector<double>& ttft_ms) {
  ttft_ms = evaluate(in, profile, costs).ttft;
}

PrefillPlan plan_prefill(const PlannerInput& in, const ComputeProfile& profile,
                         const TierCostModel& costs) {
  const Splits s = evaluate(in, profile, costs);
  const auto n = static_cast<uint32_t>(in.tiers.size());
  PrefillPlan p;
  p.chunks = n;
  p.resident_chunks = s.resident;
  p.suffix_ms = s.suffix;
  p.compute_only_ms = s.compute_all + s.suffix;
  p.load_only_ms = s.ttft[0];
  // Least TTFT; a tie goes to the larger m (fewer reads). The tolerance absorbs rounding only.
  uint32_t best = n;
  for (uint32_t m = n; m-- > 0;) {
    if (s.ttft[m] < s.ttft[best] - 1e-9 * std::max(1.0, s.ttft[best])) best = m;
  }
  p.meeting_point = best;
  p.bidir_ms = s.ttft[best];
  for (uint32_t i = best; i < n; ++i) p.load_chunks += costs.cost(in.tiers[i]).resident ? 0 : 1;
  p.loading_helps = p.load_chunks > 0;
  // Enough reads in flight to hide the fixed latency behind transfers, plus one for jitter.
  uint32_t depth = 1;
  if (s.min_transfer > 0)
    depth = static_cast<uint32_t>(std::ceil(s.max_latency / s.min_transfer)) + 2;
  p.queue_depth = std::clamp<uint32_t>(depth, 1, std::max<uint32_t>(in.queue_depth, 1));
  return p;
}

}  // namespace tierkv::scheduler
