// PrefillSession: one co-scheduled prefill of one prompt's cached prefix ("Cake").
//
// The engine computes the prefix from the front while the session loads it from the back, and the
// two fronts meet where the planner (prefill_planner.h) predicts that the prefix is ready soonest.
// The session follows what really happens, never a stale plan: it re-decides on every event (an
// engine report, a finished read) from the measured progress of both sides.
//
// Ownership of each prefix chunk, which makes "computed or loaded, exactly once" hold by design:
//  - resident chunks (already in host RAM) are handed over at start();
//  - the engine is *granted* chunks from the front, `compute_lookahead` at a time; it may compute
//    only a granted chunk (or one whose load failed), and the daemon rejects any other report;
//  - the loader *claims* chunks from the back, one per read submitted, only among chunks never
//    granted: before each submission it checks that the chunk is still ahead of the grant and that
//    its read is predicted to finish before the engine, working from its real position and speed,
//    would have computed its way there. A chunk is never granted once claimed, nor claimed once
//    granted, so no load is ever submitted for a chunk the engine computes.
//  - a read that fails (I/O error, checksum mismatch, chunk gone) turns its chunk into one the
//    engine must compute: it is reported in `failed`, and computing it is then allowed.
// The fronts have met when every chunk is computed or delivered. Before the engine runs out of
// granted work the session grants the next chunk, unless the reads still to come are predicted to
// cover it sooner; whenever nothing is in flight and the engine would be idle it grants anyway, so
// the session always makes progress.
//
// Compute speed: each report of a chunk computed back to back measures the engine against its
// profile; a moving average of that ratio (of the median of the last three, so that one stalled
// chunk does not swing it) scales every prediction, so a GPU shared with other work (slower than
// its profile) gets more chunks loaded, a faster one fewer.
//
// Threads: owned by one thread (the daemon's server thread, or a test); the loader's completions
// arrive on it. Nothing is allocated per chunk after start().
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <vector>

#include "tierkv/prefill_protocol.h"
#include "tierkv/scheduler/chunk_loader.h"
#include "tierkv/scheduler/clock.h"
#include "tierkv/scheduler/prefill_planner.h"

namespace tierkv::scheduler {

struct PrefillSessionOptions {
  uint64_t chunk_bytes = 0;
  uint32_t chunk_tokens = 0;
  uint64_t suffix_tokens = 0;
  uint32_t queue_depth = 8;        // reads in flight at most (the plan may ask for fewer)
  uint32_t compute_lookahead = 1;  // chunks the engine holds granted at once
  // proto::kAutoMeetingPoint: decide and adapt. Otherwise grant [0, m) at start and load every
  // non-resident chunk from m on (baselines and tests).
  uint32_t meeting_point = proto::kAutoMeetingPoint;
  double initial_compute_scale = 1.0;  // the engine's last measured time over its profile's
  double compute_weight = 0.3;         // weight of the newest sample in the speed average
};

class PrefillSession final : public LoadSink {
 public:
  enum class ChunkState : uint8_t {
    kUnassigned,  // neither side's yet
    kGranted,     // the engine's to compute
    kComputed,
    kLoading,  // claimed: a read is in flight
    kLoaded,   // delivered (or ready to deliver) in a leased slot
    kFailed,   // its read failed: the engine's to compute
  };

  // `loader` must outlive the session; `costs` and `fitter` (may be null) too: the session
  // records each read in `costs` and each measured chunk time in `fitter`.
  PrefillSession(const PrefillSessionOptions& options, Clock& clock, ChunkLoader& loader,
                 TierCostModel& costs, const ComputeProfile& profile,
                 std::span<const proto::Tier> tiers, ComputeProfileFitter* fitter = nullptr);
  ~PrefillSession() override;
  PrefillSession(const PrefillSession&) = delete;
  PrefillSession& operator=(const PrefillSession&) = delete;

  // Plans, hands over resident chunks, grants the engine its first chunks, submits first reads.
  void start();

  // The engine computed `chunk`. Errors (the session is unchanged): out of range, already
  // reported, or not the engine's — the last counts a wasted load when the chunk was claimed.
  Status computed(uint32_t chunk);
  // The engine is done reading delivered `chunk`: its slot is given back now, not at the end.
  Status release(uint32_t chunk);
  // Moves the news since the last call into `out` (its vectors are reused).
  void take_progress(proto::PrefillProgress& out);
  // True when take_progress() would report something new.
  bool has_news() const;
  // Called (on the owning thread) whenever news arrives from a read; cleared by the first call.
  void notify_once(std::function<void()> fn) { notify_ = std::move(fn); }

  // Ends the session: stops the reads in flight and releases every slot it holds. A session ended
  // before its fronts met counts as cancelled.
  void end(bool cancel);

