"""Number fields: one numeric column, standardised with train statistics, absent when missing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from polymodal.config import DataConfig, FieldSpec
from polymodal.data.modalities.number import NumberPreprocessor
from polymodal.data.pipeline import Preprocessor, prepare_data
from polymodal.data.schema import Schema, infer_schema
from polymodal.errors import DataError


def test_standardised_with_train_statistics_and_back(tmp_path: Path) -> None:
    pre = NumberPreprocessor("score").fit([{"score": 1.0}, {"score": "3"}, {"score": None}])
    assert (pre.mean, pre.std) == ({"score": 2.0}, {"score": 1.0})
    value = pre.read({"score": 6.5}, tmp_path)
    assert value.tolist() == [4.5]  # (6.5 - 2) / 1
    assert pre.original_units(value).tolist() == [6.5]
    again = NumberPreprocessor.from_state("score", json.loads(json.dumps(pre.state())))
    assert torch.equal(again.read({"score": 6.5}, tmp_path), value)
    assert again.encoder_args() == {}


def test_missing_cells_are_absent_and_text_is_quarantined(tmp_path: Path) -> None:
    rows = [
        {"text": "a", "score": 2.0, "split": "train"},
        {"text": "b", "score": 4.0, "split": "train"},
        {"text": "c", "score": None, "split": "train"},
        {"text": "d", "score": "nan", "split": "train"},
        {"text": "e", "score": "lots", "split": "train"},
    ]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    fields = {"text": FieldSpec(kind="text"), "score": FieldSpec(kind="number", role="target")}
    data = prepare_data(DataConfig(manifest=manifest, fields=fields))
    examples = [data.splits["train"][i] for i in range(5)]
    batch = data.preprocessor.collate(examples)
    assert batch.values["score"].tolist() == [[-1.0], [1.0], [0.0], [0.0]]  # mean 3, std 1
    assert batch.present["score"].tolist() == [True, True, False, False]
    assert [(row.reason, row.field) for row in batch.quarantined] == [
        ("non-numeric value", "score")
    ]
    loaded = Preprocessor.load(data.preprocessor.save(tmp_path).parent)
    assert isinstance(loaded.fields["score"], NumberPreprocessor)


def test_a_number_field_is_a_target() -> None:
    with pytest.raises(ValidationError, match="a number field is a regression target"):
        FieldSpec(kind="number")


def test_inferred_as_the_kind_its_task_reads() -> None:
    rows = [{"price": 1.5, "y": "3", "label": "a"}, {"price": 2, "y": 4, "label": "b"}]
    schema = infer_schema(rows, {"price": "number", "y": "number", "label": "label"})
    assert schema.fields["price"] == FieldSpec(kind="number", role="target")
    assert schema.fields["y"] == FieldSpec(kind="number", role="target")
    assert schema.fields["label"].kind == "label"
    assert Schema(schema.fields).columns("price") == ["price"]
    with pytest.raises(DataError, match=r"target column 'label' holds values that are not"):
        infer_schema(rows, {"label": "number"})
