#include "bench/emulated_engine.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>

namespace tierkv::bench {

namespace {

using Clock = std::chrono::steady_clock;

double ms_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

// Just enough JSON to find a number at a path of object keys: a recursive-descent reader that
// validates what it skips (strings with escapes, numbers, literals, nested arrays and objects).
class JsonPath {
 public:
  explicit JsonPath(const std::string& text) : s_(text) {}

  // The number at keys[0].keys[1]..., or why not.
  Result<double> number_at(std::initializer_list<const char*> keys) {
    pos_ = 0;
    ws();
    for (const char* key : keys) {
      if (!find_member(key))
        return Status::NotFound(std::string("no \"") + key + "\" where expected" + where());
    }
    ws();
    const size_t start = pos_;
    if (!skip_number()) return Status::InvalidArgument("not a number" + where());
    return std::strtod(s_.c_str() + start, nullptr);
  }

 private:
  std::string where() const { return " (at byte " + std::to_string(pos_) + ")"; }
  void ws() {
    while (pos_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[pos_]))) ++pos_;
  }
  bool eat(char c) {
    ws();
    if (pos_ < s_.size() && s_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  bool read_string(std::string* out) {
    if (!eat('"')) return false;
    while (pos_ < s_.size() && s_[pos_] != '"') {
      if (s_[pos_] == '\\') {
        if (++pos_ >= s_.size()) return false;
      }
      if (out != nullptr) out->push_back(s_[pos_]);
      ++pos_;
    }
    return eat('"');
  }
  bool skip_number() {
    const size_t start = pos_;
    while (pos_ < s_.size() && (std::isdigit(static_cast<unsigned char>(s_[pos_])) ||
                                std::strchr("+-.eE", s_[pos_]) != nullptr)) {
      ++pos_;
    }
    return pos_ > start;
  }
  bool skip_value(int depth = 0) {
    if (depth > 64) return false;
    ws();
    if (pos_ >= s_.size()) return false;
    const char c = s_[pos_];
    if (c == '"') return read_string(nullptr);
    if (c == '{' || c == '[') {
      const char close = c == '{' ? '}' : ']';
      ++pos_;
      if (eat(close)) return true;
      do {
        if (c == '{' && (!read_string(nullptr) || !eat(':'))) return false;
        if (!skip_value(depth + 1)) return false;
      } while (eat(','));
      return eat(close);
    }
    for (const char* lit : {"true", "false", "null"}) {
      if (s_.compare(pos_, std::strlen(lit), lit) == 0) {
        pos_ += std::strlen(lit);
        return true;
      }
    }
    return skip_number();
  }
  // Inside the object at pos_, moves to the value of member `key`.
  bool find_member(const char* key) {
    if (!eat('{')) return false;
    if (eat('}')) return false;
    do {
      std::string name;
      if (!read_string(&name) || !eat(':')) return false;
      if (name == key) return true;
      if (!skip_value()) return false;
    } while (eat(','));
    return false;
  }

  const std::string& s_;
  size_t pos_ = 0;
};

}  // namespace

Result<EngineModel> parse_engine_model(const std::string& json, const std::string& origin) {
  JsonPath p(json);
  EngineModel m;
  auto a = p.number_at({"engine_grade_model", "a_ms_per_token"});
  if (!a.ok())
    return Status::InvalidArgument(origin +
                                   ": engine_grade_model.a_ms_per_token: " + a.status().message());
  auto b = p.number_at({"engine_grade_model", "b_ms_per_token2"});
  if (!b.ok())
    return Status::InvalidArgument(origin +
                                   ": engine_grade_model.b_ms_per_token2: " + b.status().message());
  if (!(*a > 0) || !(*b >= 0)) {
    return Status::InvalidArgument(origin + ": engine_grade_model a = " + std::to_string(*a) +
                                   ", b = " + std::to_string(*b) + ": a must be > 0 and b >= 0");
  }
  m.a_ms_per_token = *a;
  m.b_ms_per_token2 = *b;
  return m;
}

Result<EngineModel> load_engine_model(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Status::FromErrno("cannot read engine profile " + path, errno);
  std::stringstream text;
  text << in.rdbuf();
  return parse_engine_model(text.str(), path);
}

// --- EmulatedEngine ------------------------------------------------------------------------------

double EmulatedEngine::chunk_ms(uint32_t chunk, double at_ms) const {
  const uint64_t t = options_.chunk_tokens;
  const double ms = model_.span_ms(t * chunk, t) * options_.compute_scale;
  return at_ms >= options_.slowdown_at_ms ? ms * options_.slowdown_factor : ms;
}

double EmulatedEngine::suffix_ms(uint32_t prefix_chunks, double at_ms) const {
  const double ms =
      model_.span_ms(uint64_t{options_.chunk_tokens} * prefix_chunks, options_.suffix_tokens) *
      options_.compute_scale;
  return at_ms >= options_.slowdown_at_ms ? ms * options_.slowdown_factor : ms;
}

double EmulatedEngine::sleep_from(Clock::time_point origin, Clock::time_point start, double ms) {
  std::this_thread::sleep_until(start + std::chrono::duration_cast<Clock::duration>(
                                            std::chrono::duration<double, std::milli>(ms)));
  return ms_between(origin, Clock::now());
}

Result<EngineRun> EmulatedEngine::run(PrefillSession& s, Clock::time_point begun) const {
  EngineRun run;
  const uint32_t n = s.cached_chunks();
  run.chunks.assign(n, ChunkRecord{});
  run.plan = s.plan();
  double overshoot = 0;
  for (;;) {
    for (uint32_t i : s.take_ready()) {
      ChunkRecord& r = run.chunks[i];
      const proto::PrefillReady* info = s.ready_info(i);
      if (info != nullptr && info->completed_us > 0) {
        r.source = ChunkRecord::Source::kLoaded;
        r.submitted_ms = static_cast<double>(info->submitted_us) / 1000.0;
        r.completed_ms = static_cast<double>(info->completed_us) / 1000.0;
        ++run.loaded;
      } else {
        r.source = ChunkRecord::Source::kHandedOver;
        ++run.handed_over;
      }
      s.release(i);  // an engine would scatter it into its paged KV cache first
    }
    const PrefillSession::Next next = s.next();
    if (next.action == PrefillSession::Action::kDone) break;
    if (next.action == PrefillSession::Action::kWait) {
      TIERKV_RETURN_IF_ERROR(s.wait_ready(options_.wait_timeout));
      continue;
    }
    const Clock::time_point start = Clock::now();
    ChunkRecord& r = run.chunks[next.chunk];
    r.source = ChunkRecord::Source::kComputed;
    r.start_ms = ms_between(begun, start);
    r.asked_ms = chunk_ms(next.chunk, r.start_ms);
    r.end_ms = sleep_from(begun, start, r.asked_ms);
    ++run.computed;
    TIERKV_RETURN_IF_ERROR(s.computed(next.chunk));
    // What the chunk really cost the engine: the sleep's overrun and the report's round trip.
    r.reported_ms = ms_between(begun, Clock::now());
    overshoot += (r.reported_ms - r.start_ms) - r.asked_ms;
  }
  run.prefix_ms = ms_between(begun, Clock::now());
  auto summary = s.end();
  if (!summary.ok()) return summary.status();
  run.summary = *summary;
  run.mean_overshoot_ms = run.computed > 0 ? overshoot / run.computed : 0;
  const Clock::time_point suffix_start = Clock::now();
  run.ttft_ms = sleep_from(begun, suffix_start, suffix_ms(n, ms_between(begun, suffix_start)));
  return run;
}

EngineRun EmulatedEngine::compute_only(uint32_t chunks) const {
  EngineRun run;
  run.chunks.assign(chunks, ChunkRecord{});
  const Clock::time_point begun = Clock::now();
  double overshoot = 0;
  for (uint32_t i = 0; i < chunks; ++i) {
    const Clock::time_point start = Clock::now();
    ChunkRecord& r = run.chunks[i];
    r.source = ChunkRecord::Source::kComputed;
    r.start_ms = ms_between(begun, start);
    r.asked_ms = chunk_ms(i, r.start_ms);
    r.end_ms = r.reported_ms = sleep_from(begun, start, r.asked_ms);
    overshoot += (r.end_ms - r.start_ms) - r.asked_ms;
  }
  run.computed = chunks;
  run.prefix_ms = ms_between(begun, Clock::now());
  run.mean_overshoot_ms = chunks > 0 ? overshoot / chunks : 0;
  const Clock::time_point suffix_start = Clock::now();
  run.ttft_ms = sleep_from(begun, suffix_start, suffix_ms(chunks, ms_between(begun, suffix_start)));
  return run;
}

// --- oracle --------------------------------------------------------------------------------------

ReadTimes read_times_of(const EngineRun& run, double fallback_read_ms) {
  const size_t n = run.chunks.size();
  ReadTimes t;
  t.read_ms.assign(n, 0.0);
  t.resident.assign(n, false);
  // The reads in the order they completed.
  std::vector<size_t> order;
  for (size_t i = 0; i < n; ++i) {
    if (run.chunks[i].source == ChunkRecord::Source::kHandedOver) t.resident[i] = true;
    if (run.chunks[i].source == ChunkRecord::Source::kLoaded) order.push_back(i);
  }
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return run.chunks[a].completed_ms < run.chunks[b].completed_ms;
  });
  double sum = 0;
  double previous = -1;
  for (size_t k = 0; k < order.size(); ++k) {
    const ChunkRecord& r = run.chunks[order[k]];
    const double from = k == 0 ? r.submitted_ms : std::max(r.submitted_ms, previous);
    const double took = std::max(0.0, r.completed_ms - from);
    t.read_ms[order[k]] = took;
    sum += took;
    previous = r.completed_ms;
  }
  t.measured = static_cast<uint32_t>(order.size());
  double mean = fallback_read_ms;
  if (!order.empty()) {
    // The first read waited the fixed latency too: whatever it took beyond a typical transfer
    // (the others', or, alone, the fallback).
    const double first_took = t.read_ms[order[0]];
    const double typical = order.size() > 1
                               ? (sum - first_took) / static_cast<double>(order.size() - 1)
                               : std::min(first_took, fallback_read_ms);
    t.latency_ms = std::max(0.0, first_took - typical);
    t.read_ms[order[0]] = first_took - t.latency_ms;
    mean = (sum - t.latency_ms) / static_cast<double>(order.size());
  }
  for (size_t i = 0; i < n; ++i) {
    if (!t.resident[i] && run.chunks[i].source != ChunkRecord::Source::kLoaded) t.read_ms[i] = mean;
  }
  return t;
}

OracleResult oracle(const EmulatedEngine& engine, const ReadTimes& reads, double overshoot_ms) {
  const auto n = static_cast<uint32_t>(reads.read_ms.size());
  // read[m]: the stream of the non-resident chunks of [m, n).
  std::vector<double> read(n + 1, 0.0);
  for (uint32_t m = n; m-- > 0;)
    read[m] = read[m + 1] + (reads.resident[m] ? 0.0 : reads.read_ms[m]);
  OracleResult best;
  best.ttft_ms = std::numeric_limits<double>::infinity();
  double compute = 0;  // the engine's forward pass over the non-resident chunks of [0, m)
  for (uint32_t m = 0; m <= n; ++m) {
    if (m > 0 && !reads.resident[m - 1]) compute += engine.chunk_ms(m - 1, compute) + overshoot_ms;
    const double stream = read[m] > 0 ? reads.latency_ms + read[m] : 0.0;
    const double prefix = std::max(compute, stream);
    const double ttft = prefix + engine.suffix_ms(n, prefix);
    if (ttft < best.ttft_ms) best = OracleResult{ttft, m, compute, stream};
  }
  return best;
}

}  // namespace tierkv::bench
