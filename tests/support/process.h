// Test support: run real processes (tierkvd, the tools) from GoogleTest suites.
//
// - run_process: run a command to completion, capturing stdout and stderr apart, with a deadline.
// - Subprocess: a long-running child (a daemon) whose output goes to a log file; stopped with
//   SIGTERM (then SIGKILL) when destroyed, and told to die with SIGTERM if the test process dies.
// - wait_until / wait_for_path / wait_for_unix_socket: wait on a condition with a deadline; never a
//   fixed sleep. Files are waited on with inotify, so the wait ends when the file appears.
// - TempDir: a fresh directory, removed with everything in it when destroyed.
// Thread safety: none of these are shared between threads.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "tierkv/status.h"

namespace tierkv::testing {

using namespace std::chrono_literals;

struct ProcessResult {
  int exit_code = -1;      // -1 if the process did not exit normally
  int term_signal = 0;     // the signal that ended it, if any
  bool timed_out = false;  // killed at the deadline
  std::string out;
  std::string err;

  bool ok() const { return exit_code == 0; }
  // "exit 1" / "killed by signal 9 (timed out)", then stdout and stderr: for assertion messages.
  std::string describe() const;
};

// Runs argv[0] (a path; no $PATH search) with stdin from /dev/null. `env` entries ("K=V") are added
// to this process's environment.
ProcessResult run_process(const std::vector<std::string>& argv,
                          std::chrono::milliseconds timeout = 120s,
                          const std::vector<std::string>& env = {});

class Subprocess {
 public:
  // Starts argv with stdout and stderr appended to `log_path`.
  static Result<Subprocess> spawn(const std::vector<std::string>& argv,
                                  const std::string& log_path);
  Subprocess(Subprocess&& other) noexcept;
  Subprocess& operator=(Subprocess&& other) noexcept;
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;
  ~Subprocess();

  pid_t pid() const { return pid_; }
  // False once the child has exited (reaps it, keeping its wait status).
  bool running();
  // SIGTERM, wait up to `grace`, then SIGKILL. Returns the wait status (see <sys/wait.h>), or -1
  // if it was not running.
  int stop(std::chrono::milliseconds grace = 10s);
  // Waits up to `timeout` for the child to exit by itself; true if it did.
  bool wait_exit(std::chrono::milliseconds timeout);
  int wait_status() const { return wait_status_; }
  const std::string& log_path() const { return log_path_; }

 private:
  Subprocess() = default;
  pid_t pid_ = -1;
  int wait_status_ = -1;
  std::string log_path_;
};

// Polls `condition` with a short backoff until it holds or `timeout` passes; true if it held.
// For conditions nothing can be blocked on (a socket accepting connections).
bool wait_until(const std::function<bool()>& condition, std::chrono::milliseconds timeout);
// Blocks (inotify on the parent directory) until `path` exists or `timeout` passes.
bool wait_for_path(const std::string& path, std::chrono::milliseconds timeout);
// Until a Unix stream socket at `path` accepts a connection. Gives up early once `alive` (if
// given) returns false, e.g. when the daemon meant to listen there has exited.
bool wait_for_unix_socket(const std::string& path, std::chrono::milliseconds timeout,
                          const std::function<bool()>& alive = {});

class TempDir {
 public:
  TempDir();  // aborts the test binary if no directory can be made: nothing could run anyway
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir();
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

std::string read_file(const std::string& path);  // "" if unreadable
void write_file(const std::string& path, const std::string& content);

}  // namespace tierkv::testing
