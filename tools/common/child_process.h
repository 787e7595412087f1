// Child processes for what starts tierkvd (tierkv-bench, the test suites' TestDaemon): start one
// with its output in a log, wait for it to exit, and see whether it accepts connections yet.
// Thread safety: pure functions; a child is waited for by the thread that owns it.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

#include "tierkv/status.h"

namespace tierkv::tools {

// Starts argv[0] (a path; no $PATH search) with stdout and stderr on `out_fd` and stdin from
// /dev/null; the caller keeps `out_fd`. The child gets SIGTERM if this process dies first
// (PR_SET_PDEATHSIG), so it never outlives its parent.
Result<pid_t> spawn_child(const std::vector<std::string>& argv, int out_fd);

// Waits up to `timeout` for child `pid` to exit; true (and *status set, see <sys/wait.h>) if it
// did. Wakes the moment the child exits (a pidfd, where the kernel has them).
bool wait_child_exit(pid_t pid, std::chrono::milliseconds timeout, int* status);

// Whether something accepts connections on the Unix stream socket at `path`.
bool unix_socket_accepts(const std::string& path);

}  // namespace tierkv::tools
