from __future__ import annotations

import math

import pytest
import torch

from polymodal.config import DataConfig
from polymodal.data.pipeline import Preprocessor
from polymodal.data.schema import FieldSpec, Schema, infer_schema, is_absent
from polymodal.errors import DataError


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


def test_a_column_numeric_in_almost_every_row_stays_numeric():
    rows = [{"price": str(i * 1.5), "text": f"words {i}"} for i in range(39)]
    rows.append({"price": "call us", "text": "words"})
    assert infer_schema(rows).fields["price"].numeric == ["price"]
    rows[0]["price"] = rows[1]["price"] = "ask"  # 3 of 40 is no longer "almost every row"
    assert infer_schema(rows).fields["price"].kind == "text"


def test_answer_is_a_target_by_name_and_a_named_target_wins():
    rows = [{"question": f"what is {i}", "answer": ["yes", "no"][i % 2]} for i in range(30)]
    assert infer_schema(rows).targets == ["answer"]
    rows = [{**r, "label": "x", "answer": r["answer"]} for r in rows]
    only = infer_schema(rows, ["label"])
    assert only.targets == ["label"] and only.fields["answer"].role == "input"


def test_a_named_target_in_no_row_is_an_error_that_names_data_target():
    rows = [{"text": f"hello there {i}", "label": "a"} for i in range(5)]
    with pytest.raises(DataError) as exc:
        infer_schema(rows, ["Label"])
    assert str(exc.value).startswith(
        "target column 'Label' has no value in any row; did you mean 'label'? (columns: text, "
    )
    assert "set data.target" in str(exc.value)


def test_infer_audio_video_and_sequence_columns():
    rows = [
        {
            "voice": f"clips/{i}.WAV" if i % 2 else f"clips/{i}.flac",
            "movie": f"v/{i}.mp4",
            "track": [[i, 0.5], [i + 1, None]],  # null: a missing value in a step
            "vector": [0.1, 0.2],  # a flat list is no series: skipped, as before
            "mixed": [[1, "a"]],  # text in the steps: no series either
            "label": "x",
        }
        for i in range(10)
    ]
    kinds = {name: spec.kind for name, spec in infer_schema(rows).fields.items()}
    assert kinds == {"label": "label", "movie": "video", "track": "sequence", "voice": "audio"}
    assert "y" not in infer_schema([{"y": [[1]], "x": 1}], ["y"]).fields  # a target: no input
