"""Fixtures for the tierkv Python module's tests: a real tierkvd in a temporary directory.

The module comes from PYTHONPATH (ctest points it at <build>/python) and tierkvd from
$TIERKV_TIERKVD (ctest sets <build>/daemon/tierkvd), as the C++ tests use them
(tests/support/test_daemon.cc): a config with socket_path in the temp dir, then wait, with a
deadline, until the socket accepts connections.
"""

import os
import socket
import subprocess
import tempfile
import time

import pytest

import tierkv

START_DEADLINE_S = 30.0


class Daemon:
    """A tierkvd of this build tree, stopped (SIGTERM, then SIGKILL) by close()."""

    def __init__(self, host_capacity="16MiB", extra_toml=""):
        binary = os.environ.get("TIERKV_TIERKVD")
        if not binary or not os.access(binary, os.X_OK):
            raise RuntimeError("set TIERKV_TIERKVD to a built tierkvd (ctest does); got %r" % binary)
        self._dir = tempfile.TemporaryDirectory(prefix="tierkv-py-")
        self.dir = self._dir.name
        self.socket_path = os.path.join(self.dir, "tierkvd.sock")
        config = os.path.join(self.dir, "c.toml")
        with open(config, "w") as f:
            f.write('[server]\nsocket_path = "%s"\n' % self.socket_path)
            f.write('[host]\ncapacity = "%s"\nslab_size = "4MiB"\nprefault = false\n' % host_capacity)
            f.write("[cache]\nchunk_tokens = 16\n")
            f.write(extra_toml.replace("${DIR}", self.dir))
        # The interpreter's sanitizer settings are not the daemon's (it links its own runtime).
        env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "ASAN_OPTIONS")}
        self.log_path = os.path.join(self.dir, "tierkvd.log")
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([binary, "--config", config], stdout=self._log,
                                     stderr=subprocess.STDOUT, env=env)
        self._wait_listening()

    def _wait_listening(self):
        deadline = time.monotonic() + START_DEADLINE_S
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("tierkvd exited before listening:\n" + self.log())
            if os.path.exists(self.socket_path):
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    s.connect(self.socket_path)
                    return
                except OSError:
                    pass
                finally:
                    s.close()
            if time.monotonic() > deadline:
                raise RuntimeError("tierkvd did not listen in %.0f s:\n%s" % (START_DEADLINE_S, self.log()))
            time.sleep(0.01)

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        self._dir.cleanup()


@pytest.fixture(scope="module")
def daemon():
    d = Daemon()
    yield d
    d.close()


@pytest.fixture(scope="module")
def client(daemon):
    return tierkv.connect(daemon.socket_path, name="pytest")


# A small layout: 2 layers x 2 kv heads x 8 dim fp16, 16 tokens a chunk = 2048 bytes a chunk.
LAYOUT = dict(layers=2, kv_heads=2, head_dim=8, dtype="fp16", chunk_tokens=16)


@pytest.fixture
def ns(client, request):
    # A tenant of its own per test: tests never see each other's chunks.
    return client.register_layout(**LAYOUT, tenant="t-" + request.node.name[:50])
