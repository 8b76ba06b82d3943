"""A real ``polymodal serve`` process on a free port of 127.0.0.1, for the tests that need one."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Server:
    """A ``polymodal serve`` subprocess, its base URL and the file its output goes to."""

    process: subprocess.Popen
    url: str
    log: Path

    @classmethod
    def start(cls, model_dir: Path, log: Path, *options: str) -> Server:
        """``polymodal serve model_dir *options`` on a free port; not yet waited for."""
        port = free_port()
        command = [sys.executable, "-m", "polymodal", "serve", str(model_dir), "--port", str(port)]
        with log.open("ab") as out:
            process = subprocess.Popen([*command, *options], stdout=out, stderr=subprocess.STDOUT)
        return cls(process, f"http://127.0.0.1:{port}", log)

    def wait_ready(self, timeout: float = 60.0) -> float:
        """Seconds until ``/readyz`` answers 200; an AssertionError with the log if never."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.process.poll() is not None:
                break
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return time.monotonic() - start
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"the server never became ready:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        """Terminate (then kill) the process if it still runs."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
