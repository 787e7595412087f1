// Test doubles for co-scheduled prefill, all driven by a FakeClock:
//  - FakeTier: a ChunkLoader over an emulated device — per-chunk fixed latency (overlapping) and
//    transfer time (one at a time), at most `depth` reads in flight, injectable failures. It
//    asserts the session's promises: never a read for a chunk the engine has computed or is
//    computing, never two reads of one chunk, never more than `depth` in flight, and it counts
//    slot leases so a test can check that nothing leaks.
//  - FakeEngine: an engine's chunked-prefill loop, event-driven on the clock: computes the lowest
//    chunk it is allowed to (taking compute_ms(chunk, now) of fake time), reports it, waits for
//    news otherwise, and records who covered each chunk.
#pragma once

#include <gtest/gtest.h>

#include <functional>
#include <set>
#include <vector>

#include "tierkv/scheduler/chunk_loader.h"
#include "tierkv/scheduler/clock.h"
#include "tierkv/scheduler/prefill_session.h"

namespace tierkv::scheduler::testing {

inline int64_t ms_to_ns(double ms) { return static_cast<int64_t>(ms * 1e6 + 0.5); }

class FakeTier final : public ChunkLoader {
 public:
  // transfer_ms[i] and latency_ms[i] for each chunk of the prefix.
  FakeTier(FakeClock& clock, std::vector<double> transfer_ms, std::vector<double> latency_ms,
           uint32_t depth, uint64_t chunk_bytes)
      : clock_(clock),
        transfer_ms_(std::move(transfer_ms)),
        latency_ms_(std::move(latency_ms)),
        depth_(depth),
        chunk_bytes_(chunk_bytes),
        submitted_(transfer_ms_.size(), 0),
        timers_(transfer_ms_.size(), 0) {}

  // Reads of these chunks fail (after taking their time).
  std::set<uint32_t> fail;
  // Chunks hand_over() refuses (they left host RAM).
  std::set<uint32_t> gone;
  // Set by the test: true when the engine computed or is computing the chunk.
  std::function<bool(uint32_t)> engine_touched;

  void bind(LoadSink* sink) override { sink_ = sink; }

  void submit(uint32_t chunk) override {
    EXPECT_LT(chunk, submitted_.size());
    if (chunk >= submitted_.size()) return;
    EXPECT_EQ(submitted_[chunk], 0) << "a second read of chunk " << chunk;
    if (engine_touched) {
      EXPECT_FALSE(engine_touched(chunk))
          << "read submitted for chunk " << chunk << ", which the engine computed or is computing";
    }
    ++submitted_[chunk];
    order.push_back(chunk);
    ++in_flight_;
    max_in_flight = std::max(max_in_flight, in_flight_);
    EXPECT_LE(in_flight_, depth_) << "more reads in flight than the queue depth";
    const double now = clock_.now_ms();
    const double start = std::max(now + latency_ms_[chunk], bus_free_ms_);
    bus_free_ms_ = start + transfer_ms_[chunk];
    timers_[chunk] = clock_.call_at(ms_to_ns(bus_free_ms_), [this, chunk] { complete(chunk); });
  }

  Result<proto::SlotRef> hand_over(uint32_t chunk) override {
    if (gone.count(chunk)) return Status::NotFound("gone");
    ++leases;
    ++handed_over;
    return slot_of(chunk);
  }

  void release(uint32_t chunk, const proto::SlotRef& slot) override {
    EXPECT_EQ(slot.slot, slot_of(chunk).slot) << "released the wrong slot for chunk " << chunk;
    EXPECT_GT(leases, 0) << "released more slots than were leased";
    --leases;
  }

  void cancel_all() override {
    for (size_t i = 0; i < timers_.size(); ++i) {
      if (timers_[i] != 0) {
        clock_.cancel(timers_[i]);
        timers_[i] = 0;
        ++cancelled;
      }
    }
    in_flight_ = 0;
  }

  proto::SlotRef slot_of(uint32_t chunk) const {
    return proto::SlotRef{1000 + chunk, 0, uint64_t{chunk} * chunk_bytes_, chunk_bytes_};
  }

  std::vector<uint32_t> order;  // chunks in submission order
  uint32_t max_in_flight = 0;
  int64_t leases = 0;
  uint32_t handed_over = 0;
  uint32_t cancelled = 0;

