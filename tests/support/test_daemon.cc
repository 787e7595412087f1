#include "support/test_daemon.h"

#include <signal.h>
#include <unistd.h>

namespace tierkv::testing {

std::string TestDaemon::binary() { return std::string(TIERKV_BINARY_DIR) + "/daemon/tierkvd"; }

Result<std::unique_ptr<TestDaemon>> TestDaemon::start(const TestDaemonOptions& options) {
  auto dir = std::make_unique<TempDir>();
  const std::string socket = dir->file("tierkvd.sock");
  const std::string config = dir->file("c.toml");
  std::string extra = options.extra_toml;
  for (size_t at = extra.find("${DIR}"); at != std::string::npos; at = extra.find("${DIR}", at)) {
    extra.replace(at, 6, dir->path());
  }
  write_file(config, "[server]\nsocket_path = \"" + socket + "\"\n[host]\ncapacity = \"" +
                         options.host_capacity + "\"\n" + extra);
  if (::access(binary().c_str(), X_OK) != 0) {
    return Status::NotFound(binary() + " is not built (build the tierkvd target first)");
  }
  auto process = Subprocess::spawn({binary(), "--config", config}, dir->file("tierkvd.log"));
  if (!process.ok()) return process.status();
  std::unique_ptr<TestDaemon> d(
      new TestDaemon(std::move(dir), std::move(*process), socket, options));
  TIERKV_RETURN_IF_ERROR(d->wait_listening());
  return d;
}

Status TestDaemon::wait_listening() {
  if (!wait_for_unix_socket(socket_path_, options_.start_deadline, [&] { return running(); })) {
    const bool died = !running();
    return Status::Unavailable(std::string("tierkvd ") +
                               (died ? "exited before listening" : "did not listen in time") +
                               " on " + socket_path_ + "; its log:\n" + log());
  }
  return Status::Ok();
}

void TestDaemon::kill() {
  if (process_.running()) ::kill(process_.pid(), SIGKILL);
  (void)process_.wait_exit(30s);
}

Status TestDaemon::restart() {
  if (process_.running()) return Status::FailedPrecondition("tierkvd is still running");
  auto process =
      Subprocess::spawn({binary(), "--config", dir_->file("c.toml")}, dir_->file("tierkvd.log"));
  if (!process.ok()) return process.status();
  process_ = std::move(*process);
  return wait_listening();
}

TestDaemon::~TestDaemon() { process_.stop(); }

}  // namespace tierkv::testing
