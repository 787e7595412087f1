// TestDaemon: a real tierkvd for a test, from this build tree, in its own temporary directory.
//
// Writes <tmp>/c.toml ([server] socket_path in the temp dir, [host] capacity, then any extra TOML),
// starts `<build>/daemon/tierkvd --config <tmp>/c.toml`, and waits (deadline, no fixed sleep) until
// the socket accepts connections. Destroying it stops the daemon with SIGTERM and removes the
// directory. Thread safety: owned by one test.
#pragma once

#include <memory>
#include <string>

#include "support/process.h"
#include "tierkv/status.h"

namespace tierkv::testing {

struct TestDaemonOptions {
  std::string host_capacity = "256MiB";
  // Appended to the config, e.g. "[cache]\nchunk_tokens = 16\n"; "${DIR}" in it becomes the
  // daemon's temporary directory (for [nvme] directories).
  std::string extra_toml;
  std::chrono::milliseconds start_deadline = 30s;
};

class TestDaemon {
 public:
  static Result<std::unique_ptr<TestDaemon>> start(const TestDaemonOptions& options = {});
  ~TestDaemon();

  const std::string& socket_path() const { return socket_path_; }
  const std::string& dir() const { return dir_->path(); }
  pid_t pid() const { return process_.pid(); }
  bool running() { return process_.running(); }
  std::string log() const { return read_file(process_.log_path()); }
  // SIGTERM and wait; returns the wait status (-1 if it had already exited).
  int stop() { return process_.stop(); }
  // SIGKILL (a crash): no clean-up of any kind runs in the daemon.
  void kill();
  // Starts the daemon again on the same directory and configuration (after stop() or kill()),
  // and waits until it listens.
  Status restart();

  // The daemon binary of this build tree.
  static std::string binary();

 private:
  TestDaemon(std::unique_ptr<TempDir> dir, Subprocess process, std::string socket_path,
             const TestDaemonOptions& options)
      : dir_(std::move(dir)),
        process_(std::move(process)),
        socket_path_(std::move(socket_path)),
        options_(options) {}
  Status wait_listening();
  std::unique_ptr<TempDir> dir_;  // declared first: removed after the process is stopped
  Subprocess process_;
  std::string socket_path_;
  TestDaemonOptions options_;
};

}  // namespace tierkv::testing
