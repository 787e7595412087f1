#include "support/process.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/inotify.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>
#include <utility>

#include "common/child_process.h"

extern char** environ;

namespace tierkv::testing {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

int ms_left(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return static_cast<int>(std::max<int64_t>(0, left.count()));
}

std::vector<char*> c_argv(std::vector<std::string>& args) {
  std::vector<char*> v;
  v.reserve(args.size() + 1);
  for (auto& a : args) v.push_back(a.data());
  v.push_back(nullptr);
  return v;
}

}  // namespace

std::string ProcessResult::describe() const {
  std::string s;
  if (exit_code >= 0) {
    s = "exit " + std::to_string(exit_code);
  } else {
    s = "killed by signal " + std::to_string(term_signal);
  }
  if (timed_out) s += " (timed out)";
  s += "\n--- stdout ---\n" + out + "\n--- stderr ---\n" + err;
  return s;
}

ProcessResult run_process(const std::vector<std::string>& argv_in,
                          std::chrono::milliseconds timeout, const std::vector<std::string>& env) {
  ProcessResult result;
  int out_pipe[2], err_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) != 0 || ::pipe2(err_pipe, O_CLOEXEC) != 0) {
    result.err = std::string("pipe: ") + std::strerror(errno);
    return result;
  }
  std::vector<std::string> args = argv_in;
  std::vector<char*> argv = c_argv(args);
  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e) env_strings.emplace_back(*e);
  for (const auto& kv : env) env_strings.push_back(kv);
  std::vector<char*> envp = c_argv(env_strings);
  const pid_t parent = ::getpid();

  const pid_t pid = ::fork();
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    ::dup2(out_pipe[1], STDOUT_FILENO);
    ::dup2(err_pipe[1], STDERR_FILENO);
    const int null_fd = ::open("/dev/null", O_RDONLY);
    if (null_fd >= 0) ::dup2(null_fd, STDIN_FILENO);
    ::execve(argv[0], argv.data(), envp.data());
    const char msg[] = "run_process: exec failed\n";
    (void)!::write(STDERR_FILENO, msg, sizeof(msg) - 1);
    ::_exit(127);
  }
  ::close(out_pipe[1]);
  ::close(err_pipe[1]);
  if (pid < 0) {
    result.err = std::string("fork: ") + std::strerror(errno);
    ::close(out_pipe[0]);
    ::close(err_pipe[0]);
    return result;
  }

  // Drain both pipes until both close, so a child filling one pipe never blocks on it.
  const auto deadline = Clock::now() + timeout;
  std::array<pollfd, 2> fds{pollfd{out_pipe[0], POLLIN, 0}, pollfd{err_pipe[0], POLLIN, 0}};
  std::array<std::string*, 2> sinks{&result.out, &result.err};
  int open_fds = 2;
  char buf[65536];
  while (open_fds > 0) {
    const int left = ms_left(deadline);
    if (left == 0) {
      result.timed_out = true;
      ::kill(pid, SIGKILL);
      break;
    }
    const int n = ::poll(fds.data(), fds.size(), left);
    if (n < 0 && errno != EINTR) break;
    for (size_t i = 0; i < fds.size(); ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0) continue;
      const ssize_t r = ::read(fds[i].fd, buf, sizeof(buf));
      if (r > 0) {
        sinks[i]->append(buf, static_cast<size_t>(r));
      } else if (r == 0 || errno != EINTR) {
        ::close(fds[i].fd);
        fds[i].fd = -1;
        --open_fds;
      }
    }
  }
  for (auto& p : fds) {
    if (p.fd >= 0) ::close(p.fd);
  }
  int status = 0;
  if (!tools::wait_child_exit(pid, result.timed_out ? 10s : timeout, &status)) {
    ::kill(pid, SIGKILL);
    tools::wait_child_exit(pid, 10s, &status);
    result.timed_out = true;
  }
  if (WIFEXITED(status)) result.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) result.term_signal = WTERMSIG(status);
  return result;
}

