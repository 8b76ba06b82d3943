"""What a model costs: parameters per module, latency, throughput and peak memory.

Timings run on real examples (already read into tensors; file decoding is not timed): each
timed call collates the rows, moves the batch to the device and runs the model under
``torch.no_grad`` in eval mode, after warm-up calls that are not timed.

Peak memory is measured over the throughput calls. On CUDA it is
``torch.cuda.max_memory_allocated`` (tensors only). On CPU it is the process's resident set
size (RSS): the kernel's high-water mark (VmHWM in /proc/self/status), reset just before by
writing 5 to /proc/self/clear_refs (Linux). Where that reset is not possible the value is the
process's lifetime peak (``resource.getrusage``'s ru_maxrss), an upper bound, and
``increase_mb`` is null. tracemalloc is not used: it does not see tensor memory.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from polymodal.data.pipeline import Example
from polymodal.models.model import MultimodalModel

MB = 1024 * 1024


def _count(module: nn.Module) -> dict[str, int]:
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in module.parameters() if not p.requires_grad)
    return {"trainable": trainable, "frozen": frozen, "total": trainable + frozen}


def parameter_counts(model: MultimodalModel) -> dict[str, Any]:
    """Trainable, frozen and total parameters of each encoder, the fusion, each task head, all.

    The parts sum to ``total``; ``fusion`` is null for a model without one (retrieval only).
    """
    return {
        "encoders": {name: _count(encoder) for name, encoder in model.encoders.items()},
        "fusion": None if model.fusion is None else _count(model.fusion),
        "tasks": {name: _count(task) for name, task in model.tasks.items()},
        "total": _count(model),
    }


def _batches(examples: list[Example], batch_size: int, count: int) -> list[list[Example]]:
    """``count`` batches taking the examples in turn, from the start again when they run out."""
    n = len(examples)
    return [[examples[(i * batch_size + j) % n] for j in range(batch_size)] for i in range(count)]


def _timed(
    model: MultimodalModel, chunks: list[list[Example]], device: torch.device
) -> list[float]:
    """Seconds per call (collate, move to the device, forward), one per chunk."""
    seconds = []
    for chunk in chunks:
        start = time.perf_counter()
        model(model.preprocessor.collate(chunk).to(device))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds.append(time.perf_counter() - start)
    return seconds


def _status_kb(key: str) -> int | None:
    """A ``kB`` value from /proc/self/status (Linux), or None."""
    try:
        lines = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    return None


def _reset_rss_peak() -> bool:
    """Reset the kernel's RSS high-water mark to the current RSS (Linux 4.0+)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _status_kb("VmHWM") is not None


def _max_rss_mb() -> float:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux, bytes on macOS
    return peak / MB if sys.platform == "darwin" else peak / 1024


def _peak_memory(run: Callable[[], Any], device: torch.device) -> dict[str, Any]:
    """Peak memory while ``run()`` runs (the module doc says how it is measured)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        run()
        peak = torch.cuda.max_memory_allocated(device)
        return {
            "device": str(device),
            "method": "torch.cuda.max_memory_allocated",
            "peak_mb": peak / MB,
            "increase_mb": (peak - before) / MB,
        }
    if _reset_rss_peak():
        before = _status_kb("VmRSS") or 0
        run()
        peak = _status_kb("VmHWM") or 0
        return {
            "device": "cpu",
            "method": "rss_high_water_mark",
            "peak_mb": peak / 1024,
            "increase_mb": max(peak - before, 0) / 1024,
        }
    run()
    return {
        "device": "cpu",
        "method": "process_max_rss",
        "peak_mb": _max_rss_mb(),
        "increase_mb": None,
    }


@torch.no_grad()
def measure_efficiency(
    model: MultimodalModel,
    examples: list[Example],
    device: str = "cpu",
    batch_size: int = 32,
    latency_runs: int = 50,
    throughput_runs: int = 10,
    warmup: int = 3,
) -> dict[str, Any]:
    """Parameters, latency p50/p95 at batch 1, rows/s at ``batch_size``, peak memory (JSON-ready).

    The model is moved to ``device`` and left there.
    """
    if not examples:
        raise ValueError("efficiency needs at least one example to run the model on")
    if min(latency_runs, throughput_runs) < 1 or warmup < 0:
        raise ValueError("latency_runs and throughput_runs must be >= 1, warmup >= 0")
    target = torch.device(device)
    was_training = model.training
    model.to(target).eval()
    try:
        singles = _batches(examples, 1, warmup + latency_runs)
        _timed(model, singles[:warmup], target)
        single = _timed(model, singles[warmup:], target)
        chunks = _batches(examples, batch_size, warmup + throughput_runs)
        _timed(model, chunks[:warmup], target)
        timed: list[float] = []
        memory = _peak_memory(lambda: timed.extend(_timed(model, chunks[warmup:], target)), target)
    finally:
        model.train(was_training)
    latency_ms = np.asarray(single) * 1000
    return {
        "device": str(target),
        "threads": torch.get_num_threads(),
        "parameters": parameter_counts(model),
        "latency_ms": {
            "batch_size": 1,
            "p50": float(np.percentile(latency_ms, 50)),
            "p95": float(np.percentile(latency_ms, 95)),
            "runs": latency_runs,
        },
        "throughput": {
            "batch_size": batch_size,
            "rows_per_second": batch_size * len(timed) / sum(timed),
            "runs": throughput_runs,
        },
        "memory": memory,
    }
