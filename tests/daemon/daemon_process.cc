#include "daemon_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

extern char** environ;

namespace tierkv::testing {

std::string binary_path(const std::string& relative) {
  return std::string(TIERKV_BINARY_DIR) + "/" + relative;
}

std::string make_temp_dir() {
  std::string tmpl = (std::filesystem::temp_directory_path() / "tierkv-test-XXXXXX").string();
  if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  return tmpl;
}

ChildProcess::ChildProcess(const std::vector<std::string>& argv) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe failed");
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, fds[1], STDERR_FILENO);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const int rc = ::posix_spawn(&pid_, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(fds[1]);
  if (rc != 0) {
    ::close(fds[0]);
    throw std::runtime_error("posix_spawn " + argv[0] + ": " + std::strerror(rc));
  }
  out_fd_ = fds[0];
}

ChildProcess::~ChildProcess() {
  if (!reaped_ && pid_ > 0) {
    ::kill(pid_, SIGKILL);
    wait();
  }
  if (out_fd_ >= 0) ::close(out_fd_);
}

std::optional<std::string> ChildProcess::read_line(std::chrono::milliseconds deadline) {
  const auto end = std::chrono::steady_clock::now() + deadline;
  for (;;) {
    const auto nl = buffered_.find('\n');
    if (nl != std::string::npos) {
      std::string line = buffered_.substr(0, nl);
      buffered_.erase(0, nl + 1);
      return line;
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        end - std::chrono::steady_clock::now());
    if (left.count() <= 0 || out_fd_ < 0) return std::nullopt;
    pollfd p{out_fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) return std::nullopt;
    char buf[4096];
    const ssize_t n = ::read(out_fd_, buf, sizeof(buf));
    if (n <= 0) {
      if (buffered_.empty()) return std::nullopt;
      std::string rest = std::move(buffered_);
      buffered_.clear();
      return rest;
    }
    buffered_.append(buf, static_cast<size_t>(n));
  }
}

std::string ChildProcess::read_all(std::chrono::milliseconds deadline) {
  std::string all;
  while (auto line = read_line(deadline)) all += *line + "\n";
  return all;
}

int ChildProcess::wait() {
  if (!reaped_) {
    while (::waitpid(pid_, &status_, 0) < 0 && errno == EINTR) {
    }
    reaped_ = true;
  }
  if (WIFEXITED(status_)) return WEXITSTATUS(status_);
  if (WIFSIGNALED(status_)) return 128 + WTERMSIG(status_);
  return -1;
}

void ChildProcess::kill(int sig) {
  if (!reaped_) ::kill(pid_, sig);
}

namespace {
bool socket_accepts(const std::string& path) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  ::close(fd);
  return ok;
}
}  // namespace

DaemonProcess::DaemonProcess(const std::string& extra_toml) {
  dir_ = make_temp_dir();
  socket_ = dir_ + "/tierkvd.sock";
  const std::string config = dir_ + "/tierkvd.toml";
  {
    std::ofstream out(config);
    out << "[server]\nsocket_path = \"" << socket_ << "\"\n" << extra_toml << "\n";
  }
  // The config may set its own [host] table; prefault off keeps tests light.
  const std::string shell = "exec " + binary_path("daemon/tierkvd") + " --config " + config +
                            " --log-level debug > " + dir_ + "/tierkvd.log 2>&1";
  child_.emplace(std::vector<std::string>{"/bin/sh", "-c", shell});
  ready_ = wait_until([&] { return socket_accepts(socket_); });
}

DaemonProcess::~DaemonProcess() {
  if (child_) {
    child_->kill(SIGTERM);
    child_->wait();
  }
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

std::string DaemonProcess::log() const {
  std::ifstream in(dir_ + "/tierkvd.log");
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace tierkv::testing
