"""Predictor: a saved model's predictions for raw rows, and clear errors for bad rows."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from polymodal.config import validate
from polymodal.errors import DataError, ModelError, PolymodalError
from polymodal.models.model import MultimodalModel
from polymodal.predictor import Predictor
from polymodal.train.run import RunResult, run_training

COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220)}
LABELS = ["blue", "red"]


@pytest.fixture(scope="module")
def run(
    tmp_path_factory: pytest.TempPathFactory, write_tiny_manifest: Callable[[Path], Path]
) -> RunResult:
    root = tmp_path_factory.mktemp("predictor_run")
    manifest = write_tiny_manifest(root / "data")
    config = validate(
        {
            "name": "tiny",
            "seed": 0,
            "data": {"manifest": str(manifest), "image": {"size": 16}},
            "model": {
                "inputs": ["image", "text", "price"],
                "encoders": {
                    "image": {"type": "cnn", "dim": 16, "channels": [8, 8]},
                    "text": {"type": "transformer", "dim": 16, "layers": 1, "heads": 2},
                    "price": {"type": "mlp", "dim": 16, "hidden": 16},
                },
                "fusion": {"dim": 16},
                "tasks": [{"type": "classify", "target": "label", "hidden": 16}],
            },
            "train": {"epochs": 2, "batch_size": 4, "lr": 0.005, "out_dir": str(root / "runs")},
        }
    )
    return run_training(config, log=lambda m: None)


@pytest.fixture(scope="module")
def predictor(run: RunResult) -> Predictor:
    return Predictor.from_pretrained(run.model_dir)


@pytest.fixture(scope="module")
def data_dir(run: RunResult) -> Path:
    return run.data.index.base_dir


def manifest_rows(data_dir: Path, split: str) -> list[dict[str, Any]]:
    lines = (data_dir / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    return [row for row in map(json.loads, lines) if row["split"] == split]


def check(prediction: dict[str, Any], absent: tuple[str, ...] = ()) -> dict[str, Any]:
    """One row's prediction: the label with the highest probability; probabilities sum to 1;
    the inputs the row lacked."""
    assert set(prediction) == {"classify_label", "absent_inputs"}
    assert prediction["absent_inputs"] == list(absent)
    result = prediction["classify_label"]
    assert set(result) == {"label", "probabilities"}
    probabilities = result["probabilities"]
    assert list(probabilities) == LABELS
    assert all(0.0 <= p <= 1.0 for p in probabilities.values())
    assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert result["label"] == max(probabilities, key=probabilities.get)
    return result


def test_predict_returns_one_dict_per_row(predictor, data_dir):
    rows = manifest_rows(data_dir, "test")
    predictions = predictor.predict(rows, data_dir)
    assert len(predictions) == len(rows) == 4
    for prediction in predictions:
        check(prediction)


def test_call_is_predict_of_one_row(predictor, data_dir):
    row = manifest_rows(data_dir, "test")[0]
    assert predictor(row, data_dir) == predictor.predict([row], data_dir)[0]


def test_rows_are_predicted_independently_of_their_batch(predictor, data_dir):
    rows = manifest_rows(data_dir, "test")
    together = predictor.predict(rows, data_dir)
    for row, prediction in zip(rows, together, strict=True):
        alone = predictor(row, data_dir)["classify_label"]
        assert alone["label"] == prediction["classify_label"]["label"]
        assert alone["probabilities"] == pytest.approx(
            prediction["classify_label"]["probabilities"], abs=1e-6
        )


def test_predictions_equal_the_model_run_directly(run, predictor, data_dir):
    model = MultimodalModel.from_pretrained(run.model_dir)
    examples = run.data.splits["test"]  # the examples training scored
    with torch.no_grad():
        logits = model(model.preprocessor.collate(examples))["classify_label"]
    expected = logits.softmax(-1)

    rows = manifest_rows(data_dir, "test")
    predictions = predictor.predict(rows, data_dir)
    got = torch.tensor([list(p["classify_label"]["probabilities"].values()) for p in predictions])
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    labels = [p["classify_label"]["label"] for p in predictions]
    assert labels == [LABELS[i] for i in expected.argmax(-1).tolist()]
    # and they score what training reported for the test split
    truth = [row["label"] for row in rows]
    accuracy = sum(a == b for a, b in zip(labels, truth, strict=True)) / len(rows)
    assert accuracy == run.test["classify_label"]["accuracy"]


def test_predict_gives_the_tasks_asked_for(predictor, data_dir):
    rows = manifest_rows(data_dir, "test")
    assert predictor.predict(rows, data_dir, tasks=["classify_label"]) == predictor.predict(
        rows, data_dir
    )
    assert predictor.predict(rows, data_dir, tasks=[]) == [{"absent_inputs": []} for _ in rows]
    with pytest.raises(ModelError, match=r"no task 'clasify_label'.*'classify_label'"):
        predictor.predict(rows, data_dir, tasks=["clasify_label"])


def test_absolute_image_paths_ignore_base_dir(predictor, data_dir, tmp_path):
    row = {"image": "img/0.png", "text": "a red square", "price": 2.0}
    absolute = {**row, "image": str(data_dir / "img" / "0.png")}
    assert predictor(absolute, tmp_path) == predictor(row, data_dir)


def test_missing_optional_fields_still_predict(predictor, data_dir):
    full = {"image": "img/0.png", "text": "a red square", "price": 2.0}
    image_only = {"image": "img/0.png"}
    check(predictor(image_only, data_dir), absent=("price", "text"))
    check(predictor({"text": "a blue square"}, data_dir), absent=("image", "price"))
    check(predictor({"price": 5}, data_dir), absent=("image", "text"))
    check(predictor({"price": float("nan"), "text": "a blue square"}, data_dir), ("image", "price"))
    # None and "" count as absent, like a missing key
    assert predictor({"image": "img/0.png", "text": None, "price": ""}, data_dir) == predictor(
        image_only, data_dir
    )
    # absent inputs change the prediction: they are masked, not ignored silently
    assert predictor(full, data_dir) != predictor(image_only, data_dir)


def test_target_and_bookkeeping_columns_are_not_read(predictor, data_dir):
    row = {"image": "img/1.png", "text": "a blue square", "price": 1.0}
    noisy = {**row, "label": "green", "id": "x", "split": "test"}
    assert predictor(noisy, data_dir) == predictor(row, data_dir)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"imag": "img/1.png"}, "row 0: unknown field 'imag'; did you mean 'image'?"),
        ({"image": "img/1.png", "Price": 3}, "row 0: unknown field 'Price'; did you mean 'price'?"),
        ({"image": "img/1.png", "colour": "red"}, "row 0: unknown field 'colour'. The model"),
    ],
)
def test_unknown_fields_are_an_error_naming_the_closest(predictor, data_dir, row, message):
    with pytest.raises(DataError) as exc:
        predictor(row, data_dir)
    assert str(exc.value).startswith(message)
    assert "The model reads: image, price, text" in str(exc.value)


def test_numeric_strings_are_read_as_numbers(predictor, data_dir):
    row = {"image": "img/1.png", "price": 7}
    assert predictor({**row, "price": "7"}, data_dir) == predictor(row, data_dir)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"image": "img/nope.png"}, "row 1, field 'image': missing image file"),
        ({"image": "not-an-image.png"}, "row 1, field 'image': unreadable image"),
        ({"image": "img/0.png", "price": "cheap"}, "row 1, field 'price': non-numeric value"),
        ({"image": "img/0.png", "price": True}, "row 1, field 'price': non-numeric value"),
        ({"image": "img/0.png", "text": 5}, "row 1, field 'text': undecodable text"),
        ({"label": "red", "id": "3"}, "row 1: none of the model's input fields is given"),
        ({}, "row 1: none of the model's input fields is given"),
        ({"text": "   ", "price": None}, "row 1: none of the model's input fields is given"),
        ("img/0.png", "row 1: expected an object of field values, got str"),
    ],
)
def test_bad_rows_raise_a_clear_data_error(predictor, data_dir, tmp_path, row, message):
    (tmp_path / "img").symlink_to(data_dir / "img")
    (tmp_path / "not-an-image.png").write_text("plain text", encoding="utf-8")
    good = {"image": "img/0.png"}
    with pytest.raises(DataError) as exc:
        predictor.predict([good, row], tmp_path)
    assert str(exc.value).startswith(message)
    assert isinstance(exc.value, PolymodalError)


def test_missing_image_error_names_the_path(predictor, tmp_path):
    with pytest.raises(DataError, match=r"nope\.png does not exist"):
        predictor({"image": "nope.png"}, tmp_path)


def test_from_pretrained_needs_a_saved_model(run, tmp_path):
    with pytest.raises(ModelError, match=r"config\.json is missing"):
        Predictor.from_pretrained(tmp_path)
    with pytest.raises(ModelError, match=r"config\.json is missing"):
        Predictor.from_pretrained(run.run_dir)  # the run folder, not its best/ model


def test_no_rows_is_a_clear_error(predictor, data_dir):
    with pytest.raises(DataError, match="no rows to predict"):
        predictor.predict([], data_dir)


# --- predictions equal evaluation, for every field kind and schema shape --------------------

TINY_MODEL = {
    "encoders": {},
    "fusion": {"dim": 16},
    "tasks": [{"type": "classify", "target": "label", "hidden": 16}],
}
SHAPES: dict[str, dict[str, Any] | None] = {  # name -> data.fields (None: inferred)
    "inferred": None,
    "configured": {
        "image": {"kind": "image"},
        "text": {"kind": "text"},
        "size": {"kind": "tabular"},
        "brand": {"kind": "tabular", "categorical": ["brand"]},
        "label": {"kind": "label", "role": "target"},
    },
    "grouped": {
        "image": {"kind": "image"},
        "tab": {"kind": "tabular", "numeric": ["size", "weight"], "categorical": ["brand"]},
        "label": {"kind": "label", "role": "target"},
    },
    "categorical_only": {
        "brand": {"kind": "tabular", "categorical": ["brand"]},
        "text": {"kind": "text"},
        "label": {"kind": "label", "role": "target"},
    },
}


def write_mixed_manifest(folder: Path, suffix: str) -> Path:
    """40 rows of every kind: image, text, numeric (size, weight), categorical (brand), with
    gaps; size and weight decide the label, so a reader that drops them cannot match."""
    import csv

    rng = np.random.default_rng(1)
    rows = []
    for i in range(40):
        size, weight = float(rng.normal()), float(rng.normal())
        label = "big" if size + weight > 0 else "small"
        colour = COLOURS["red" if i % 3 else "blue"]
        path = folder / "img" / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        noise = rng.integers(-40, 41, size=(16, 16, 3))
        Image.fromarray(np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)).save(path)
        rows.append(
            {
                "id": f"r{i}",
                "split": "train" if i < 24 else ("val" if i < 30 else "test"),
                "image": f"img/{i}.png" if i % 7 else "",
                "text": f"item {i} of kind {['x', 'y', 'z'][i % 3]}" if i % 5 else "",
                "size": round(size, 3),
                "weight": round(weight, 3) if i % 4 else "",
                "brand": ["acme", "zeta", "omni"][i % 3],
                "label": label,
            }
        )
    manifest = folder / f"manifest{suffix}"
    with manifest.open("w", encoding="utf-8", newline="") as f:
        if suffix == ".csv":
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        else:
            f.write("\n".join(json.dumps(r) for r in rows) + "\n")
    return manifest


def raw_rows(manifest: Path, split: str) -> list[dict[str, Any]]:
    """The manifest's rows as a user holds them (CSV: every value a string)."""
    import csv

    text = manifest.read_text(encoding="utf-8")
    if manifest.suffix == ".csv":
        rows = list(csv.DictReader(io.StringIO(text)))
    else:
        rows = [json.loads(line) for line in text.splitlines()]
    return [row for row in rows if row["split"] == split]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_predictor_equals_evaluation(tmp_path, shape, suffix):
    from polymodal.data.pipeline import prepare_data
    from polymodal.inference import evaluate_model

    manifest = write_mixed_manifest(tmp_path / "data", suffix)
    data: dict[str, Any] = {"manifest": str(manifest), "image": {"size": 16}}
    if SHAPES[shape] is not None:
        data["fields"] = SHAPES[shape]
    config = validate(
        {
            "name": shape,
            "data": data,
            "model": TINY_MODEL,
            "train": {"epochs": 2, "batch_size": 8, "out_dir": str(tmp_path / "runs")},
        }
    )
    run = run_training(config, log=lambda m: None)
    model = MultimodalModel.from_pretrained(run.model_dir)
    inputs = set(model.inputs)
    assert {"size", "tab", "brand"} & inputs  # a tabular field is among the inputs

    # the evaluation path: the run's config re-read, the test split scored in batches
    evaluation = prepare_data(config.data, config.seed, preprocessor=model.preprocessor)
    examples = evaluation.splits["test"]
    with torch.no_grad():
        expected = model(model.preprocessor.collate(examples))["classify_label"].softmax(-1)
    scored = evaluate_model(model, examples)["classify_label"]

    rows = raw_rows(manifest, "test")
    predictions = Predictor(model).predict(rows, manifest.parent)
    got = torch.tensor([list(p["classify_label"]["probabilities"].values()) for p in predictions])
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    labels = [p["classify_label"]["label"] for p in predictions]
    accuracy = sum(a == row["label"] for a, row in zip(labels, rows, strict=True)) / len(rows)
    assert accuracy == pytest.approx(scored["accuracy"], abs=1e-12)


def test_an_image_given_in_memory_predicts_as_its_file(predictor, data_dir):
    """The file's bytes, a PIL image and a uint8 array give what the path gives."""
    row = manifest_rows(data_dir, "test")[0]
    path = data_dir / row["image"]
    inputs = {"text": row["text"], "price": row["price"]}
    expected = predictor({**inputs, "image": str(path)})
    with Image.open(path) as img:
        pil = img.convert("RGB")
    for image in (path.read_bytes(), bytearray(path.read_bytes()), pil, np.asarray(pil)):
        assert predictor({**inputs, "image": image}) == expected


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (b"not an image", r"field 'image': .*the 12 bytes given"),
        (np.zeros((4, 4, 2), np.uint8), r"field 'image': .*uint8 of shape .*got uint8 \(4, 4, 2\)"),
        (np.zeros((4, 4, 3)), r"field 'image': .*got float64"),
    ],
)
def test_a_bad_image_given_in_memory_is_named(predictor, data_dir, image, message):
    row = manifest_rows(data_dir, "test")[0]
    with pytest.raises(DataError, match=message):
        predictor({"text": row["text"], "image": image})
