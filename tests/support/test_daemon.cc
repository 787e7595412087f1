#include "support/test_daemon.h"

#include <unistd.h>

namespace tierkv::testing {

std::string TestDaemon::binary() { return std::string(TIERKV_BINARY_DIR) + "/daemon/tierkvd"; }

Result<std::unique_ptr<TestDaemon>> TestDaemon::start(const TestDaemonOptions& options) {
  auto dir = std::make_unique<TempDir>();
  const std::string socket = dir->file("tierkvd.sock");
  const std::string config = dir->file("c.toml");
  write_file(config, "[server]\nsocket_path = \"" + socket + "\"\n[host]\ncapacity = \"" +
                         options.host_capacity + "\"\n" + options.extra_toml);
  if (::access(binary().c_str(), X_OK) != 0) {
    return Status::NotFound(binary() + " is not built (build the tierkvd target first)");
  }
  auto process = Subprocess::spawn({binary(), "--config", config}, dir->file("tierkvd.log"));
  if (!process.ok()) return process.status();
  std::unique_ptr<TestDaemon> d(new TestDaemon(std::move(dir), std::move(*process), socket));
  if (!wait_for_unix_socket(socket, options.start_deadline, [&] { return d->running(); })) {
    const bool died = !d->running();
    return Status::Unavailable(std::string("tierkvd ") +
                               (died ? "exited before listening" : "did not listen in time") +
                               " on " + socket + "; its log:\n" + d->log());
  }
  return d;
}

TestDaemon::~TestDaemon() { process_.stop(); }

}  // namespace tierkv::testing
