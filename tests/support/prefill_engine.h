// Co-scheduled prefill (tierkv/prefill.h) through a real tierkvd, for the daemon's integration
// tests: a fixture holding the daemon and one client of it; the chunked-prefill loop an engine
// runs, recording how each chunk was covered and checking every delivered byte; and a client
// process (tests/daemon/prefill_client.cc) that dies mid-session. Header only; needs
// tierkv_client, tierkv_test_support and GoogleTest. Thread safety: the test's thread only.
#pragma once

#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "support/process.h"
#include "support/test_daemon.h"
#include "tierkv/client.h"
#include "tierkv/prefill.h"

namespace tierkv::testing {

// A real tierkvd, one client of it (client_) and a namespace registered through it (ns_).
class PrefillDaemonTest : public ::testing::Test {
 protected:
  // Starts daemon_; fails the test (fatally) if it does not start.
  void start_daemon(const TestDaemonOptions& options) {
    auto d = TestDaemon::start(options);
    ASSERT_TRUE(d.ok()) << d.status().to_string();
    daemon_ = std::move(d).value();
  }

  // Connects client_ as `client_name` and registers `layout` (tenant "prefill") as ns_.
  void connect(const std::string& client_name, const Layout& layout) {
    auto c = Client::connect({daemon_->socket_path(), client_name, true});
    ASSERT_TRUE(c.ok()) << c.status().to_string();
    client_ = *c;
    auto ns = client_->register_layout(layout, "prefill");
    ASSERT_TRUE(ns.ok());
    ns_ = *ns;
  }

  // Begins a session of client_ over `tokens` that meets at `meeting_point` (default: where the
  // daemon's planner says).
  Result<std::unique_ptr<PrefillSession>> begin_session(
      std::span<const TokenId> tokens, uint32_t meeting_point = proto::kAutoMeetingPoint) {
    PrefillOptions o;
    o.meeting_point = meeting_point;
    return PrefillSession::begin(client_, ns_, tokens, o);
  }

  proto::StatsReply stats() {
    auto s = client_->stats();
    EXPECT_TRUE(s.ok());
    return s.ok() ? *s : proto::StatsReply{};
  }

  // Kills `victim` (SIGKILL) mid-session and waits until the daemon has let go of everything it
  // held: no session active, no read lease, no NVMe read in flight.
  void kill_and_wait_released(Subprocess& victim) {
    ASSERT_EQ(::kill(victim.pid(), SIGKILL), 0);
    ASSERT_TRUE(victim.wait_exit(std::chrono::seconds(10)));
    ASSERT_TRUE(wait_until(
        [&] {
          const auto s = stats();
          return s.prefill.sessions_active == 0 && s.read_leases == 0 &&
                 s.nvme.reads_in_flight == 0;
        },
        std::chrono::seconds(20)))
        << daemon_->log();
  }

  std::unique_ptr<TestDaemon> daemon_;
  std::shared_ptr<Client> client_;
  Namespace ns_;
};

// How one session covered its cached chunks: each chunk's counts (exactly one of them should be 1).
struct PrefillCoverage {
  std::vector<int> handed;    // delivered with no read: the chunk was in host RAM already
  std::vector<int> loaded;    // delivered by a read from a tier
  std::vector<int> computed;  // computed by the engine
  uint32_t bad_bytes = 0;     // delivered chunks that failed the check
  proto::PrefillSummary summary;

  [[nodiscard]] int delivered(size_t i) const { return handed[i] + loaded[i]; }
};

// The engine's loop, as prefill.h shows it: takes the chunks that are ready (each checked with
// `check(i, bytes)` and released), computes what next() says (`compute` of wall time a chunk, the
// emulated forward pass), waits for deliveries otherwise; then ends the session.
inline PrefillCoverage run_prefill_engine(
    PrefillSession& s, const std::function<bool(uint32_t, std::span<const std::byte>)>& check,
    std::chrono::microseconds compute) {
  PrefillCoverage c;
  c.handed.assign(s.cached_chunks(), 0);
  c.loaded.assign(s.cached_chunks(), 0);
  c.computed.assign(s.cached_chunks(), 0);
  for (int steps = 0; steps < 100000; ++steps) {
    for (uint32_t i : s.take_ready()) {
      const proto::PrefillReady* info = s.ready_info(i);
      ++(info != nullptr && info->completed_us > 0 ? c.loaded : c.handed)[i];
      if (!check(i, s.chunk(i))) ++c.bad_bytes;
      s.release(i);
    }
    const auto next = s.next();
    if (next.action == PrefillSession::Action::kDone) break;
    if (next.action == PrefillSession::Action::kCompute) {
      std::this_thread::sleep_for(compute);
      const Status st = s.computed(next.chunk);
      EXPECT_TRUE(st.ok()) << st.to_string();
      ++c.computed[next.chunk];
    } else {
      const Status st = s.wait_ready(std::chrono::milliseconds(5));
      EXPECT_TRUE(st.ok()) << st.to_string();
    }
  }
  EXPECT_TRUE(s.met());
  auto sum = s.end();
  EXPECT_TRUE(sum.ok()) << sum.status().to_string();
  if (sum.ok()) c.summary = *sum;
  return c;
}

// Starts tierkv_test_prefill_client `mode` ("hang": host reads, "hang-nvme": NVMe reads) against
// `daemon`, its output in `log_path`, and waits (30 s at most) until it holds a session with a
// delivered chunk and reads in flight: it is then ready to be killed.
inline Result<Subprocess> start_hanging_prefill_client(const std::string& mode,
                                                       const TestDaemon& daemon,
                                                       const std::string& log_path) {
  const std::string helper =
      std::string(TIERKV_BINARY_DIR) + "/tests/daemon/tierkv_test_prefill_client";
  auto victim = Subprocess::spawn({helper, mode, daemon.socket_path()}, log_path);
  if (!victim.ok()) return victim.status();
  if (!wait_until([&] { return read_file(log_path) == "READY\n"; }, std::chrono::seconds(30))) {
    return Status::Unavailable("tierkv_test_prefill_client " + mode +
                               " did not get ready; its output:\n" + read_file(log_path) +
                               "\nthe daemon's log:\n" + daemon.log());
  }
  return victim;
}

}  // namespace tierkv::testing
