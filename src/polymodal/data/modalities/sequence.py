"""Numeric time series: per-channel standardisation fitted on the train rows, the last steps kept.

A cell is a JSON list of steps, each a list of one value per channel (a flat list of numbers
is one channel), or a path (relative to the manifest's folder) to a ``.npy`` file (1-D: one
channel; 2-D: steps x channels; never unpickled) or a ``.csv`` file (a row per step, an
optional header row).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from polymodal.data.modalities.base import FieldBase, json_list, pad_batch, resolve_path
from polymodal.data.schema import is_absent
from polymodal.errors import DataError, RowError


def list_numbers(cell: list[Any], what: str) -> np.ndarray:
    """A list of numbers (1-D) or of equal-length lists of numbers (2-D) as float64; null is
    NaN. Text, booleans and deeper nesting are row errors."""
    nested = bool(cell) and all(isinstance(x, list) for x in cell)
    flat = [v for step in cell for v in step] if nested else cell
    for v in flat:
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)):
            raise RowError(f"non-numeric {what}", f"it holds {v!r}, not a number")
    array = np.array([math.nan if v is None else v for v in flat], dtype=np.float64)
    if not nested:
        return array
    if len({len(step) for step in cell}) > 1:
        raise RowError(f"ragged {what}", "its steps hold different numbers of values")
    return array.reshape(len(cell), len(cell[0]))


def read_npy(path: Path, what: str) -> np.ndarray:
    """A numeric ``.npy`` array as float64 (object arrays are refused, never unpickled)."""
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise RowError(f"unreadable {what}", f"{path}: {err}") from None
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "biuf":
        kind = array.dtype if isinstance(array, np.ndarray) else "an archive"
        raise RowError(f"non-numeric {what}", f"{path} holds {kind}, not numbers")
    return array.astype(np.float64)


def read_numbers(
    value: Any, base_dir: Path, what: str, readers: dict[str, Callable[[Path], np.ndarray]]
) -> np.ndarray:
    """The numbers a cell holds: a JSON list, or a file (relative to ``base_dir``) whose suffix
    picks its reader in ``readers``; another suffix is a row error."""
    listed = json_list(value)
    if listed is not None:
        return list_numbers(listed, what)
    path = resolve_path(value, base_dir, what)
    read = readers.get(path.suffix.lower())
    if read is None:
        raise RowError(
            f"unknown {what} file", f"{path}: use a {' or '.join(readers)} file, or a JSON list"
        )
    return read(path)


def read_csv(path: Path, what: str) -> np.ndarray:
    """A CSV file of numbers, a row per step (2-D); the first row may be a header. An empty
    cell is NaN."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise RowError(f"unreadable {what}", f"{path}: {err}") from None
    steps: list[list[float]] = []
    reader = csv.reader(io.StringIO(text, newline=""))
    for record in reader:
        if not record:
            continue
        try:
            steps.append([float(cell) if cell.strip() else math.nan for cell in record])
        except ValueError:
            if reader.line_num == 1:
                continue  # a header row
            shown = ",".join(record)[:60]
            raise RowError(
                f"non-numeric {what}", f"{path} line {reader.line_num} holds text: {shown!r}"
            ) from None
    if len({len(step) for step in steps}) > 1:
        raise RowError(f"ragged {what}", f"{path}: its rows hold different numbers of values")
    return np.array(steps, dtype=np.float64).reshape(len(steps), -1 if steps else 0)


SEQUENCE_READERS: dict[str, Callable[[Path], np.ndarray]] = {
    ".npy": lambda path: read_npy(path, "sequence"),
    ".csv": lambda path: read_csv(path, "sequence"),
}


