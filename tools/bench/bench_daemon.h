// BenchDaemon: the tierkvd a benchmark talks to — its own child process by default, or a running
// daemon named with --socket.
//
// An owned daemon runs from a fresh temporary directory holding its TOML config, socket and log;
// it is stopped (SIGTERM, then SIGKILL after a deadline) and the directory removed when the
// BenchDaemon is destroyed, on error paths too. The child also gets SIGTERM if the bench dies
// (PR_SET_PDEATHSIG), so no daemon outlives its benchmark. Thread safety: owned by one thread.
#pragma once

#include <sys/types.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "tierkv/status.h"

namespace tierkv::bench {

// The options every daemon-backed subcommand shares.
struct DaemonOptions {
  std::string daemon_path;  // empty: found next to this binary or in $PATH
  std::string socket_path;  // set: use the daemon already running there
  uint64_t host_capacity_gib = 2;
};
void add_daemon_options(CLI::App& app, DaemonOptions& options);

class BenchDaemon {
 public:
  // Starts an owned daemon (config = [server] + [host] sections, then `extra_toml`), or, with
  // --socket, checks nothing and names the running one. Waits until the socket accepts
  // connections or `deadline` passes; a daemon that exits early is reported with its log's tail.
  static Result<std::unique_ptr<BenchDaemon>> start(
      const DaemonOptions& options, const std::string& extra_toml = {},
      std::chrono::milliseconds deadline = std::chrono::seconds(30));
  ~BenchDaemon();
  BenchDaemon(const BenchDaemon&) = delete;
  BenchDaemon& operator=(const BenchDaemon&) = delete;

  [[nodiscard]] const std::string& socket_path() const { return socket_path_; }
  [[nodiscard]] bool owned() const { return pid_ > 0; }
  [[nodiscard]] pid_t pid() const { return pid_; }
  [[nodiscard]] const std::string& binary() const { return binary_; }
  // Stops an owned daemon now; says how it exited if not cleanly. No-op for a borrowed one.
  Status stop();

 private:
  BenchDaemon() = default;
  [[nodiscard]] std::string tail_of_log() const;

  pid_t pid_ = -1;
  std::string dir_;  // temporary directory of an owned daemon
  std::string socket_path_;
  std::string binary_;
};

// The tierkvd binary: <dir of this exe>/../daemon/tierkvd (a build tree), else next to this exe,
// else the first in $PATH.
Result<std::string> find_daemon_binary();

}  // namespace tierkv::bench
