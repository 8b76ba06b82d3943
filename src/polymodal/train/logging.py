"""TensorBoard logging for a run: scalars and flattened metrics under ``run_dir/tensorboard/``."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any


def flatten_metrics(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Finite numeric leaves of nested ``metrics`` keyed by their ``/``-joined path; lists,
    strings, None and bools are skipped.

    >>> flatten_metrics({"classify_label": {"accuracy": 0.9, "labels": ["a"]}, "ok": True})
    {'classify_label/accuracy': 0.9}
    """
    flat = {}
    for key, value in metrics.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(flatten_metrics(value, name))
        elif (
            isinstance(value, numbers.Real)
            and not isinstance(value, bool)
            and math.isfinite(float(value))
        ):
            flat[name] = float(value)
    return flat


class TrainingLog:
    """Writes TensorBoard event files to ``run_dir/tensorboard/``; with ``enabled`` False (a
    non-main DDP rank) it writes nothing and creates no folder."""

    def __init__(self, run_dir: Path, enabled: bool = True) -> None:
        self.directory = Path(run_dir) / "tensorboard"
        self._writer = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

            self._writer = SummaryWriter(log_dir=str(self.directory))

    def scalars(self, step: int, values: Mapping[str, float], prefix: str) -> None:
        """Log each value as ``prefix/name`` at ``step`` (e.g. ``train/loss``)."""
        if self._writer is None:
            return
        for name, value in values.items():
            self._writer.add_scalar(f"{prefix}/{name}", float(value), step)

    def metrics(self, step: int, metrics: Mapping[str, Any], prefix: str = "val") -> None:
        """Log the finite numbers of nested ``metrics`` (``val/classify_label/accuracy``)."""
        self.scalars(step, flatten_metrics(metrics), prefix)

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        """Flush and close the event file; logging after this writes nothing."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> TrainingLog:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
