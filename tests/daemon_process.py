"""A real ``memosd serve`` subprocess for integration tests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from memosd.client import Client

READY = re.compile(r"memosd ready on (\S+):(\d+) \(data dir ")


class DaemonProcess:
    """``memosd serve`` on a free port with its own data directory; stderr goes to a file."""

    def __init__(
        self, data_dir: Path, env: dict[str, str] | None = None, listen: str = "127.0.0.1:0"
    ) -> None:
        self.data_dir = data_dir
        self.listen = listen
        self.log_path = data_dir.parent / f"{data_dir.name}-daemon.log"
        self.extra_env = env or {}
        self.process: subprocess.Popen[bytes] | None = None
        self.address = ""
        self._log_offset = 0

    def start(self, timeout: float = 120.0) -> DaemonProcess:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **self.extra_env}
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self._log_offset = offset
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "memosd.cli.daemon",
                    "serve",
                    "--data-dir",
                    str(self.data_dir),
                    "--listen",
                    self.listen,
                ],
                stdout=log,
                stderr=log,
                env=env,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log_path.read_bytes()[offset:].decode(errors="replace")
            match = READY.search(text)
            if match:
                self.address = f"{match.group(1)}:{match.group(2)}"
                return self
            if self.process.poll() is not None:
                raise RuntimeError(f"memosd exited with {self.process.returncode}:\n{text}")
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"memosd not ready in {timeout}s:\n{self.log()}")

    def client(self, timeout: float = 60.0) -> Client:
        return Client(self.address, timeout=timeout)

    def log(self) -> str:
        """What this run of the daemon logged (the file is shared by restarts)."""
        return self.log_path.read_bytes()[self._log_offset :].decode(errors="replace")

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait: the graceful path."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def shutdown(self) -> None:
        """End a daemon that may still run: gracefully if it can, killed if that fails."""
        if self.process is None or self.process.poll() is not None:
            return
        try:
            self.stop()
        finally:
            self.kill()

    def kill(self) -> None:
        """SIGKILL: no cleanup at all."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)
