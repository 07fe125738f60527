"""A real ``memosd serve`` subprocess for the benchmarks: temp data dir, free port."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from memosd.client import Client

READY = re.compile(r"memosd ready on (\S+):(\d+) \(data dir ")


class Daemon:
    """Context manager: starts the daemon on ``data_dir`` (a fresh temp dir by default)."""

    def __init__(self, data_dir: Path | None = None, env: dict[str, str] | None = None) -> None:
        self._tmp = None if data_dir else tempfile.TemporaryDirectory(prefix="memosd-bench-")
        self.data_dir = data_dir or Path(self._tmp.name) / "data"  # type: ignore[union-attr]
        self.log_path = self.data_dir.parent / "daemon.log"
        self.env = env or {}
        self.process: subprocess.Popen[bytes] | None = None
        self.address = ""

    def __enter__(self) -> Daemon:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    def start(self, timeout: float = 600.0) -> None:
        env = {**os.environ, **self.env}
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        command = [sys.executable, "-m", "memosd.cli.daemon", "serve"]
        command += ["--data-dir", str(self.data_dir), "--listen", "127.0.0.1:0"]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=log, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log_path.read_bytes()[offset:].decode(errors="replace")
            if match := READY.search(text):
                self.address = f"{match.group(1)}:{match.group(2)}"
                return
            if self.process.poll() is not None:
                raise RuntimeError(f"memosd exited with {self.process.returncode}:\n{text}")
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"memosd not ready in {timeout}s; log in {self.log_path}")

    def client(self) -> Client:
        return Client(self.address, timeout=600.0)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(120)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)
        self.process = None

    def rss_bytes(self) -> int:
        import psutil

        assert self.process is not None
        return int(psutil.Process(self.process.pid).memory_info().rss)

    def cpu_seconds(self) -> float:
        """User plus system CPU time the daemon has used so far (all its threads)."""
        import psutil

        assert self.process is not None
        times = psutil.Process(self.process.pid).cpu_times()
        return float(times.user + times.system)
