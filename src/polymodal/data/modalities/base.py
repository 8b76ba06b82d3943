"""What every field preprocessor provides: fitting row by row, reading, collating, its state."""

from __future__ import annotations

import io
import json
from abc import ABC, abstractmethod
from collections.abc import Hashable, Iterable
from pathlib import Path
from typing import Any, Protocol, TypeVar

import torch

from polymodal.errors import RowError

Row = dict[str, Any]
Fitted = TypeVar("Fitted", bound="FieldBase")


class FieldPreprocessor(Protocol):
    kind: str

    def observe(self, row: Row) -> None: ...

    def finish(self) -> None: ...

    def read(self, value: Any, base_dir: Path, training: bool = False) -> torch.Tensor: ...

    def collate(
        self, items: list[torch.Tensor | None]
    ) -> tuple[torch.Tensor, torch.Tensor | None]: ...

    def model_input(self, values: torch.Tensor, present: torch.Tensor) -> torch.Tensor: ...

    def encoder_args(self) -> dict[str, Any]: ...

    def state(self) -> dict[str, Any]: ...


class FieldBase:
    """What field preprocessors share: fitting as one stream (``observe`` each train row once,
    then ``finish``) and the batch tensor handed to the model as collated."""

    def observe(self, row: Row) -> None:
        """Take one train row into the statistics (nothing, for a field that fits nothing)."""

    def finish(self) -> None:
        """Turn what was observed into the fitted state."""

    def fit(self: Fitted, rows: Iterable[Row]) -> Fitted:
        for row in rows:
            self.observe(row)
        self.finish()
        return self

    def model_input(self, values: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """The collated tensor as the encoder takes it, on its device (here: unchanged)."""
        return values


class FileField(FieldBase, ABC):
    """A field whose cell names files decoded into one tensor (image, audio, video).

    ``resolve`` (cheap: the files exist) and ``decode`` (the work) are apart so that a store
    decodes each distinct source once, in DataLoader workers. ``training`` reads may draw
    random crops (from torch's RNG); evaluation reads are deterministic.
    """

    @abstractmethod
    def resolve(self, value: Any, base_dir: Path) -> Hashable:
        """The source a cell names (paths relative to ``base_dir``); RowError when missing."""

    @abstractmethod
    def decode(self, source: Any, training: bool = False) -> torch.Tensor:
        """The tensor of a resolved source; RowError when it cannot be decoded."""

    def read(self, value: Any, base_dir: Path, training: bool = False) -> torch.Tensor:
        return self.decode(self.resolve(value, base_dir), training)


class GivenBytes(io.BytesIO):
    """A file's bytes given in memory (an upload) instead of its path; named by its size."""

    def __str__(self) -> str:
        return f"the {len(self.getbuffer()):,} bytes given"


def given_bytes(value: Any) -> GivenBytes | None:
    """``value`` as an in-memory file when it is bytes, else None."""
    if isinstance(value, bytes | bytearray | memoryview):
        return GivenBytes(bytes(value))
    return None


def resolve_path(value: Any, base_dir: Path, what: str) -> Path:
    """The file or folder a cell names (relative to ``base_dir``), which must exist."""
    path = Path(str(value)).expanduser()
    path = path if path.is_absolute() else base_dir / path
    if not path.exists():
        raise RowError(f"missing {what} file", f"{path} does not exist")
    return path


def json_list(value: Any) -> list[Any] | None:
    """A cell holding a list: a JSON manifest's list, or a CSV cell's JSON text of one
    (``"[1, 2]"``); None for any other cell (a path)."""
    if isinstance(value, list):
        return value
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError as err:
            raise RowError("malformed list", f"{value[:40]!r} is not a JSON list: {err}") from None
        if isinstance(parsed, list):
            return parsed
    return None


def pad_batch(
    items: list[torch.Tensor | None], step: tuple[int, ...], dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """Variable-length items (first dimension: time) zero-padded to the longest of the batch
    (at least 1), and each one's length (0 where absent); ``step`` is the shape of one step."""
    lengths = torch.tensor([0 if x is None else len(x) for x in items], dtype=torch.long)
    out = torch.zeros((len(items), max(1, int(lengths.max())), *step), dtype=dtype)
    for i, x in enumerate(items):
        if x is not None:
            out[i, : len(x)] = x
    return out, lengths
