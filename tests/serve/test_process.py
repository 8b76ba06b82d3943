"""The service as a child process: ready, then stopped by its context; a failed start says why."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from polymodal.serve.process import ServiceProcess


def test_a_started_service_answers_until_its_context_ends(served_model, tmp_path: Path) -> None:
    with ServiceProcess.start(served_model.model_dir, tmp_path / "serve.log") as service:
        assert httpx.get(f"{service.url}/readyz").status_code == 200
        assert service.url.startswith("http://127.0.0.1:")
        assert service.cpu_seconds() > 0
    assert service.process.returncode is not None
    assert "Application shutdown complete" in service.log.read_text()  # SIGTERM: graceful


def test_a_service_that_cannot_start_raises_with_its_log(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=r"never became ready(.|\n)*config.json"):
        ServiceProcess.start(tmp_path / "no-model", tmp_path / "serve.log", ready_within=60)