  bool met() const { return met_; }
  bool ended() const { return ended_; }
  uint32_t chunks() const { return n_; }
  const PrefillPlan& plan() const { return plan_; }
  double compute_scale() const { return speed_; }
  ChunkState state(uint32_t chunk) const { return state_[chunk]; }
  uint32_t grant_end() const { return grant_ptr_; }
  uint32_t load_front() const { return load_front_; }
  uint32_t in_flight() const { return in_flight_; }
  // Counters and times so far.
  proto::PrefillSummary summary() const;
  uint32_t wasted_loads() const { return wasted_; }

  // LoadSink
  void on_loaded(uint32_t chunk, const Result<proto::SlotRef>& slot, int64_t completed_ns) override;

 private:
  double now_ms() const { return clock_.now_ms(); }
  double chunk_ms(uint32_t i) const { return base_ms_[i] * speed_; }
  uint64_t since_begin_us(int64_t ns) const {
    return ns <= begin_ns_ ? 0 : static_cast<uint64_t>((ns - begin_ns_) / 1000);
  }
  // Re-decides grants and claims after any event.
  void pump();
  void grant(uint32_t chunk);
  void top_up_grant();
  // True when the unassigned chunks from the grant pointer on are better left to the reads.
  bool hold_grant() const;
  // The highest unassigned chunk (the loader's next), or n_ when none.
  uint32_t next_claim();
  bool worth_loading(uint32_t chunk) const;
  void claim(uint32_t chunk);
  // When the engine would finish computing `chunk`, computing every unassigned chunk up to it.
  double engine_finish_ms(uint32_t chunk) const;
  double read_finish_ms(uint32_t chunk) const;
  void news();
  // Turns a finished read into cost samples for its tier.
  void measure_read(uint32_t chunk, int64_t completed_ns);
  void flush_reads();

  PrefillSessionOptions options_;
  Clock& clock_;
  ChunkLoader& loader_;
  TierCostModel& costs_;
  ComputeProfile profile_;
  ComputeProfileFitter* fitter_;
  uint32_t n_;
  std::vector<proto::Tier> tiers_;
  PrefillPlan plan_;

  // Per chunk.
  std::vector<ChunkState> state_;
  std::vector<uint8_t> resident_;   // handed over at start
  std::vector<uint8_t> sent_;       // its ready event went out
  std::vector<uint8_t> busy_read_;  // another read was in flight when it was submitted
  std::vector<proto::SlotRef> slot_;
  std::vector<uint8_t> holds_slot_;
  std::vector<double> base_ms_;  // profile time of each chunk (unscaled)
  std::vector<double> cum_ms_;   // prefix sums of base_ms_ over non-resident chunks
  std::vector<int64_t> submitted_ns_;
  std::vector<int64_t> granted_ns_;
  std::vector<double> predicted_done_ms_;

  // Events not yet taken.
  std::vector<proto::PrefillReady> ready_;
  std::vector<uint32_t> failed_;
  uint32_t reported_grant_ = 0;
  bool reported_met_ = false;
  std::function<void()> notify_;

  uint32_t grant_ptr_ = 0;     // every chunk below is granted, computed or handed over
  uint32_t claim_ptr_ = 0;     // every chunk at or above is not unassigned
  uint32_t load_front_ = 0;    // lowest claimed chunk (n_ when none)
  uint32_t granted_open_ = 0;  // granted, not yet computed
  uint32_t failed_open_ = 0;   // failed, not yet computed
  uint32_t in_flight_ = 0;
  uint32_t depth_ = 1;  // reads in flight at most: the plan's depth, within the options'
  std::array<uint32_t, 5> unassigned_{};  // unassigned non-resident chunks per tier
  uint32_t forced_m_ = proto::kAutoMeetingPoint;
  double open_work_ms_ = 0;    // profile time of the engine's granted and failed chunks
  double engine_free_ms_ = 0;  // when the engine is predicted to finish that work
  double stream_end_ms_ = 0;   // when the reads in flight are predicted to finish
  double speed_ = 1.0;
  std::array<double, 3> recent_ratio_{};  // the engine's last measured time over its profile's
  size_t recent_count_ = 0;
  int64_t begin_ns_ = 0;
  int64_t last_report_ns_ = 0;
  int64_t last_completion_ns_ = 0;  // Clock time the last read was delivered
  int64_t last_read_done_ns_ = 0;   // the tier's time the last read finished
  // Reads completed behind others, not yet turned into a bandwidth sample.
  static constexpr int64_t kMinReadSampleNs = 1'000'000;
  proto::Tier batch_tier_ = proto::Tier::kNone;
  int64_t batch_start_ns_ = 0;
  int64_t batch_end_ns_ = 0;
  uint64_t batch_bytes_ = 0;
  uint32_t batch_reads_ = 0;
  int64_t met_ns_ = 0;
  int64_t end_ns_ = 0;
  bool started_ = false;
  bool met_ = false;
  bool ended_ = false;
  bool cancelled_ = false;

  uint32_t done_ = 0;
  uint32_t handed_over_ = 0;
  uint32_t loaded_ = 0;
  uint32_t computed_ = 0;
  uint32_t failed_count_ = 0;
  uint32_t wasted_ = 0;
};

}  // namespace tierkv::scheduler
