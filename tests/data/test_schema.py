from __future__ import annotations

import math

import pytest
import torch

from polymodal.config import DataConfig
from polymodal.data.pipeline import Preprocessor
from polymodal.data.schema import FieldSpec, Schema, infer_schema, is_absent


def test_infer_schema_kinds():
    rows = [
        {
            "id": str(i),
            "split": "train",
            "photo": f"a/{i}.jpg",
            "caption": f"a long caption {i}",
            "price": i * 1.5,
            "brand": ["acme", "zeta"][i % 2],
            "label": "x",
            "tags": ["a"],
        }
        for i in range(40)
    ]
    schema = infer_schema(rows)
    kinds = {name: spec.kind for name, spec in schema.fields.items()}
    assert kinds == {
        "brand": "tabular",
        "caption": "text",
        "label": "label",
        "photo": "image",
        "price": "tabular",
    }
    assert schema.fields["brand"].categorical == ["brand"]
    assert schema.fields["price"].numeric == ["price"]
    assert schema.targets == ["label"] and "tags" not in schema.fields
    assert list(schema.fields) == sorted(schema.fields)  # fields iterate in sorted order


def test_infer_schema_named_target():
    rows = [{"text": f"hello there {i}", "sentiment": str(i % 3)} for i in range(30)]
    assert infer_schema(rows, ["sentiment"]).fields["sentiment"].role == "target"


@pytest.mark.parametrize("value", [None, "", "   ", math.nan])
def test_absent_values(value):
    assert is_absent(value)


def test_field_spec_rejects_misplaced_options():
    with pytest.raises(ValueError, match="only apply to kind 'tabular'"):
        FieldSpec(kind="text", numeric=["a"])


def test_collate_with_missing_fields(tiny_manifest):
    schema = Schema(
        {
            "image": FieldSpec(kind="image"),
            "text": FieldSpec(kind="text"),
            "price": FieldSpec(kind="tabular", numeric=["price"]),
            "label": FieldSpec(kind="label", role="target"),
        }
    )
    data = DataConfig(manifest=tiny_manifest, image={"size": 8})
    rows = [
        {"image": "img/0.png", "text": "a red square", "price": 1.0, "label": "red"},
        {"image": None, "text": "", "price": None, "label": "blue"},
        {"image": "img/1.png", "text": "a blue square and more words", "price": 3.0, "label": None},
    ]
    pre = Preprocessor.build(schema, data).fit(rows)
    batch = pre.collate([pre.example(r, tiny_manifest.parent) for r in rows])
    assert batch.present["image"].tolist() == [True, False, True]
    assert batch.present["text"].tolist() == [True, False, True]
    assert batch.present["price"].tolist() == [True, False, True]
    assert batch.present["label"].tolist() == [True, True, False]
    assert batch.values["image"].shape == (3, 3, 8, 8)
    assert torch.all(batch.values["image"][1] == 0)  # absent image: zeros
    assert batch.lengths["text"].tolist() == [3, 0, 6]
    assert batch.values["text"].shape == (3, 6)
    assert batch.values["label"].tolist()[2] == -100  # absent target is ignored by the loss
    assert len(batch) == 3
