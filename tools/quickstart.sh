#!/usr/bin/env bash
# Quick start: installs the build dependencies, builds the release preset, starts tierkvd in the
# background with its embedded default configuration, and runs the demo client against it.
# Running it again stops the daemon the previous run started and starts a fresh one.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

build=build/release
daemon=$build/daemon/tierkvd
demo=$build/tools/tierkv-demo
ctl=$build/tools/tierkvctl
log=$build/tierkvd.log
pidfile=$build/tierkvd.pid
start_timeout_s=30

bash tools/install-deps.sh

echo "==> Configuring (release preset)"
cmake --preset release
echo "==> Building with $(nproc) jobs"
cmake --build --preset release -j"$(nproc)"

# root gets the daemon's default socket; anyone else a private directory of their own, since
# /run/tierkv is root's to create.
if ((EUID == 0)); then
  socket=/run/tierkv/tierkvd.sock
else
  if [[ -n ${XDG_RUNTIME_DIR:-} && -d $XDG_RUNTIME_DIR && -w $XDG_RUNTIME_DIR ]]; then
    socket_dir=$XDG_RUNTIME_DIR/tierkv
  else
    socket_dir=/tmp/tierkv-$UID
  fi
  [[ -d $socket_dir ]] || mkdir -m 0700 "$socket_dir"
  if [[ ! -O $socket_dir ]]; then
    echo "==> error: $socket_dir belongs to another user; remove it or set XDG_RUNTIME_DIR" >&2
    exit 1
  fi
  socket=$socket_dir/tierkvd.sock
fi
export TIERKV_SOCKET=$socket

# Succeeds when something accepts connections on the socket (python3 is a build dependency).
socket_answers() {
  python3 - "$socket" <<'PY' 2>/dev/null
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(1)
s.connect(sys.argv[1])
PY
}

log_tail() {
  echo "==> Last lines of $log:" >&2
  tail -n 30 "$log" >&2 || true
}

# SIGTERM, then SIGKILL if the daemon has not exited within 15 s.
stop_daemon() {
  local pid=$1
  kill -TERM "$pid" 2>/dev/null || return 0
  local deadline=$((SECONDS + 15))
  while kill -0 "$pid" 2>/dev/null; do
    if ((SECONDS >= deadline)); then
      echo "==> pid $pid did not stop within 15 s; sending SIGKILL" >&2
      kill -KILL "$pid" 2>/dev/null || true
      return 0
    fi
    sleep 0.1
  done
}

# Stop the daemon a previous quickstart started, if it is still that daemon (the pid may have been
# reused by an unrelated process since).
if [[ -f $pidfile ]]; then
  old_pid=$(<"$pidfile")
  if [[ $old_pid =~ ^[0-9]+$ ]] && kill -0 "$old_pid" 2>/dev/null &&
     tr '\0' ' ' <"/proc/$old_pid/cmdline" 2>/dev/null | grep -q tierkvd; then
    echo "==> Stopping the tierkvd started by a previous quickstart (pid $old_pid)"
    stop_daemon "$old_pid"
  fi
  rm -f "$pidfile"
fi

# A socket file nobody answers on is left over from a daemon that was killed: remove it, so that
# the file appearing below means our daemon is listening.
if [[ -e $socket ]]; then
  if socket_answers; then
    echo "==> error: another tierkvd is already serving $socket (not one this script started)." >&2
    echo "==> Stop it first (systemctl stop tierkvd, or kill its pid)." >&2
    exit 1
  fi
  rm -f "$socket"
fi

echo "==> Starting tierkvd with the embedded default configuration on $socket"
nohup "$daemon" --socket "$socket" </dev/null >"$log" 2>&1 &
pid=$!
echo "$pid" >"$pidfile"

fail() {
  echo "==> error: $*" >&2
  stop_daemon "$pid"
  rm -f "$pidfile"
  log_tail
  exit 1
}

deadline=$((SECONDS + start_timeout_s))
until [[ -S $socket ]]; do
  if ! kill -0 "$pid" 2>/dev/null; then
    wait "$pid" && status=0 || status=$?
    fail "tierkvd exited with status $status before it was ready"
  fi
  if ((SECONDS >= deadline)); then
    fail "tierkvd (pid $pid) is not serving $socket after ${start_timeout_s} s; stopped it"
  fi
  sleep 0.1
done
echo "==> tierkvd is serving $socket (pid $pid)"

echo "==> Running the demo: $demo --socket $socket"
"$demo" --socket "$socket" || fail "the demo failed (status $?); stopped tierkvd"
kill -0 "$pid" 2>/dev/null || fail "tierkvd (pid $pid) exited during the demo"

echo
echo "tierkvd is running (pid $pid, log $log). Stop it with: kill $pid"
if [[ $socket == /run/tierkv/tierkvd.sock ]]; then
  echo "Inspect it with: $ctl stats"
else
  echo "Inspect it with: TIERKV_SOCKET=$socket $ctl stats"
fi
