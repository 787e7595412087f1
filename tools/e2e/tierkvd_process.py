"""A tierkvd as a child process, for the Python that starts one: the end-to-end run (e2e_run.py,
beside this file) and the Python module's pytest suite (tests/python/conftest.py, which finds this
file through PYTHONPATH).

The daemon gets its own directory (the caller's, which it owns): the config there names a socket in
it, the daemon's output goes to a log in it, and start-up waits, with a deadline, until the socket
accepts connections; a daemon that exits first is reported with its log. close() stops it with
SIGTERM, then SIGKILL.
"""

import os
import socket
import subprocess
import time


class TierkvdProcess:
    """tierkvd `binary` run in `workdir` with the config `config_toml` (everything after the
    [server] section, which is written here). `env`: the child's environment (None: this one's).
    """

    def __init__(self, binary, workdir, config_toml, start_deadline_s, stop_timeout_s=30, env=None):
        self.dir = workdir
        self.socket_path = os.path.join(workdir, "tierkvd.sock")
        self.config_path = os.path.join(workdir, "tierkvd.toml")
        self.log_path = os.path.join(workdir, "tierkvd.log")
        self._stop_timeout_s = stop_timeout_s
        with open(self.config_path, "w") as f:
            f.write('[server]\nsocket_path = "%s"\n' % self.socket_path)
            f.write(config_toml)
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([binary, "--config", self.config_path], stdout=self._log,
                                     stderr=subprocess.STDOUT, env=env)
        try:
            self._wait_listening(start_deadline_s)
        except BaseException:
            self.close()
            raise

    def _wait_listening(self, deadline_s):
        deadline = time.monotonic() + deadline_s
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
                raise RuntimeError("tierkvd did not listen in %.0f s:\n%s" % (deadline_s, self.log()))
            time.sleep(0.01)

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def close(self):
        """Stops the daemon (SIGTERM; SIGKILL after the stop timeout); the directory stays."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=self._stop_timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