class SequencePreprocessor(FieldBase):
    """Reads a series into a standardised float (T, C) tensor; collates to (B, T, C) + lengths.

    A step with NaN in any channel is masked: it is left out of the series the encoder sees
    (the steps either side become neighbours), and the last ``max_length`` of the remaining
    steps are kept. The number of channels is fixed by the first train row that reads; a row
    with another channel count, text, an infinity, or no step free of NaN is quarantined.
    Fitting reads the train rows' files (paths relative to ``base_dir``).
    """

    kind = "sequence"

    def __init__(self, column: str, max_length: int = 256, base_dir: Path | None = None) -> None:
        self.column = column
        self.max_length = max_length
        self.base_dir = base_dir or Path()
        self.channels: int | None = None
        self.mean = np.zeros(0)
        self.std = np.ones(0)
        self._moments = (0, np.zeros(0), np.zeros(0))  # steps, mean, sum of squared deviations

    def series(self, value: Any, base_dir: Path) -> np.ndarray:
        """The (T, C) float64 steps free of NaN, the last ``max_length`` of them."""
        raw = read_numbers(value, base_dir, "sequence", SEQUENCE_READERS)
        if raw.ndim == 1:
            raw = raw[:, None]
        if raw.ndim != 2:
            raise RowError("bad sequence shape", f"shape {raw.shape}; expected (steps, channels)")
        if not raw.size:
            raise RowError("empty sequence", "it holds no step")
        if np.isinf(raw).any():
            raise RowError("non-finite sequence", "it holds an infinite value")
        if self.channels is not None and raw.shape[1] != self.channels:
            raise RowError(
                "wrong channel count",
                f"{raw.shape[1]} channels; the train rows have {self.channels}",
            )
        steps = raw[~np.isnan(raw).any(axis=1)]
        if not steps.size:
            raise RowError("empty sequence", f"no step of {raw.shape} is free of NaN")
        return steps[-self.max_length :]

    def observe(self, row: dict[str, Any]) -> None:
        """Per-channel mean and variance over the kept steps (Welford, merged a row at a time);
        the first row that reads fixes the channels, a row that does not is left out here
        (reading quarantines it)."""
        value = row.get(self.column)
        if is_absent(value):
            return
        try:
            steps = self.series(value, self.base_dir)
        except RowError:
            return
        if self.channels is None:
            self.channels = steps.shape[1]
            self._moments = (0, np.zeros(self.channels), np.zeros(self.channels))
        count, mean, squares = self._moments
        n = len(steps)
        row_mean = steps.mean(axis=0)
        delta = row_mean - mean
        total = count + n
        mean = mean + delta * n / total
        squares = squares + ((steps - row_mean) ** 2).sum(axis=0) + delta**2 * count * n / total
        self._moments = (total, mean, squares)

    def finish(self) -> None:
        if self.channels is None:
            raise DataError(
                f"field '{self.column}': no train row holds a readable sequence, so its "
                "channels are unknown; check the column, or leave the field out"
            )
        count, mean, squares = self._moments
        std = np.sqrt(squares / count)
        self.mean, self.std = mean, np.where(std > 0, std, 1.0)

    def read(self, value: Any, base_dir: Path, training: bool = False) -> torch.Tensor:
        assert self.channels is not None, "fit() the preprocessor before reading rows"
        steps = (self.series(value, base_dir) - self.mean) / self.std
        return torch.from_numpy(steps.astype(np.float32))

    def collate(self, items: list[torch.Tensor | None]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, C) zero-padded to the batch's longest, and each row's steps."""
        assert self.channels is not None
        return pad_batch(items, (self.channels,), torch.float32)

    def encoder_args(self) -> dict[str, Any]:
        return {"channels": self.channels, "max_length": self.max_length}

    def state(self) -> dict[str, Any]:
        return {
            "max_length": self.max_length,
            "channels": self.channels,
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
        }

    @classmethod
    def from_state(cls, column: str, state: dict[str, Any]) -> SequencePreprocessor:
        pre = cls(column, state["max_length"])
        pre.channels = state["channels"]
        pre.mean = np.asarray(state["mean"], dtype=np.float64)
        pre.std = np.asarray(state["std"], dtype=np.float64)
        return pre
