"""``polymodal serve`` as a child process on a free port of 127.0.0.1: started, waited for until
ready, stopped. For notebooks, test suites and load benchmarks that need a real server.

>>> with ServiceProcess.start("runs/x/best", "serve.log", "--max-batch", "8") as service:
...     httpx.get(f"{service.url}/v1/info").json()  # doctest: +SKIP
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import httpx


def free_port() -> int:
    """A TCP port of 127.0.0.1 nothing listens on (now)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class ServiceProcess:
    """A ``polymodal serve`` process, its base URL and the file its output goes to."""

    process: subprocess.Popen
    url: str
    log: Path

    @classmethod
    def start(
        cls, model_dir: str | Path, log: str | Path, *options: str, ready_within: float = 120.0
    ) -> ServiceProcess:
        """``polymodal serve model_dir *options`` on a free port, once ``/readyz`` answers 200
        (a RuntimeError with the end of the log if it never does within ``ready_within``
        seconds; 0: do not wait)."""
        port, log = free_port(), Path(log)
        command = [sys.executable, "-m", "polymodal", "serve", str(model_dir), "--port", str(port)]
        with log.open("ab") as out:
            process = subprocess.Popen([*command, *options], stdout=out, stderr=subprocess.STDOUT)
        service = cls(process, f"http://127.0.0.1:{port}", log)
        if ready_within:
            try:
                service.wait_ready(ready_within)
            except RuntimeError:
                service.stop()
                raise
        return service

    def wait_ready(self, timeout: float = 120.0) -> float:
        """Seconds until ``/readyz`` answers 200."""
        start = time.monotonic()
        while time.monotonic() - start < timeout and self.process.poll() is None:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return time.monotonic() - start
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        tail = self.log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"the service never became ready; the end of {self.log}:\n{tail}")

    def cpu_seconds(self) -> float:
        """User + system CPU seconds the process has used so far (Linux: /proc)."""
        stat = Path(f"/proc/{self.process.pid}/stat").read_text()
        fields = stat.rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM (the service finishes what is in flight), SIGKILL after ``timeout`` s."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> ServiceProcess:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()
