"""What every field preprocessor provides: fitting row by row, reading, collating, its state."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol, TypeVar

import torch

Row = dict[str, Any]
Fitted = TypeVar("Fitted", bound="FieldBase")


class FieldPreprocessor(Protocol):
    kind: str

    def observe(self, row: Row) -> None: ...

    def finish(self) -> None: ...

    def read(self, value: Any, base_dir: Path) -> torch.Tensor: ...

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
