"""The Preprocessor: one object that turns manifest rows into tensors and collates Batches.

It is fitted on the train split, saved with the model and loaded by the predictor, so training,
evaluation and serving read data the same way.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel

from polymodal.config import DataConfig
from polymodal.data.cache import cache_root, open_store
from polymodal.data.dataset import RowDataset, decoding_workers
from polymodal.data.modalities.answers import AnswersPreprocessor
from polymodal.data.modalities.audio import AudioPreprocessor
from polymodal.data.modalities.base import FieldPreprocessor
from polymodal.data.modalities.features import FeaturesPreprocessor
from polymodal.data.modalities.image import ImagePreprocessor
from polymodal.data.modalities.number import NumberPreprocessor
from polymodal.data.modalities.sequence import SequencePreprocessor
from polymodal.data.modalities.tabular import LabelPreprocessor, TabularPreprocessor
from polymodal.data.modalities.target_text import TargetTextPreprocessor
from polymodal.data.modalities.text import TextPreprocessor
from polymodal.data.modalities.video import VideoPreprocessor
from polymodal.data.quarantine import Quarantine, QuarantinedRow
from polymodal.data.schema import IGNORED_COLUMNS, Batch, Schema, infer_schema, is_absent
from polymodal.data.sources import LINE_KEY, ManifestIndex, Row, index_manifest
from polymodal.data.transcribe import TranscribedTextPreprocessor
from polymodal.errors import ConfigError, DataError, RowError, did_you_mean
from polymodal.io import atomic_write_text
from polymodal.progress import progress_bar

PREPROCESSOR_FILE = "preprocessor.json"
SPLITS = ("train", "val", "test")


def _field_preprocessor(name: str, schema: Schema, data: DataConfig) -> FieldPreprocessor:
    spec = schema.fields[name]
    if spec.kind == "image":
        i = data.image
        return ImagePreprocessor(name, i.size, i.mean, i.std, i.max_pixels)
    if spec.kind == "text":
        t = data.text
        if spec.role == "target":  # generated (a caption): references kept as written
            return TargetTextPreprocessor(name, t.max_length, t.min_freq, t.max_vocab)
        if spec.transcribe:  # the speech in another column's audio files
            return TranscribedTextPreprocessor(
                spec.transcribe,
                t.tokenizer,
                t.max_length,
                t.min_freq,
                t.max_vocab,
                base_dir=data.manifest.parent,  # where fitting finds the train rows' files
            )
        return TextPreprocessor(name, t.tokenizer, t.max_length, t.min_freq, t.max_vocab)
    if spec.kind == "number":
        return NumberPreprocessor(name)
    if spec.kind == "tabular":
        numeric = spec.numeric if spec.categorical else schema.columns(name)
        return TabularPreprocessor(numeric, spec.categorical)
    if spec.kind == "audio":
        a = data.audio
        return AudioPreprocessor(
            name, a.sample_rate, a.max_seconds, a.n_mels, a.n_fft, a.hop_length, a.features
        )
    if spec.kind == "video":
        v = data.video
        return VideoPreprocessor(name, v.frames, v.size, v.max_seconds)
    base_dir = data.manifest.parent  # where fitting finds the train rows' files
    if spec.kind == "sequence":
        return SequencePreprocessor(name, data.sequence.max_length, base_dir)
    if spec.kind == "features":
        return FeaturesPreprocessor(name, base_dir)
    if spec.kind == "answers":
        return AnswersPreprocessor(name)
    return LabelPreprocessor(name, spec.labels)


_FROM_STATE = {
    "image": ImagePreprocessor.from_state,
    "text": TextPreprocessor.from_state,
    "tabular": TabularPreprocessor.from_state,
    "label": LabelPreprocessor.from_state,
    "number": NumberPreprocessor.from_state,
    "answers": AnswersPreprocessor.from_state,
    "audio": AudioPreprocessor.from_state,
    "sequence": SequencePreprocessor.from_state,
    "video": VideoPreprocessor.from_state,
    "features": FeaturesPreprocessor.from_state,
}


def _field_from_state(schema: Schema, name: str, state: dict[str, Any]) -> FieldPreprocessor:
    spec = schema.fields[name]
    if spec.transcribe:
        return TranscribedTextPreprocessor.from_state(spec.transcribe, state)
    if spec.kind == "text" and spec.role == "target":
        return TargetTextPreprocessor.from_state(name, state)
    return _FROM_STATE[spec.kind](name, state)


# (field name, kind, the options of its kind) -> the options it is read with (see build)
FieldOptions = Callable[[str, str, dict[str, Any]], dict[str, Any]]


def _field_data(name: str, schema: Schema, data: DataConfig, options: FieldOptions) -> DataConfig:
    """``data`` with field ``name``'s kind section (data.text, data.image...) as ``options``
    adjusts it."""
    kind = schema.fields[name].kind
    section = getattr(data, kind, None)
    if not isinstance(section, BaseModel):  # tabular, label, features: no options
        return data
    adjusted = type(section).model_validate(options(name, kind, section.model_dump()))
    return data.model_copy(update={kind: adjusted})


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
        cls,
        schema: Schema,
        data: DataConfig,
        columns: list[str] | None = None,
        options: FieldOptions | None = None,
    ) -> Preprocessor:
        """Unfitted preprocessors for ``schema``'s fields, read as ``data`` says; ``options``
        adjusts a field's options (what a pretrained encoder needs: its own tokenizer, its
        image size...)."""
        fields = {
            name: _field_preprocessor(
                name, schema, data if options is None else _field_data(name, schema, data, options)
            )
            for name in schema.fields
        }
        return cls(schema, fields, columns)

    def fit(
        self, rows: Iterable[Row], fitted: dict[str, FieldPreprocessor] | None = None
    ) -> Preprocessor:
        """Fit every field in one pass over ``rows``, except those given already ``fitted``
        (taken as is)."""
        fitted = fitted or {}
        for name, given in fitted.items():
            if name not in self.fields:
                continue
            own = type(self.fields[name]).__name__
            if type(given).__name__ != own:
                raise ConfigError(
                    f"field '{name}' is read by a {own} here but the fitted preprocessing "
                    f"given for it is a {type(given).__name__}: an encoder taken from a saved "
                    "model needs a field of the same kind"
                )
            self.fields[name] = given
        fitting = [pre for name, pre in self.fields.items() if name not in fitted]
        for row in rows:
            for pre in fitting:
                pre.observe(row)
        for pre in fitting:
            pre.finish()
        return self

    def value(self, name: str, row: Row) -> Any:
        """What field ``name`` reads from ``row``; None when it is absent there."""
        pre = self.fields[name]
        if isinstance(pre, TabularPreprocessor):
            return None if pre.is_missing(row) else {c: row.get(c) for c in pre.columns}
        value = row.get(self.schema.columns(name)[0])
        return None if is_absent(value) else value

    def example(self, row: Row, base_dir: Path, training: bool = False) -> Example:
        """Tensors for one row; raises RowError (with the field in ``field``) on a bad value.
        A ``training`` read may draw random crops (audio, video); others are deterministic."""
        out: Example = {LINE_KEY: row.get(LINE_KEY, 0)}
        for name, pre in self.fields.items():
            value = self.value(name, row)
            try:
                out[name] = None if value is None else pre.read(value, base_dir, training)
            except RowError as err:
                err.field = name  # type: ignore[attr-defined]
                raise
        return out

    def read(
        self, row: Row, base_dir: Path, source: str, training: bool = False
    ) -> Example | QuarantinedRow:
        """``example``, or the quarantine record of a bad row."""
        try:
            return self.example(row, base_dir, training)
        except RowError as err:
            line = int(row.get(LINE_KEY, 0))
            return QuarantinedRow(source, line, err.reason, err.detail, getattr(err, "field", None))

    def collate(self, items: Sequence[Example | QuarantinedRow]) -> Batch:
        """A Batch of the examples; bad rows among ``items`` are left out and listed in
        ``Batch.quarantined`` (a row found bad while an epoch runs)."""
        examples = [item for item in items if not isinstance(item, QuarantinedRow)]
        bad = [item for item in items if isinstance(item, QuarantinedRow)]
        if not examples:  # every row of it was bad: an empty batch that reports them
            return Batch({}, {}, {}, [], bad)
        values, present, lengths = {}, {}, {}
        for name, pre in self.fields.items():
            column = [ex.get(name) for ex in examples]
            values[name], length = pre.collate(column)
            present[name] = torch.tensor([x is not None for x in column], dtype=torch.bool)
            if length is not None:
                lengths[name] = length
        rows = [int(ex[LINE_KEY]) for ex in examples]
        return Batch(values, present, lengths, rows, bad)

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
            name: _field_from_state(schema, name, field_state)
            for name, field_state in state["fields"].items()
        }
        return cls(schema, fields, state.get("columns"))


@dataclass
class PreparedData:
    """A manifest indexed and split, its schema settled and fitted, a dataset per split."""

    index: ManifestIndex
    schema: Schema
    preprocessor: Preprocessor
    splits: dict[str, RowDataset]
    quarantine: Quarantine
    schema_inferred: bool


def split_positions(
    index: ManifestIndex, data: DataConfig, seed: int, quarantine: Quarantine
) -> dict[str, np.ndarray]:
    """Row positions per split: the manifest's split column, or a seeded random split by the
    configured fractions.

    In a split column, an absent or empty value means train; a name other than train, val or
    test quarantines the row (it would otherwise sit in a split nothing reads).
    """
    names = index.split_names
    if any(name is not None for name in names):
        # each distinct split value -> 0, 1, 2 (train, val, test; an empty value is train), or -1
        code_of = np.array(
            [0 if n is None else SPLITS.index(n) if n in SPLITS else -1 for n in names]
        )
        codes = code_of[index.split_codes]
        for position in np.flatnonzero(codes < 0):
            name = names[index.split_codes[position]]
            detail = f"{name!r} is not a split; use {', '.join(SPLITS)} (or leave it empty)"
            line = int(index.lines[position])
            quarantine.add(
                QuarantinedRow(str(index.path), line, "unknown split", detail, data.split_column)
            )
        return {name: np.flatnonzero(codes == i) for i, name in enumerate(SPLITS)}
    order = list(range(len(index)))
    random.Random(seed).shuffle(order)
    n_val, n_test = round(len(index) * data.val_fraction), round(len(index) * data.test_fraction)
    picked = {
        "val": order[:n_val],
        "test": order[n_val : n_val + n_test],
        "train": order[n_val + n_test :],
    }
    return {name: np.asarray(sorted(picked[name]), dtype=np.int64) for name in SPLITS}


def check_columns(schema: Schema, index: ManifestIndex) -> None:
    """Every column the schema reads holds a value in some row of the manifest.

    A field whose column is in no row (a typo, a renamed column) would otherwise train with
    that modality absent from every row, or a target with no labels.
    """
    for name in schema.fields:
        for column in schema.columns(name):
            require_column(index, column, f"data.fields.{name}")


def require_column(index: ManifestIndex, column: str, where: str) -> None:
    """A ConfigError naming ``where``, the closest column and every column, unless some row
    of the manifest holds a value in ``column``."""
    if column not in index.columns:
        raise ConfigError(
            f"{where}: column '{column}' has no value in any row of "
            f"{index.path}{did_you_mean(column, index.columns)} (the manifest's "
            f"columns: {', '.join(index.columns)})"
        )


INFER_ROWS = 10_000  # an inferred schema looks at the first train rows, at most this many


def prepare_data(
    data: DataConfig,
    seed: int = 0,
    preprocessor: Preprocessor | None = None,
    fitted: dict[str, FieldPreprocessor] | None = None,
    targets: Sequence[str] | Mapping[str, str] = (),
    splits: Sequence[str] = SPLITS,
    cache_dir: Path | None = None,
    field_options: FieldOptions | None = None,
) -> PreparedData:
    """Index the manifest, split it, settle the schema, fit on train (unless given) in one
    pass over the train rows, and make a dataset for each of ``splits``.

    Nothing is decoded here unless ``data.cache`` asks for a store (``memory`` or ``disk``),
    which is built (or found on disk, in ``data.cache_dir`` or else ``cache_dir``) for the
    requested splits only. ``fitted`` field
    preprocessors (those of encoders taken from a saved model) are not refit. An inferred
    schema takes ``data.target``, else ``targets`` (the tasks' targets), as targets.
    ``field_options`` adjusts a field's options before it is fitted (``Preprocessor.build``).
    """
    quarantine = Quarantine(strict=data.strict)
    index = index_manifest(data.manifest, quarantine, data.split_column)
    positions = split_positions(index, data, seed, quarantine)
    train = positions["train"]
    if not len(train) and preprocessor is None:
        raise DataError(
            f"{data.manifest}: no rows in the train split (column '{data.split_column}')"
        )
    inferred = preprocessor is None and data.fields is None
    if preprocessor is None:
        if data.fields:
            schema = Schema(dict(data.fields))
        else:
            sample = index.rows(train[:INFER_ROWS])
            schema = infer_schema(sample, [data.target] if data.target else targets)
        check_columns(schema, index)
        fitting = progress_bar(index.rows(train), "fitting on train rows", total=len(train))
        preprocessor = Preprocessor.build(schema, data, index.columns, field_options)
        preprocessor.fit(fitting, fitted)
    else:
        check_columns(preprocessor.schema, index)
    datasets = {}
    for name in splits:
        dataset = RowDataset(index, positions[name], preprocessor)
        if data.cache != "none":
            directory = None if data.cache == "memory" else cache_root(data, cache_dir)
            store = open_store(dataset, directory, name, decoding_workers(data))
            dataset = dataset.with_store(store, quarantine)
        datasets[name] = dataset
    return PreparedData(index, preprocessor.schema, preprocessor, datasets, quarantine, inferred)