Result<Subprocess> Subprocess::spawn(const std::vector<std::string>& argv,
                                     const std::string& log_path) {
  const int log_fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) return Status::FromErrno("open " + log_path, errno);
  // The test may crash or be killed at its timeout: the child gets SIGTERM then.
  auto pid = tools::spawn_child(argv, log_fd);
  ::close(log_fd);
  if (!pid.ok()) return pid.status();
  Subprocess p;
  p.pid_ = *pid;
  p.log_path_ = log_path;
  return p;
}

Subprocess::Subprocess(Subprocess&& other) noexcept
    : pid_(std::exchange(other.pid_, -1)),
      wait_status_(other.wait_status_),
      log_path_(std::move(other.log_path_)) {}

Subprocess& Subprocess::operator=(Subprocess&& other) noexcept {
  if (this != &other) {
    stop();
    pid_ = std::exchange(other.pid_, -1);
    wait_status_ = other.wait_status_;
    log_path_ = std::move(other.log_path_);
  }
  return *this;
}

Subprocess::~Subprocess() { stop(); }

bool Subprocess::running() {
  if (pid_ <= 0) return false;
  int status = 0;
  if (::waitpid(pid_, &status, WNOHANG) == pid_) {
    wait_status_ = status;
    pid_ = -1;
    return false;
  }
  return true;
}

bool Subprocess::wait_exit(std::chrono::milliseconds timeout) {
  if (pid_ <= 0) return true;
  int status = 0;
  if (!tools::wait_child_exit(pid_, timeout, &status)) return false;
  wait_status_ = status;
  pid_ = -1;
  return true;
}

int Subprocess::stop(std::chrono::milliseconds grace) {
  if (!running()) return -1;
  ::kill(pid_, SIGTERM);
  if (!wait_exit(grace)) {
    ::kill(pid_, SIGKILL);
    wait_exit(30s);
  }
  return wait_status_;
}

bool wait_until(const std::function<bool()>& condition, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  auto backoff = std::chrono::microseconds(100);
  while (!condition()) {
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(backoff);
    backoff = std::min<std::chrono::microseconds>(backoff * 2, 10ms);
  }
  return true;
}

bool wait_for_path(const std::string& path, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  const fs::path p(path);
  const int fd = ::inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
  if (fd < 0) return wait_until([&] { return ::access(path.c_str(), F_OK) == 0; }, timeout);
  // Watch first, then check: a file created between the two is still seen.
  const std::string dir = p.has_parent_path() ? p.parent_path().string() : ".";
  const bool watching = ::inotify_add_watch(fd, dir.c_str(), IN_CREATE | IN_MOVED_TO) >= 0;
  bool found = false;
  while (true) {
    if (::access(path.c_str(), F_OK) == 0) {
      found = true;
      break;
    }
    const int left = ms_left(deadline);
    if (left == 0) break;
    pollfd pfd{fd, POLLIN, 0};
    // Without a watch (no parent directory yet) fall back to re-checking every few ms.
    ::poll(&pfd, 1, watching ? left : std::min(left, 5));
    char buf[4096];
    while (::read(fd, buf, sizeof(buf)) > 0) {
    }
  }
  ::close(fd);
  return found;
}

bool wait_for_unix_socket(const std::string& path, std::chrono::milliseconds timeout,
                          const std::function<bool()>& alive) {
  const auto deadline = Clock::now() + timeout;
  // Wake on the socket file appearing in slices, so a daemon that died is noticed quickly.
  while (!(::access(path.c_str(), F_OK) == 0)) {
    if (alive && !alive()) return false;
    if (Clock::now() >= deadline) return false;
    wait_for_path(
        path,
        std::min<std::chrono::milliseconds>(
            100ms, std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now())));
  }
  // The file exists from bind(); connections succeed once listen() follows.
  return wait_until(
             [&] { return tools::unix_socket_accepts(path) || (alive && !alive()); },
             std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now())) &&
         (!alive || alive());
}

TempDir::TempDir() {
  std::error_code ec;
  std::string tmpl = (fs::temp_directory_path(ec) / "tierkv-test.XXXXXX").string();
  if (::mkdtemp(tmpl.data()) == nullptr) {
    std::perror("TempDir: mkdtemp");
    std::abort();
  }
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_file(const std::string& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << content;
}

}  // namespace tierkv::testing
