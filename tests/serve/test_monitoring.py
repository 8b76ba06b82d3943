"""Metrics shared by worker processes: a Metrics over the files several processes wrote, and a
``polymodal serve --workers 2`` whose every /metrics answer counts both workers' requests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import httpx
import pytest
from prometheus_client import values
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from polymodal.serve.monitoring import SHARED_METRICS_ENV, Metrics
from polymodal.serve.process import ServiceProcess

INFO = "/v1/info"


def total(families: Iterable, sample: str, **labels: str) -> float:
    """The sum of the ``sample`` values whose labels include ``labels``."""
    return sum(
        s.value
        for family in families
        for s in family.samples
        if s.name == sample and labels.items() <= s.labels.items()
    )


def rendered(text: str, sample: str, **labels: str) -> float:
    return total(text_string_to_metric_families(text), sample, **labels)


def metrics_of(pid: int, folder: Path, monkeypatch: pytest.MonkeyPatch) -> Metrics:
    """A Metrics writing to ``folder`` as process ``pid`` does (prometheus_client picks its
    values' class as a process imports it: a process of the service finds the folder set)."""
    monkeypatch.setenv(SHARED_METRICS_ENV, str(folder))
    monkeypatch.setattr(values, "ValueClass", values.MultiProcessValue(lambda: pid))
    return Metrics()


def ended_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", ""])
    process.wait()
    return process.pid


def test_metrics_sum_the_live_processes_of_a_shared_folder(tmp_path, monkeypatch):
    waiting = {os.getpid(): 3, os.getppid(): 5, ended_pid(): 7}
    processes = []
    for pid in waiting:
        metrics = metrics_of(pid, tmp_path, monkeypatch)
        metrics.requests.labels(INFO, "200").inc(2)
        on_depth, on_batch = metrics.watch_queue("predict")
        on_batch(4)
        on_depth(waiting[pid])
        processes.append(metrics)
    text = processes[0].render().decode()
    assert rendered(text, "polymodal_requests_total", endpoint=INFO) == 6  # the ended one's too
    assert rendered(text, "polymodal_batch_size_count", queue="predict") == 3
    assert rendered(text, "polymodal_batch_size_sum", queue="predict") == 12
    assert 'polymodal_queue_depth{queue="predict"} 8.0' in text  # 3 + 5: the ended one's left out


def wait_for_log(server: ServiceProcess, line: str, times: int, timeout: float = 60.0) -> None:
    start = time.monotonic()
    while server.log.read_text().count(line) < times:
        assert time.monotonic() - start < timeout, server.log.read_text()[-3000:]
        time.sleep(0.1)


def test_each_metrics_answer_of_two_workers_counts_both(served_model, tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # where the server makes its metrics folder
    server = ServiceProcess.start(served_model.model_dir, tmp_path / "serve.log", "--workers", "2")
    try:
        wait_for_log(server, "Application startup complete", 2)  # both take connections
        (shared,) = tmp_path.glob("polymodal-metrics-*")
        for _ in range(20):
            assert httpx.get(f"{server.url}{INFO}").status_code == 200  # a connection each
        answered = [  # by each worker: its own file of counts
            total(
                MultiProcessCollector.merge([str(path)]), "polymodal_requests_total", endpoint=INFO
            )
            for path in shared.glob("counter_*.db")
        ]
        answers = [httpx.get(f"{server.url}/metrics").text for _ in range(6)]
    finally:
        server.stop()
    assert len(answered) == 2 and all(answered) and sum(answered) == 20
    assert [rendered(a, "polymodal_requests_total", endpoint=INFO) for a in answers] == [20] * 6
    assert 'polymodal_queue_depth{queue="predict"} 0.0' in answers[0]  # summed: no pid label
    assert not shared.exists()  # removed at exit
