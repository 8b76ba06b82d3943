"""Robustness of a tiny trained run: report shape, clean score, missing fields, MultiBench."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from polymodal.config import validate
from polymodal.errors import DataError
from polymodal.evaluate.corruptions import CORRUPTIONS, MISSING_RATES, SEVERITIES
from polymodal.evaluate.robustness import (
    ROBUSTNESS_FILE,
    effective_robustness,
    evaluate_robustness,
    maxmin_normalize,
    read_run_split,
    relative_robustness,
)
from polymodal.inference import evaluate_model
from polymodal.models.model import MultimodalModel
from polymodal.train.run import RunResult, run_training

COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220)}
TASKS = {"classify_label": "accuracy", "retrieve_image_text": "mean_recall"}
INPUTS = ["image", "price", "text"]


def write_manifest(folder: Path) -> Path:
    """conftest's ``tiny_manifest`` rows plus a test row whose image file is missing."""
    rows = []
    for i in range(24):
        colour = "red" if i % 2 == 0 else "blue"
        image = folder / "img" / f"{i}.png"
        image.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (16, 16), COLOURS[colour]).save(image)
        split = "train" if i < 16 else ("val" if i < 20 else "test")
        rows.append(
            {
                "id": str(i),
                "split": split,
                "image": f"img/{i}.png",
                "text": f"a {colour} square number {i}",
                "price": float(i),
                "label": colour,
            }
        )
    rows.append({**rows[-1], "id": "24", "image": "img/missing.png"})
    path = folder / "manifest.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    root = tmp_path_factory.mktemp("robustness_run")
    manifest = write_manifest(root / "data")
    config = validate(
        {
            "name": "tiny",
            "seed": 1,
            "data": {"manifest": str(manifest), "image": {"size": 16}},
            "model": {
                "inputs": INPUTS,
                "encoders": {
                    "image": {"type": "cnn", "dim": 16, "channels": [8, 8]},
                    "text": {"type": "transformer", "dim": 16, "layers": 1, "heads": 2},
                    "price": {"type": "mlp", "dim": 16, "hidden": 16},
                },
                "fusion": {"dim": 16},
                "tasks": [
                    {"type": "classify", "target": "label", "hidden": 16},
                    {"type": "retrieve", "query": "image", "gallery": "text", "dim": 16},
                ],
            },
            "train": {"epochs": 2, "batch_size": 4, "lr": 0.005, "out_dir": str(root / "runs")},
        }
    )
    return run_training(config, log=lambda m: None)


@pytest.fixture(scope="module")
def report(run: RunResult) -> dict:
    return evaluate_robustness(run.run_dir, seed=3)


def test_report_has_the_documented_structure(run, report):
    written = json.loads((run.run_dir / ROBUSTNESS_FILE).read_text(encoding="utf-8"))
    assert written == report
    assert report["split"] == "test" and report["seed"] == 3 and report["rows"] == 4
    assert report["quarantined"] == {"missing image file": 1}
    assert report["reference"] is None
    assert report["missing_rates"] == list(MISSING_RATES)
    assert report["severities"] == list(SEVERITIES)
    assert set(report["tasks"]) == set(TASKS)
    kinds = {"image": "image", "text": "text", "price": "tabular"}
    for name, result in report["tasks"].items():
        assert result["metric"] == TASKS[name]
        assert set(result) == {
            "metric",
            "clean",
            "missing",
            "noise",
            "relative_robustness",
            "effective_robustness",
            "contribution",
        }
        for key in ("missing", "noise", "relative_robustness", "effective_robustness"):
            assert sorted(result[key]) == INPUTS, key
        assert sorted(result["contribution"]) == INPUTS
        for field, kind in kinds.items():
            assert [p["rate"] for p in result["missing"][field]] == list(MISSING_RATES)
            assert set(result["noise"][field]) == set(CORRUPTIONS[kind])
            for points in result["noise"][field].values():
                assert [p["severity"] for p in points] == list(SEVERITIES)
            expected = {"missing", *CORRUPTIONS[kind]}
            assert set(result["relative_robustness"][field]) == expected
            assert set(result["effective_robustness"][field]) == expected
            assert set(result["contribution"][field]) == {"score_without", "drop"}


def test_clean_score_is_the_evaluate_model_score(run, report):
    best = MultimodalModel.from_pretrained(run.model_dir)
    examples = read_run_split(run.run_dir, "test", best.preprocessor).examples
    metrics = evaluate_model(best, examples)
    assert metrics == run.test
    for name, metric in TASKS.items():
        assert report["tasks"][name]["clean"] == metrics[name][metric]


@torch.no_grad()
def accuracy(model: MultimodalModel, examples: list) -> float:
    batch = model.preprocessor.collate(examples)
    predicted = model(batch)["classify_label"].argmax(-1)
    return float((predicted == batch.values["label"]).float().mean())


