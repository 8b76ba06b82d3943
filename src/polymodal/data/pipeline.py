"""The Preprocessor: one object that turns manifest rows into tensors and collates Batches.

It is fitted on the train split, saved with the model and loaded by the predictor, so training,
evaluation and serving read data the same way.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from polymodal.config import DataConfig
from polymodal.data.modalities.image import ImagePreprocessor
from polymodal.data.modalities.tabular import LabelPreprocessor, TabularPreprocessor
from polymodal.data.modalities.text import TextPreprocessor
from polymodal.data.quarantine import Quarantine, QuarantinedRow
from polymodal.data.schema import IGNORED_COLUMNS, Batch, Schema, infer_schema, is_absent
from polymodal.data.sources import LINE_KEY, Manifest, Row, read_manifest
from polymodal.errors import ConfigError, DataError, RowError, did_you_mean
from polymodal.io import atomic_write_text
from polymodal.progress import progress_bar

PREPROCESSOR_FILE = "preprocessor.json"
SPLITS = ("train", "val", "test")


class FieldPreprocessor(Protocol):
    kind: str

    def fit(self, rows: list[Row]) -> None: ...

    def read(self, value: Any, base_dir: Path) -> torch.Tensor: ...

    def collate(
        self, items: list[torch.Tensor | None]
    ) -> tuple[torch.Tensor, torch.Tensor | None]: ...

    def encoder_args(self) -> dict[str, Any]: ...

    def state(self) -> dict[str, Any]: ...


def _field_preprocessor(name: str, schema: Schema, data: DataConfig) -> FieldPreprocessor:
    spec = schema.fields[name]
    if spec.kind == "image":
        i = data.image
        return ImagePreprocessor(name, i.size, i.mean, i.std, i.max_pixels)
    if spec.kind == "text":
        t = data.text
        return TextPreprocessor(name, t.tokenizer, t.max_length, t.min_freq, t.max_vocab)
    if spec.kind == "tabular":
        numeric = spec.numeric if spec.categorical else schema.columns(name)
        return TabularPreprocessor(numeric, spec.categorical)
    return LabelPreprocessor(name, spec.labels)


_FROM_STATE = {
    "image": ImagePreprocessor.from_state,
    "text": TextPreprocessor.from_state,
    "tabular": TabularPreprocessor.from_state,
    "label": LabelPreprocessor.from_state,
}

Example = dict[str, Any]  # field -> tensor or None (absent), plus LINE_KEY


class Preprocessor:
    """Per-field preprocessors for a schema.

    ``columns`` are all the columns of the manifest it was fitted on (inputs, targets and
    bookkeeping alike): a row with any other key names a field the model never saw.
    """

    def __init__(
        self,
        schema: Schema,
        fields: dict[str, FieldPreprocessor],
        columns: list[str] | None = None,
    ) -> None:
        self.schema = schema
        self.fields = dict(sorted(fields.items()))
        self.columns = columns or sorted(
            {*IGNORED_COLUMNS, *(c for name in schema.fields for c in schema.columns(name))}
        )

    def input_columns(self, inputs: list[str]) -> list[str]:
        """The columns that the input fields ``inputs`` read."""
        return [column for name in inputs for column in self.schema.columns(name)]

    @classmethod
    def build(
        cls, schema: Schema, data: DataConfig, columns: list[str] | None = None
    ) -> Preprocessor:
        fields = {name: _field_preprocessor(name, schema, data) for name in schema.fields}
        return cls(schema, fields, columns)

    def fit(
        self, rows: list[Row], fitted: dict[str, FieldPreprocessor] | None = None
    ) -> Preprocessor:
        """Fit every field on ``rows``, except those given already ``fitted`` (taken as is)."""
        fitted = fitted or {}
        for name in self.fields:
            if name in fitted:
                given, own = type(fitted[name]).__name__, type(self.fields[name]).__name__
                if given != own:
                    raise ConfigError(
                        f"field '{name}' is read by a {own} here but the fitted preprocessing "
                        f"given for it is a {given}: an encoder taken from a saved model "
                        "needs a field of the same kind"
                    )
                self.fields[name] = fitted[name]
            else:
                self.fields[name].fit(rows)
        return self

    def _value(self, name: str, row: Row) -> Any:
        pre = self.fields[name]
        if isinstance(pre, TabularPreprocessor):
            return None if pre.is_missing(row) else {c: row.get(c) for c in pre.columns}
        value = row.get(name)
        return None if is_absent(value) else value

    def example(self, row: Row, base_dir: Path) -> Example:
        """Tensors for one row; raises RowError (with the field in ``field``) on a bad value."""
        out: Example = {LINE_KEY: row.get(LINE_KEY, 0)}
        for name, pre in self.fields.items():
            value = self._value(name, row)
            try:
                out[name] = None if value is None else pre.read(value, base_dir)
            except RowError as err:
                err.field = name  # type: ignore[attr-defined]
                raise
        return out

    def examples(
        self, rows: list[Row], base_dir: Path, quarantine: Quarantine, source: str, label: str = ""
    ) -> list[Example]:
        """Read every row; a bad row is quarantined with its reason and the rest go on."""
        out = []
        for row in progress_bar(rows, f"reading {label or source}"):
            try:
                out.append(self.example(row, base_dir))
            except RowError as err:
                field = getattr(err, "field", None)
                line = int(row.get(LINE_KEY, 0))
                quarantine.add(QuarantinedRow(source, line, err.reason, err.detail, field))
        return out

    def collate(self, examples: list[Example]) -> Batch:
        values, present, lengths = {}, {}, {}
        for name, pre in self.fields.items():
            items = [ex.get(name) for ex in examples]
            values[name], length = pre.collate(items)
            present[name] = torch.tensor([x is not None for x in items], dtype=torch.bool)
            if length is not None:
                lengths[name] = length
        return Batch(values, present, lengths, [int(ex[LINE_KEY]) for ex in examples])

    def encoder_args(self, name: str) -> dict[str, Any]:
        return self.fields[name].encoder_args()

    def state(self) -> dict[str, Any]:
        return {
            "schema": self.schema.to_dict(),
            "columns": self.columns,
            "fields": {name: pre.state() for name, pre in self.fields.items()},
        }

    def save(self, directory: str | Path) -> Path:
        text = json.dumps(self.state(), ensure_ascii=False, indent=1)
        return atomic_write_text(Path(directory) / PREPROCESSOR_FILE, text)

    @classmethod
    def load(cls, directory: str | Path) -> Preprocessor:
        path = Path(directory) / PREPROCESSOR_FILE
        if not path.is_file():
            raise DataError(f"{path} is missing; is {directory} a model saved by polymodal?")
        state = json.loads(path.read_text(encoding="utf-8"))
        schema = Schema.from_dict(state["schema"])
        fields = {
            name: _FROM_STATE[schema.fields[name].kind](name, field_state)
            for name, field_state in state["fields"].items()
        }
        return cls(schema, fields, state.get("columns"))


@dataclass
class PreparedData:
    """A manifest read, split, fitted and turned into examples, with what was quarantined."""

    manifest: Manifest
    schema: Schema
    preprocessor: Preprocessor
    splits: dict[str, list[Example]]
    quarantine: Quarantine
    schema_inferred: bool


def split_rows(
    rows: list[Row], data: DataConfig, seed: int, quarantine: Quarantine, source: str = ""
) -> dict[str, list[Row]]:
    """Use the manifest's split column, or a seeded random split by the configured fractions.

    In a split column, an absent or empty value means train; a name other than train, val or
    test quarantines the row (it would otherwise sit in a split nothing reads).
    """
    column = data.split_column
    if any(column in row for row in rows):
        splits: dict[str, list[Row]] = {name: [] for name in SPLITS}
        for row in rows:
            value = row.get(column)
            name = "train" if is_absent(value) else str(value).strip()
            if name in splits:
                splits[name].append(row)
            else:
                detail = f"{name!r} is not a split; use {', '.join(SPLITS)} (or leave it empty)"
                line = int(row.get(LINE_KEY, 0))
                quarantine.add(QuarantinedRow(source, line, "unknown split", detail, column))
        return splits
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n_val, n_test = round(len(rows) * data.val_fraction), round(len(rows) * data.test_fraction)
    picked = {
        "val": order[:n_val],
        "test": order[n_val : n_val + n_test],
        "train": order[n_val + n_test :],
    }
    return {name: [rows[i] for i in sorted(picked[name])] for name in SPLITS}


def check_columns(schema: Schema, manifest: Manifest) -> None:
    """Every column the schema reads holds a value in some row of the manifest.

    A field whose column is in no row (a typo, a renamed column) would otherwise train with
    that modality absent from every row, or a target with no labels.
    """
    filled = {key for row in manifest.rows for key, value in row.items() if not is_absent(value)}
    filled.discard(LINE_KEY)
    columns = sorted(filled)
    for name in schema.fields:
        for column in schema.columns(name):
            if column not in filled:
                raise ConfigError(
                    f"data.fields.{name}: column '{column}' has no value in any row of "
                    f"{manifest.path}{did_you_mean(column, columns)} (the manifest's columns: "
                    f"{', '.join(columns)})"
                )


def prepare_data(
    data: DataConfig,
    seed: int = 0,
    preprocessor: Preprocessor | None = None,
    fitted: dict[str, FieldPreprocessor] | None = None,
    targets: Sequence[str] = (),
) -> PreparedData:
    """Read the manifest, settle the schema, fit on train (unless given), read every split.

    ``fitted`` field preprocessors (those of encoders taken from a saved model) are not refit.
    An inferred schema takes ``data.target``, else ``targets`` (the tasks' targets), as targets.
    """
    quarantine = Quarantine(strict=data.strict)
    manifest = read_manifest(data.manifest, quarantine)
    splits = split_rows(manifest.rows, data, seed, quarantine, str(manifest.path))
    if not splits["train"] and preprocessor is None:
        raise DataError(
            f"{data.manifest}: no rows in the train split (column '{data.split_column}')"
        )
    inferred = preprocessor is None and data.fields is None
    if preprocessor is None:
        if data.fields:
            schema = Schema(dict(data.fields))
        else:
            schema = infer_schema(splits["train"], [data.target] if data.target else targets)
        check_columns(schema, manifest)
        preprocessor = Preprocessor.build(schema, data, manifest.columns).fit(
            splits["train"], fitted
        )
    else:
        check_columns(preprocessor.schema, manifest)
    source = str(manifest.path)
    examples = {
        name: preprocessor.examples(rows, manifest.base_dir, quarantine, source, name)
        for name, rows in splits.items()
    }
    return PreparedData(manifest, preprocessor.schema, preprocessor, examples, quarantine, inferred)
