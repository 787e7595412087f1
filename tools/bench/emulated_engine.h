// EmulatedEngine: an inference engine's chunked prefill, emulated for the co-scheduling benchmark
// ("tierkv-bench cake"): it drives a PrefillSession through the client library exactly as an
// engine would, but "computes" a chunk by sleeping for the time the engine's compute profile gives
// (the measured engine_grade_model of tools/bench/data/h100-llama8b-profile.json, scaled). It
// sleeps rather than spins: the machine's cores belong to the daemon under test.
//
// It can slow down part-way (a GPU that starts sharing with other requests), and it records what
// happened to every chunk, from which oracle() computes afterwards the best split that was
// possible: the forward compute of the engine as it behaved, against the backward stream of reads
// with the per-chunk read times the daemon measured.
//
// Thread safety: one engine per thread; run() blocks that thread for the prefill's duration.
#pragma once

#include <chrono>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "tierkv/prefill.h"
#include "tierkv/status.h"

namespace tierkv::bench {

// t(L, c) = a*c + b*c*(L + c/2) ms: the time of c tokens after a prefix of L tokens.
struct EngineModel {
  double a_ms_per_token = 0.02942;
  double b_ms_per_token2 = 7.97e-07;
  double span_ms(uint64_t prefix_tokens, uint64_t tokens) const {
    const double c = static_cast<double>(tokens);
    return a_ms_per_token * c + b_ms_per_token2 * c * (static_cast<double>(prefix_tokens) + c / 2);
  }
};

// Reads engine_grade_model {a_ms_per_token, b_ms_per_token2} from a profile JSON file.
Result<EngineModel> load_engine_model(const std::string& path);
// The same from JSON text; `origin` names it in errors.
Result<EngineModel> parse_engine_model(const std::string& json, const std::string& origin);

struct EngineOptions {
  uint32_t chunk_tokens = 256;
  double compute_scale = 1.0;  // emulated time = model time x this
  // From this time on (ms since the prefill began), every chunk takes slowdown_factor x longer.
  double slowdown_at_ms = std::numeric_limits<double>::infinity();
  double slowdown_factor = 1.0;
  uint64_t suffix_tokens = 0;                    // computed after the prefix; part of the TTFT
  std::chrono::microseconds wait_timeout{2000};  // longest single wait for loads
};

struct ChunkRecord {
  enum class Source : uint8_t { kNone, kComputed, kLoaded, kHandedOver };
  Source source = Source::kNone;
  // Computed: when it started and ended, and when its report was answered (ms since the prefill
  // began); the sleep asked for.
  double start_ms = 0, end_ms = 0, reported_ms = 0;
  double asked_ms = 0;
  // Loaded: the daemon's read, ms since its session began.
  double submitted_ms = 0, completed_ms = 0;
};

struct EngineRun {
  double prefix_ms = 0;  // begin to every prefix chunk computed or delivered
  double ttft_ms = 0;    // and the suffix computed
  uint32_t computed = 0, loaded = 0, handed_over = 0;
  // What a computed chunk cost beyond its compute time, on average: the sleep's overrun and the
  // computed() round trip (what the oracle charges every computed chunk).
  double mean_overshoot_ms = 0;
  std::vector<ChunkRecord> chunks;
  proto::PrefillPlanInfo plan;
  proto::PrefillSummary summary;
};

class EmulatedEngine {
 public:
  EmulatedEngine(EngineModel model, EngineOptions options) : model_(model), options_(options) {}

  // Compute time of chunk `chunk` started `at_ms` after the prefill began.
  double chunk_ms(uint32_t chunk, double at_ms) const;
  // The suffix after `prefix_chunks` cached chunks, started at `at_ms`.
  double suffix_ms(uint32_t prefix_chunks, double at_ms) const;
  const EngineOptions& options() const { return options_; }

  // Drives a begun session until the fronts meet (sleeping for each chunk it computes, waiting
  // for loads otherwise), ends it, then computes the suffix. `begun` is when begin() was called.
  Result<EngineRun> run(PrefillSession& session, std::chrono::steady_clock::time_point begun) const;
  // No cache at all: computes all `chunks` chunks, then the suffix.
  EngineRun compute_only(uint32_t chunks) const;

 private:
  // Sleeps `ms` from `start`; returns when it woke, in ms since `origin`.
  static double sleep_from(std::chrono::steady_clock::time_point origin,
                           std::chrono::steady_clock::time_point start, double ms);

  EngineModel model_;
  EngineOptions options_;
};

// Per-chunk read times of a run: the stream time each read took (its completion minus the later
// of its submission and the previous completion), the mean of those for chunks that were not read,
// 0 for chunks handed over; and the fixed latency before the first transfer.
struct ReadTimes {
  std::vector<double> read_ms;
  std::vector<bool> resident;
  double latency_ms = 0;
  uint32_t measured = 0;  // reads the figures come from
};
ReadTimes read_times_of(const EngineRun& run, double fallback_read_ms);

struct OracleResult {
  double ttft_ms = 0;
  uint32_t meeting_point = 0;  // compute [0, m), read [m, n)
  double compute_ms = 0;       // of the prefix at that split
  double read_ms = 0;
};
// The best split afterwards: for every m, the engine computes the non-resident chunks of [0, m)
// one after another from time 0 (as `engine` computes, slowdown included, plus `overshoot_ms` per
// chunk) while the reads of the non-resident chunks of [m, n) run back to back from n-1 down,
// after `latency_ms`; the prefix is ready when both are done, then the suffix. Least TTFT wins.
OracleResult oracle(const EmulatedEngine& engine, const ReadTimes& reads, double overshoot_ms = 0);

}  // namespace tierkv::bench
