"""evaluate_run: a finished run's best model scored again on one of its splits."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from polymodal.config import validate
from polymodal.errors import DataError, ModelError
from polymodal.evaluate.run import evaluate_run
from polymodal.train.run import RunResult, run_training

COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220)}


@pytest.fixture(scope="module")
def run(
    tmp_path_factory: pytest.TempPathFactory, write_tiny_manifest: Callable[[Path], Path]
) -> RunResult:
    root = tmp_path_factory.mktemp("eval_run")
    manifest = write_tiny_manifest(root / "data")
    config = validate(
        {
            "name": "tiny",
            "seed": 1,
            "data": {"manifest": str(manifest), "image": {"size": 16}},
            "model": {
                "inputs": ["image", "text"],
                "encoders": {
                    "image": {"type": "cnn", "dim": 16, "channels": [8, 8]},
                    "text": {"type": "transformer", "dim": 16, "layers": 1, "heads": 2},
                },
                "fusion": {"dim": 16},
                "tasks": [{"type": "classify", "target": "label", "hidden": 16}],
            },
            "train": {"epochs": 2, "batch_size": 4, "lr": 0.005, "out_dir": str(root / "runs")},
        }
    )
    return run_training(config, log=lambda m: None)


def test_reproduces_the_test_scores_of_training(run):
    results = json.loads((run.run_dir / "results.json").read_text(encoding="utf-8"))
    scores = evaluate_run(run.run_dir)
    assert scores == {"split": "test", "rows": 4, "tasks": results["test"]}
    assert scores["tasks"] == run.test
    written = json.loads((run.run_dir / "eval_test.json").read_text(encoding="utf-8"))
    assert written == scores


def test_val_split_reproduces_the_best_val_score(run):
    results = json.loads((run.run_dir / "results.json").read_text(encoding="utf-8"))
    scores = evaluate_run(str(run.run_dir), "val")  # a str path works too
    assert scores["split"] == "val" and scores["rows"] == 4
    # the best checkpoint was picked by val accuracy (the only task's main metric)
    assert scores["tasks"]["classify_label"]["accuracy"] == pytest.approx(results["val_score"])
    assert (run.run_dir / "eval_val.json").is_file()


def test_unknown_split_is_a_clear_error(run):
    with pytest.raises(DataError, match=r"split 'holdout' has no rows; splits: train, val, test"):
        evaluate_run(run.run_dir, "holdout")
    assert not (run.run_dir / "eval_holdout.json").exists()


def test_a_folder_that_is_not_a_run(tmp_path):
    with pytest.raises(DataError, match=r"config\.yaml is missing; pass a folder written by"):
        evaluate_run(tmp_path)


def test_a_run_without_its_best_model(run, tmp_path):
    shutil.copy(run.run_dir / "config.yaml", tmp_path / "config.yaml")
    with pytest.raises(ModelError, match=r"config\.json is missing"):
        evaluate_run(tmp_path)
