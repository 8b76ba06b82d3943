"""Fields, their modality kinds and roles, and the Batch every stage passes along."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from polymodal.config import FieldSpec
from polymodal.data.quarantine import QuarantinedRow
from polymodal.errors import DataError, did_you_mean

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")
FILE_KINDS = (("image", IMAGE_SUFFIXES), ("audio", AUDIO_SUFFIXES), ("video", VIDEO_SUFFIXES))
TARGET_NAMES = ("label", "labels", "target", "class", "y", "answer", "answers")
IGNORED_COLUMNS = ("id", "split")
NUMERIC_SHARE = 0.95  # a column with at least this share of numbers is numeric; the rest quarantine


@dataclass
class Schema:
    """The fields of a dataset, keyed by field name (iterated in sorted order)."""

    fields: dict[str, FieldSpec]

    def __post_init__(self) -> None:
        self.fields = dict(sorted(self.fields.items()))

    @property
    def inputs(self) -> list[str]:
        return [name for name, spec in self.fields.items() if spec.role == "input"]

    @property
    def targets(self) -> list[str]:
        return [name for name, spec in self.fields.items() if spec.role == "target"]

    def columns(self, name: str) -> list[str]:
        """The manifest columns field ``name`` reads: a tabular field's own, a transcribed
        text field's audio column, else its name."""
        spec = self.fields[name]
        return spec.numeric + spec.categorical or [spec.transcribe or name]

    def to_dict(self) -> dict[str, Any]:
        return {name: spec.model_dump(exclude_defaults=True) for name, spec in self.fields.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Schema:
        return cls({name: FieldSpec.model_validate(spec) for name, spec in data.items()})


def is_absent(value: Any) -> bool:
    """A value that counts as missing: None, NaN or a blank string."""
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return True
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return False
        return True
    return False


def _is_series(value: Any) -> bool:
    """A non-empty list of lists of numbers (a time series' steps)."""
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(step, list) and all(map(_is_step_value, step)) for step in value)
    )


def _is_step_value(value: Any) -> bool:
    """A number in a JSON series (null is a missing value)."""
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool))


def _is_answers(value: Any) -> bool:
    """A non-empty list of strings (the human answers to a question)."""
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) for v in value)


def _infer_kind(name: str, values: list[Any], target: str | None) -> FieldSpec | None:
    """The field a column's ``values`` make; ``target`` is the kind a task reads it as (None:
    an input)."""
    if target is None and values and all(map(_is_series, values)):
        return FieldSpec(kind="sequence")
    if target == "text":  # generated text: one reference text or a list of them
        return FieldSpec(kind="text", role="target")
    if target == "answers" or (target and values and all(map(_is_answers, values))):
        return FieldSpec(kind="answers", role="target")
    if not values or any(isinstance(v, list | dict) for v in values):
        return None
    if target == "number" and sum(map(_is_number, values)) < NUMERIC_SHARE * len(values):
        example = next(v for v in values if not _is_number(v))
        raise DataError(
            f"target column '{name}' holds values that are not numbers (e.g. {example!r}); "
            "a regress task predicts a numeric column"
        )
    if target is not None:
        return FieldSpec(kind=target, role="target")  # type: ignore[arg-type]
    if sum(_is_number(v) for v in values) >= NUMERIC_SHARE * len(values):
        return FieldSpec(kind="tabular", numeric=[name])
    texts = [str(v) for v in values]
    for kind, suffixes in FILE_KINDS:
        if sum(t.lower().endswith(suffixes) for t in texts) >= 0.9 * len(texts):
            return FieldSpec(kind=kind)
    distinct = len(set(texts))
    words = sum(len(t.split()) for t in texts) / len(texts)
    if words <= 2 and distinct <= max(20, len(texts) // 20):
        return FieldSpec(kind="tabular", categorical=[name])
    return FieldSpec(kind="text")


def infer_schema(
    rows: Iterable[Mapping[str, Any]], targets: Sequence[str] | Mapping[str, str] = ()
) -> Schema:
    """Guess each column's kind from its values.

    Image, audio and video paths (by suffix), numbers (numeric tabular; a column numeric in at
    least 95 % of its values is numeric, and the odd rows are quarantined when read), short
    low-cardinality strings (categorical tabular), other strings (text), lists of lists of
    numbers (a time series: sequence). The ``targets`` columns, or when none is given those
    named like ``label`` or ``answer``, become targets: of the kind ``targets`` maps them to,
    else answers when they hold lists of strings (human answers), else classification labels;
    a named target in no row is an error. ``id``, ``split`` and other nested values (flat
    lists, objects) are skipped.
    """
    columns: dict[str, list[Any]] = {}
    for row in rows:
        for key, value in row.items():
            if key.startswith("_") or key in IGNORED_COLUMNS:
                continue
            bucket = columns.setdefault(key, [])
            if not is_absent(value):
                bucket.append(value)
    for target in targets:
        if not columns.get(target):
            raise DataError(
                f"target column '{target}' has no value in any row"
                f"{did_you_mean(target, list(columns))} (columns: {', '.join(columns)}); set "
                "data.target, or the task's target, to the column that holds the labels"
            )
    named = targets or [name for name in columns if name.lower() in TARGET_NAMES]
    kinds = dict(named) if isinstance(named, Mapping) else dict.fromkeys(named, "label")
    fields = {}
    for name, values in columns.items():
        spec = _infer_kind(name, values, kinds.get(name))
        if spec is not None:
            fields[name] = spec
    return Schema(fields)


@dataclass
class Batch:
    """Collated tensors keyed by field name.

    ``values[f]`` holds the field's tensor (zeros where absent), ``present[f]`` a (B,) bool mask,
    ``lengths[f]`` each row's length in a variable-length field (text tokens, audio frames or
    samples, time-series steps, video frames; 0 where absent), ``rows`` the manifest row numbers;
    ``quarantined`` the rows found bad while this batch was read (left out of it).
    """

    values: dict[str, torch.Tensor]
    present: dict[str, torch.Tensor]
    lengths: dict[str, torch.Tensor] = field(default_factory=dict)
    rows: list[int] = field(default_factory=list)
    quarantined: list[QuarantinedRow] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows)

    def to(self, device: torch.device | str) -> Batch:
        move = {k: v.to(device) for k, v in self.values.items()}
        return Batch(
            move,
            {k: v.to(device) for k, v in self.present.items()},
            {k: v.to(device) for k, v in self.lengths.items()},
            self.rows,
            self.quarantined,
        )
