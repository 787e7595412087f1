// Clock: the time source and timer service the prefill co-scheduler runs on.
//
// Everything in the co-scheduler that reads the time or waits for it goes through a Clock, so the
// same code runs on the daemon's event loop (an asio-backed clock, daemon/) and, in tests, on a
// FakeClock that only moves when the test says so: no sleeps, and every run is the same.
//
// Threads: a Clock belongs to one thread (the daemon's server thread); timers run on it, never
// inside call_at() itself.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <utility>

namespace tierkv::scheduler {

class Clock {
 public:
  using TimerId = uint64_t;
  using Callback = std::function<void()>;

  virtual ~Clock() = default;
  // Monotonic nanoseconds; only differences mean anything.
  virtual int64_t now_ns() const = 0;
  // Runs `fn` once, at or after `at_ns`, on the owning thread (never from inside call_at).
  virtual TimerId call_at(int64_t at_ns, Callback fn) = 0;
  // Cancels a timer that has not run yet; a no-op for one that has run or was cancelled.
  virtual void cancel(TimerId id) = 0;

  double now_ms() const { return static_cast<double>(now_ns()) / 1e6; }
};

// A clock that moves only when told. Timers due at the same instant run in the order they were
// set. Thread safety: none (one test thread).
class FakeClock final : public Clock {
 public:
  explicit FakeClock(int64_t start_ns = 0) : now_(start_ns) {}

  int64_t now_ns() const override { return now_; }
  TimerId call_at(int64_t at_ns, Callback fn) override {
    const TimerId id = next_id_++;
    timers_.emplace(std::make_pair(at_ns < now_ ? now_ : at_ns, id), std::move(fn));
    return id;
  }
  void cancel(TimerId id) override {
    for (auto it = timers_.begin(); it != timers_.end(); ++it) {
      if (it->first.second == id) {
        timers_.erase(it);
        return;
      }
    }
  }

  // Runs every timer due at or before `t` (in time order, the clock reading each one's time),
  // including timers those timers set, then leaves the clock at `t`.
  void advance_to(int64_t t) {
    while (!timers_.empty() && timers_.begin()->first.first <= t) run_first();
    if (t > now_) now_ = t;
  }
  void advance_by(int64_t dt) { advance_to(now_ + dt); }
  // Jumps to the earliest timer and runs it. False when no timer is set.
  bool run_next() {
    if (timers_.empty()) return false;
    run_first();
    return true;
  }
  bool has_timers() const { return !timers_.empty(); }
  int64_t next_timer_ns() const {
    return timers_.empty() ? INT64_MAX : timers_.begin()->first.first;
  }
  size_t pending_timers() const { return timers_.size(); }

 private:
  void run_first() {
    auto it = timers_.begin();
    now_ = it->first.first;
    Callback fn = std::move(it->second);
    timers_.erase(it);
    fn();
  }

  int64_t now_;
  TimerId next_id_ = 1;
  std::map<std::pair<int64_t, TimerId>, Callback> timers_;
};

}  // namespace tierkv::scheduler
