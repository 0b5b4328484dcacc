"""Run tests/api_server.py as a child process on loopback, for tests that kill or fuzz it."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import REPO


class ApiProcess:
    """One server process over a data directory; start again after kill to restart it."""

    def __init__(self, data_dir, machines=3, tls=False):
        self.data_dir = Path(data_dir)
        self.machines = machines
        self.tls = tls
        self.process = None
        self.ready = None

    def start(self, timeout=60):
        ready_file = self.data_dir / "ready.json"
        ready_file.unlink(missing_ok=True)
        with open(self.data_dir / "server.log", "ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.api_server",
                    str(self.data_dir),
                    str(ready_file),
                    "--machines",
                    str(self.machines),
                    *(["--tls"] if self.tls else []),
                ],
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

        deadline = time.monotonic() + timeout
        while not ready_file.exists():
            if self.process.poll() is not None:
                raise RuntimeError(f"api server exited early: {self.log_tail()}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"api server not ready within {timeout} s: {self.log_tail()}")
            time.sleep(0.05)
        self.ready = json.loads(ready_file.read_text())
        return self

    @property
    def base(self):
        return f"{self.ready['scheme']}://127.0.0.1:{self.ready['port']}"

    def token(self, role="admin"):
        return self.ready["tokens"][role]

    def kill(self):
        """SIGKILL: no shutdown code runs, as in a power cut of the process."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def log_tail(self):
        path = self.data_dir / "server.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""
