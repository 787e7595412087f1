// AsioClock: the scheduler's Clock on the daemon's io_context — steady_clock time, timers as
// asio steady_timers, run by the server thread like every other handler.
//
// Threads: the io_context's single thread only. Destroying the clock cancels its timers; their
// handlers then do nothing (they never touch the clock after an abort).
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <memory>
#include <unordered_map>

#include "tierkv/scheduler/clock.h"

namespace tierkv::daemon {

class AsioClock final : public scheduler::Clock {
 public:
  explicit AsioClock(boost::asio::io_context& io) : io_(io) {}
  ~AsioClock() override {
    for (auto& [id, t] : timers_) t.timer.cancel();
  }

  int64_t now_ns() const override {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }

  TimerId call_at(int64_t at_ns, Callback fn) override {
    const TimerId id = next_id_++;
    auto [it, inserted] = timers_.try_emplace(id, io_, std::move(fn));
    it->second.timer.expires_at(
        std::chrono::steady_clock::time_point(std::chrono::nanoseconds(at_ns)));
    it->second.timer.async_wait([this, id](const boost::system::error_code& ec) {
      if (ec) return;  // cancelled (possibly with the clock gone): touch nothing
      auto found = timers_.find(id);
      if (found == timers_.end()) return;
      Callback run = std::move(found->second.fn);
      timers_.erase(found);
      run();
    });
    return id;
  }

  void cancel(TimerId id) override {
    auto it = timers_.find(id);
    if (it == timers_.end()) return;
    it->second.timer.cancel();
    timers_.erase(it);
  }

 private:
  struct Timer {
    Timer(boost::asio::io_context& io, Callback f) : timer(io), fn(std::move(f)) {}
    boost::asio::steady_timer timer;
    Callback fn;
  };
  boost::asio::io_context& io_;
  TimerId next_id_ = 1;
  std::unordered_map<TimerId, Timer> timers_;
};

}  // namespace tierkv::daemon
