// Test support: the real tierkvd and client programs as child processes.
//
// DaemonProcess starts build/daemon/tierkvd with a config written to a fresh temporary directory
// and waits (with a deadline, not a sleep) until its socket accepts connections. ChildProcess
// runs any program with its stdout on a pipe. Both kill their process when destroyed.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

namespace tierkv::testing {

class ChildProcess {
 public:
  // Starts argv[0] with the given arguments; stdout (and stderr, merged) go to a pipe.
  explicit ChildProcess(const std::vector<std::string>& argv);
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  pid_t pid() const { return pid_; }
  // The next line of output, or nullopt at end of output or deadline.
  std::optional<std::string> read_line(std::chrono::milliseconds deadline);
  // Everything until the process closes its output (or the deadline).
  std::string read_all(std::chrono::milliseconds deadline);
  // Waits for exit; returns the exit code, or 128 + signal.
  int wait();
  void kill(int sig);

 private:
  pid_t pid_ = -1;
  int out_fd_ = -1;
  std::string buffered_;
  bool reaped_ = false;
  int status_ = 0;
};

class DaemonProcess {
 public:
  // `extra_toml` is appended to a config that sets server.socket_path and [host] prefault = false.
  explicit DaemonProcess(const std::string& extra_toml = "[host]\ncapacity = \"64MiB\"\n");
  ~DaemonProcess();

  bool ready() const { return ready_; }
  const std::string& socket_path() const { return socket_; }
  const std::string& dir() const { return dir_; }
  pid_t pid() const { return child_ ? child_->pid() : -1; }
  // The daemon's log so far (it logs to a file in dir()).
  std::string log() const;

 private:
  std::string dir_;
  std::string socket_;
  std::optional<ChildProcess> child_;
  bool ready_ = false;
};

std::string binary_path(const std::string& relative);  // under the build tree
std::string make_temp_dir();
// Polls `condition` every millisecond until it holds or the deadline passes.
template <typename F>
bool wait_until(F condition, std::chrono::milliseconds deadline = std::chrono::seconds(20)) {
  const auto end = std::chrono::steady_clock::now() + deadline;
  while (!condition()) {
    if (std::chrono::steady_clock::now() > end) return false;
    struct timespec ts{0, 1000000};
    nanosleep(&ts, nullptr);
  }
  return true;
}

}  // namespace tierkv::testing
