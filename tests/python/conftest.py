"""Fixtures for the tierkv Python module's tests: a real tierkvd in a temporary directory.

The module comes from PYTHONPATH (ctest points it at <build>/python), tierkvd from $TIERKV_TIERKVD
(ctest sets <build>/daemon/tierkvd), and the daemon is started as the end-to-end run starts it, by
tools/e2e/tierkvd_process.py (ctest puts tools/e2e on PYTHONPATH too): a config with socket_path in
the temp dir, then wait, with a deadline, until the socket accepts connections, as the C++ tests do
(tests/support/test_daemon.cc).
"""

import os
import tempfile

import pytest

import tierkv
from tierkvd_process import TierkvdProcess

START_DEADLINE_S = 30.0


class Daemon(TierkvdProcess):
    """A tierkvd of this build tree in a temporary directory of its own; close() stops it (SIGTERM,
    then SIGKILL) and removes the directory."""

    def __init__(self, host_capacity="16MiB", extra_toml=""):
        binary = os.environ.get("TIERKV_TIERKVD")
        if not binary or not os.access(binary, os.X_OK):
            raise RuntimeError("set TIERKV_TIERKVD to a built tierkvd (ctest does); got %r" % binary)
        self._tmp = tempfile.TemporaryDirectory(prefix="tierkv-py-")
        config = ('[host]\ncapacity = "%s"\nslab_size = "4MiB"\nprefault = false\n' % host_capacity +
                  "[cache]\nchunk_tokens = 16\n" + extra_toml.replace("${DIR}", self._tmp.name))
        # The interpreter's sanitizer settings are not the daemon's (it links its own runtime).
        env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "ASAN_OPTIONS")}
        try:
            super().__init__(binary, self._tmp.name, config, START_DEADLINE_S, env=env)
        except BaseException:
            self._tmp.cleanup()
            raise

    def close(self):
        super().close()
        self._tmp.cleanup()


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