def test_missing_rates_and_contribution(run, report):
    best = MultimodalModel.from_pretrained(run.model_dir)
    examples = read_run_split(run.run_dir, "test", best.preprocessor).examples
    classify = report["tasks"]["classify_label"]
    for field in INPUTS:
        points = classify["missing"][field]
        assert points[0]["score"] == classify["clean"]  # rate 0 leaves every row as it is
        score = accuracy(best, [{**ex, field: None} for ex in examples])
        assert points[-1]["score"] == pytest.approx(score)
        assert classify["contribution"][field] == {
            "score_without": points[-1]["score"],
            "drop": pytest.approx(classify["clean"] - score),
        }
    retrieve = report["tasks"]["retrieve_image_text"]
    for field in ("image", "text"):  # retrieval cannot score a row without both sides
        assert retrieve["missing"][field][-1]["score"] is None
        assert retrieve["contribution"][field] == {"score_without": None, "drop": None}
        assert retrieve["relative_robustness"][field]["missing"] is None
        assert retrieve["effective_robustness"][field]["missing"] is None
    assert retrieve["missing"]["price"][-1]["score"] == retrieve["clean"]
    assert retrieve["contribution"]["price"]["drop"] == 0.0


def test_summaries_follow_the_multibench_formulas(report):
    result = report["tasks"]["classify_label"]
    for field in INPUTS:
        curve = [p["score"] for p in result["missing"][field]]
        assert result["relative_robustness"][field]["missing"] == relative_robustness(curve)
        assert result["effective_robustness"][field]["missing"] == effective_robustness(curve)
        for corruption, points in result["noise"][field].items():
            curve = [result["clean"], *(p["score"] for p in points)]
            assert result["relative_robustness"][field][corruption] == relative_robustness(curve)


def test_a_model_with_rows_and_a_reference(run, report, tmp_path):
    """The same rows given to a model score the same; against itself as the baseline, every
    effective robustness is 0."""
    best = MultimodalModel.from_pretrained(run.model_dir)
    manifest = run.data.index.path
    rows = [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines()]
    test_rows = [r for r in rows if r["split"] == "test"]
    again = evaluate_robustness(
        best, test_rows, seed=3, base_dir=manifest.parent, reference=run.run_dir
    )
    assert again["quarantined"] == {"missing image file": 1}
    assert again["reference"] == str(run.run_dir)
    for name, result in again["tasks"].items():
        expected = report["tasks"][name]
        for key in ("clean", "missing", "noise", "relative_robustness", "contribution"):
            assert result[key] == expected[key], (name, key)
        for by_curve in result["effective_robustness"].values():
            assert all(v is None or v == pytest.approx(0.0) for v in by_curve.values())
    bad = tmp_path / ROBUSTNESS_FILE
    bad.write_text(json.dumps({**report, "severities": [1, 2, 3]}), encoding="utf-8")
    with pytest.raises(DataError, match="effective robustness needs"):
        evaluate_robustness(best, test_rows, base_dir=manifest.parent, reference=tmp_path)


def test_relative_robustness_by_hand():
    assert relative_robustness([1.0, 0.8, 0.6]) == pytest.approx(0.8)  # d = 0.5
    assert relative_robustness([0.5, 0.5]) == pytest.approx(0.5)
    eleven = [1.0 - 0.05 * i for i in range(11)]  # MultiBench's levels 0, 0.1, .., 1
    multibench = sum((eleven[i] + eleven[i + 1]) * 0.1 / 2 for i in range(10))
    assert relative_robustness(eleven) == pytest.approx(multibench) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="at least 2 levels"):
        relative_robustness([1.0])


def test_effective_robustness_by_hand():
    # b = g + (f0 - g0) = [0.9, 0.85, 0.7]; ER = 0 - 0.05 - 0.2
    assert effective_robustness([0.9, 0.8, 0.5], [0.7, 0.65, 0.5]) == pytest.approx(-0.25)
    assert effective_robustness([0.9, 0.8, 0.5]) == pytest.approx(-0.5)  # flat baseline
    assert effective_robustness([0.6, 0.6, 0.6], [0.9, 0.5, 0.1]) == pytest.approx(1.2)
    with pytest.raises(ValueError, match="levels"):
        effective_robustness([0.9, 0.8], [0.9, 0.8, 0.7])


def test_maxmin_normalize_by_hand():
    assert maxmin_normalize({"a": 1.0, "b": 3.0, "c": 2.0}) == {"a": 0.0, "b": 1.0, "c": 0.5}
    lower = maxmin_normalize({"a": 1.0, "b": 3.0}, lower_is_better=True)
    assert lower == {"a": 1.0, "b": 0.0}
    assert maxmin_normalize({"only": 0.4}) == {"only": 0.0}


def test_bad_arguments(run):
    best = MultimodalModel.from_pretrained(run.model_dir)
    with pytest.raises(ValueError, match="pass the rows"):
        evaluate_robustness(best)
    with pytest.raises(ValueError, match="pass rows with a model"):
        evaluate_robustness(run.run_dir, rows=[])
    with pytest.raises(DataError, match="split 'holdout' has no rows"):
        evaluate_robustness(run.run_dir, split="holdout")
