#include "bench/bench_daemon.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <utility>
#include <vector>

#include "common/child_process.h"

namespace tierkv::bench {

namespace fs = std::filesystem;

void add_daemon_options(CLI::App& app, DaemonOptions& options) {
  auto* daemon = app.add_option("--daemon", options.daemon_path,
                                "tierkvd binary to start (default: the build tree's, next to this "
                                "binary, or $PATH)");
  auto* capacity = app.add_option("--host-capacity-gib", options.host_capacity_gib,
                                  "host tier capacity of the daemon this bench starts")
                       ->check(CLI::Range(uint64_t{1}, uint64_t{1} << 20));
  // A running daemon brings its own binary and capacity: asking for both is a mistake to report.
  app.add_option("--socket", options.socket_path,
                 "use the tierkvd already running at this socket instead of starting one")
      ->excludes(daemon)
      ->excludes(capacity);
}

namespace {

bool is_executable(const fs::path& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec) && ::access(p.c_str(), X_OK) == 0;
}

std::string describe_exit(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return std::string("was killed by ") + ::strsignal(WTERMSIG(status));
  return "stopped";
}

}  // namespace

Result<std::string> find_daemon_binary() {
  std::vector<fs::path> tried;
  std::error_code ec;
  const fs::path self = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    const fs::path dir = self.parent_path();
    tried.push_back(dir.parent_path() / "daemon" / "tierkvd");
    tried.push_back(dir / "tierkvd");
  }
  for (const auto& p : tried) {
    if (is_executable(p)) return fs::weakly_canonical(p, ec).string();
  }
  const char* path_env = std::getenv("PATH");
  std::string path = path_env != nullptr ? path_env : "/usr/local/bin:/usr/bin:/bin";
  // A daemon is often installed in sbin, which a user's PATH may lack.
  path += ":/usr/local/sbin:/usr/sbin";
  std::stringstream ss(path);
  for (std::string dir; std::getline(ss, dir, ':');) {
    if (dir.empty()) continue;
    const fs::path p = fs::path(dir) / "tierkvd";
    if (is_executable(p)) return p.string();
  }
  std::string where;
  for (const auto& p : tried) where += p.string() + ", ";
  return Status::NotFound("cannot find tierkvd (looked at " + where +
                          "and in $PATH); pass --daemon PATH, or --socket PATH to use a running "
                          "daemon");
}

Result<std::unique_ptr<BenchDaemon>> BenchDaemon::start(const DaemonOptions& options,
                                                        const std::string& extra_toml,
                                                        std::chrono::milliseconds deadline) {
  std::unique_ptr<BenchDaemon> d(new BenchDaemon());
  if (!options.socket_path.empty()) {
    d->socket_path_ = options.socket_path;
    return d;
  }
  if (options.daemon_path.empty()) {
    auto found = find_daemon_binary();
    if (!found.ok()) return found.status();
    d->binary_ = *found;
  } else {
    d->binary_ = options.daemon_path;
    if (!is_executable(d->binary_)) {
      return Status::NotFound("--daemon " + d->binary_ + ": not an executable file");
    }
  }

  std::error_code ec;
  std::string tmpl = (fs::temp_directory_path(ec) / "tierkv-bench.XXXXXX").string();
  if (::mkdtemp(tmpl.data()) == nullptr) return Status::FromErrno("mkdtemp " + tmpl, errno);
  d->dir_ = tmpl;
  d->socket_path_ = d->dir_ + "/tierkvd.sock";
  const std::string config_path = d->dir_ + "/tierkvd.toml";
  const std::string log_path = d->dir_ + "/tierkvd.log";
  {
    std::ofstream config(config_path);
    config << "[server]\nsocket_path = \"" << d->socket_path_ << "\"\n"
           << "[host]\ncapacity = \"" << options.host_capacity_gib << "GiB\"\n"
           << extra_toml;
    if (!config) return Status::FromErrno("writing " + config_path, errno);
  }

  const int log_fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (log_fd < 0) return Status::FromErrno("open " + log_path, errno);
  // The child gets SIGTERM if the bench dies: no daemon outlives its benchmark.
  auto pid = tools::spawn_child({d->binary_, "--config", config_path}, log_fd);
  ::close(log_fd);
  if (!pid.ok()) return pid.status();
  d->pid_ = *pid;

  // Poll for the socket: there is nothing to block on until the daemon binds and listens, and a
  // daemon that fails (bad config, no memory) must be reported at once, not at the deadline.
  const auto until = std::chrono::steady_clock::now() + deadline;
  while (!tools::unix_socket_accepts(d->socket_path_)) {
    int status = 0;
    if (tools::wait_child_exit(d->pid_, std::chrono::milliseconds(5), &status)) {
      d->pid_ = -1;
      return Status::Unavailable("tierkvd (" + d->binary_ + ") " + describe_exit(status) +
                                 " before it listened on " + d->socket_path_ + "; its log:\n" +
                                 d->tail_of_log());
    }
    if (std::chrono::steady_clock::now() > until) {
      return Status::Unavailable("tierkvd (" + d->binary_ + ", pid " + std::to_string(d->pid_) +
                                 ") did not listen on " + d->socket_path_ + " within " +
                                 std::to_string(deadline.count()) + " ms; its log:\n" +
                                 d->tail_of_log());
    }
  }
  return d;
}

std::string BenchDaemon::tail_of_log() const {
  std::ifstream in(dir_ + "/tierkvd.log");
  std::stringstream ss;
  ss << in.rdbuf();
  std::string log = ss.str();
  constexpr size_t kTail = 4000;
  if (log.size() > kTail) log = "..." + log.substr(log.size() - kTail);
  return log.empty() ? "(empty)" : log;
}

Status BenchDaemon::stop() {
  if (pid_ <= 0) return Status::Ok();
  const pid_t pid = std::exchange(pid_, -1);
  ::kill(pid, SIGTERM);
  int status = 0;
  if (!tools::wait_child_exit(pid, std::chrono::seconds(10), &status)) {
    ::kill(pid, SIGKILL);
    tools::wait_child_exit(pid, std::chrono::seconds(10), &status);
    return Status::Internal("tierkvd (pid " + std::to_string(pid) +
                            ") did not exit within 10 s of SIGTERM; killed it");
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return Status::Internal("tierkvd " + describe_exit(status) + " when stopped; its log:\n" +
                            tail_of_log());
  }
  return Status::Ok();
}

BenchDaemon::~BenchDaemon() {
  (void)stop();
  if (!dir_.empty()) {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
}

}  // namespace tierkv::bench