 private:
  void complete(uint32_t chunk) {
    timers_[chunk] = 0;
    --in_flight_;
    if (fail.count(chunk)) {
      sink_->on_loaded(chunk, Status::IoError("chunk " + std::to_string(chunk) + ": EIO"),
                       clock_.now_ns());
      return;
    }
    ++leases;
    sink_->on_loaded(chunk, slot_of(chunk), clock_.now_ns());
  }

  FakeClock& clock_;
  std::vector<double> transfer_ms_, latency_ms_;
  uint32_t depth_;
  uint64_t chunk_bytes_;
  std::vector<int> submitted_;
  std::vector<Clock::TimerId> timers_;
  LoadSink* sink_ = nullptr;
  uint32_t in_flight_ = 0;
  double bus_free_ms_ = 0;
};

class FakeEngine {
 public:
  using ComputeMs = std::function<double(uint32_t chunk, double now_ms)>;

  FakeEngine(FakeClock& clock, PrefillSession& session, ComputeMs compute_ms)
      : clock_(clock),
        session_(session),
        compute_ms_(std::move(compute_ms)),
        n_(session.chunks()),
        present_(n_, 0),
        loaded_(n_, 0),
        computed_(n_, 0) {}

  // Takes the first progress (the begin reply) and starts the loop.
  void start() {
    take();
    step();
  }
  bool touched(uint32_t chunk) const {
    return computed_[chunk] > 0 || computing_ == int64_t{chunk};
  }

  bool done() const { return done_; }
  double met_ms() const { return met_ms_; }
  const std::vector<int>& loaded() const { return loaded_; }
  const std::vector<int>& computed() const { return computed_; }
  const std::set<uint32_t>& failed() const { return failed_; }
  uint32_t computed_count() const { return computed_total_; }
  // What really happened, per chunk: compute time of computed chunks.
  const std::vector<double>& compute_took() const { return took_; }

 private:
  void take() {
    session_.take_progress(progress_);
    grant_end_ = progress_.grant_end;
    for (const auto& r : progress_.ready) {
      EXPECT_LT(r.chunk, n_);
      EXPECT_EQ(present_[r.chunk], 0) << "chunk " << r.chunk << " delivered twice or after compute";
      present_[r.chunk] = 1;
      ++loaded_[r.chunk];
    }
    for (uint32_t f : progress_.failed) failed_.insert(f);
    if (progress_.met) met_ = true;
  }

  void step() {
    if (met_) {
      EXPECT_EQ(std::count(present_.begin(), present_.end(), 1), static_cast<long>(n_));
      done_ = true;
      met_ms_ = clock_.now_ms();
      return;
    }
    uint32_t f = 0;
    while (f < n_ && present_[f]) ++f;
    ASSERT_LT(f, n_) << "every chunk is present but the session did not say met";
    if (f < grant_end_ || failed_.count(f)) {
      computing_ = f;
      const double ms = compute_ms_(f, clock_.now_ms());
      if (took_.empty()) took_.assign(n_, 0.0);
      took_[f] = ms;
      clock_.call_at(clock_.now_ns() + ms_to_ns(ms), [this, f] { on_computed(f); });
      return;
    }
    if (session_.has_news()) {
      clock_.call_at(clock_.now_ns(), [this] {
        take();
        step();
      });
      return;
    }
    session_.notify_once([this] {
      take();
      step();
    });
  }

  void on_computed(uint32_t f) {
    computing_ = -1;
    const Status s = session_.computed(f);
    EXPECT_TRUE(s.ok()) << s.to_string();
    present_[f] = 1;
    ++computed_[f];
    ++computed_total_;
    take();
    step();
  }

  FakeClock& clock_;
  PrefillSession& session_;
  ComputeMs compute_ms_;
  uint32_t n_;
  std::vector<int> present_, loaded_, computed_;
  std::vector<double> took_;
  std::set<uint32_t> failed_;
  proto::PrefillProgress progress_;
  uint32_t grant_end_ = 0;
  int64_t computing_ = -1;
  uint32_t computed_total_ = 0;
  bool met_ = false;
  bool done_ = false;
  double met_ms_ = 0;
};

}  // namespace tierkv::scheduler::testing
