"""A number field: one numeric column, a regression target, standardised with train statistics.

It reads as a one-column tabular field (the same missing-value rule, the same train mean and
standard deviation), so a row whose cell is missing has the field absent and a cell that is no
number quarantines its row.
"""

from __future__ import annotations

from typing import Any

import torch

from polymodal.data.modalities.tabular import TabularPreprocessor


class NumberPreprocessor(TabularPreprocessor):
    """One numeric column; rows collate to a (B, 1) tensor in standard units."""

    kind = "number"

    def __init__(self, column: str) -> None:
        super().__init__([column], [])

    @property
    def column(self) -> str:
        return self.numeric[0]

    def original_units(self, values: torch.Tensor) -> torch.Tensor:
        """Standardised ``values`` back in the column's own units."""
        return values * self.std[self.column] + self.mean[self.column]

    def encoder_args(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_state(cls, column: str, state: dict[str, Any]) -> NumberPreprocessor:
        pre = cls(column)
        pre.mean, pre.std = state["mean"], state["std"]
        return pre
