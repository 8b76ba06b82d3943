"""Precomputed feature vectors (embeddings from another model): (D,) or (T, D) per row.

A cell is a JSON list of numbers (or of equal-length lists: T vectors), or a path (relative to
the manifest's folder) to a ``.npy`` file (never unpickled) or a ``.safetensors`` file holding
one tensor. The first train row that reads fixes D and whether rows are one vector or several.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from polymodal.data.modalities.base import FieldBase, pad_batch
from polymodal.data.modalities.sequence import read_npy, read_numbers
from polymodal.data.schema import is_absent
from polymodal.errors import DataError, RowError


def read_safetensors(path: Path) -> np.ndarray:
    """The one tensor of a ``.safetensors`` file as float64 (bfloat16 included)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise RowError("unreadable features", f"{path}: {err}") from None
    if len(tensors) != 1:
        raise RowError(
            "unreadable features", f"{path} holds {len(tensors)} tensors; expected exactly one"
        )
    tensor = next(iter(tensors.values()))
    if tensor.is_complex():
        raise RowError("non-numeric features", f"{path} holds {tensor.dtype} values")
    return tensor.double().numpy()


FEATURE_READERS: dict[str, Callable[[Path], np.ndarray]] = {
    ".npy": lambda path: read_npy(path, "features"),
    ".safetensors": read_safetensors,
}


class FeaturesPreprocessor(FieldBase):
    """Reads a (D,) or (T, D) float tensor as stored; collates to (B, D), or to (B, T, D) with
    lengths. NaN or infinite values, or another shape than the train rows', are row errors.
    Fitting reads the train rows' files (paths relative to ``base_dir``)."""

    kind = "features"

    def __init__(self, column: str, base_dir: Path | None = None) -> None:
        self.column = column
        self.base_dir = base_dir or Path()
        self.dim: int | None = None
        self.sequence = False  # rows are (T, D), not (D,)

    def array(self, value: Any, base_dir: Path) -> np.ndarray:
        array = read_numbers(value, base_dir, "features", FEATURE_READERS)
        if array.ndim not in (1, 2) or not array.size:
            raise RowError("bad features shape", f"shape {array.shape}; expected (D,) or (T, D)")
        if not np.isfinite(array).all():
            raise RowError("features hold NaN", "they hold NaN or infinite values")
        if self.dim is not None and (array.shape[-1], array.ndim == 2) != (
            self.dim,
            self.sequence,
        ):
            expected = f"(T, {self.dim})" if self.sequence else f"({self.dim},)"
            raise RowError(
                "wrong features shape", f"shape {array.shape}; the train rows have {expected}"
            )
        return array

    def observe(self, row: dict[str, Any]) -> None:
        """The first train row that reads fixes D (and one vector or several)."""
        value = row.get(self.column)
        if self.dim is not None or is_absent(value):
            return
        try:
            array = self.array(value, self.base_dir)
        except RowError:
            return
        self.dim, self.sequence = array.shape[-1], array.ndim == 2

    def finish(self) -> None:
        if self.dim is None:
            raise DataError(
                f"field '{self.column}': no train row holds readable features, so their size "
                "is unknown; check the column, or leave the field out"
            )

    def read(self, value: Any, base_dir: Path, training: bool = False) -> torch.Tensor:
        assert self.dim is not None, "fit() the preprocessor before reading rows"
        return torch.from_numpy(self.array(value, base_dir).astype(np.float32))

    def collate(self, items: list[torch.Tensor | None]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, D) with zeros where absent, or (B, T, D) zero-padded with each row's T."""
        assert self.dim is not None
        if self.sequence:
            return pad_batch(items, (self.dim,), torch.float32)
        blank = torch.zeros(self.dim)
        return torch.stack([blank if x is None else x for x in items]), None

    def encoder_args(self) -> dict[str, Any]:
        return {"input_dim": self.dim}

    def state(self) -> dict[str, Any]:
        return {"dim": self.dim, "sequence": self.sequence}

    @classmethod
    def from_state(cls, column: str, state: dict[str, Any]) -> FeaturesPreprocessor:
        pre = cls(column)
        pre.dim, pre.sequence = state["dim"], state["sequence"]
        return pre
