"""Bootstrap intervals for headline metrics, and metrics aggregated over runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from polymodal.errors import DataError
from polymodal.evaluate.confidence import (
    Interval,
    accuracy_interval,
    aggregate_runs,
    bootstrap_mean,
    classification_intervals,
    f1_macro_interval,
    regression_intervals,
    retrieval_intervals,
)
from polymodal.metrics.classification import f1_macro
from polymodal.metrics.regression import target_scores
from polymodal.metrics.retrieval import retrieval_scores


def predictions(n: int, seed: int = 0, classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Labels and predictions right about 70% of the time."""
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, classes, n)
    y_pred = np.where(rng.random(n) < 0.7, y_true, rng.integers(0, classes, n))
    return y_true, y_pred


def contains(interval: Interval, value: float) -> bool:
    return interval.low <= value <= interval.high and interval.low < interval.high


def test_intervals_contain_the_point_estimate():
    y_true, y_pred = predictions(300)
    accuracy = accuracy_interval(y_true, y_pred)
    assert accuracy.estimate == pytest.approx(np.mean(y_true == y_pred))
    assert contains(accuracy, accuracy.estimate)
    f1 = f1_macro_interval(y_true, y_pred)
    assert f1.estimate == pytest.approx(f1_macro(y_true, y_pred))
    assert contains(f1, f1.estimate)
    assert f1.to_dict() == {"estimate": f1.estimate, "low": f1.low, "high": f1.high, "level": 0.95}


@pytest.mark.parametrize("interval", [accuracy_interval, f1_macro_interval])
def test_intervals_shrink_with_more_examples(interval):
    small, large = (interval(*predictions(n)) for n in (100, 2000))
    # the width falls as 1 / sqrt(n): about 4.5 times here
    assert large.high - large.low < (small.high - small.low) / 2


def test_intervals_are_deterministic_for_a_seed():
    y_true, y_pred = predictions(200)
    assert f1_macro_interval(y_true, y_pred, seed=3) == f1_macro_interval(y_true, y_pred, seed=3)
    assert accuracy_interval(y_true, y_pred, seed=3) != accuracy_interval(y_true, y_pred, seed=4)
    assert bootstrap_mean([0.0, 1.0, 1.0], seed=1) == bootstrap_mean([0.0, 1.0, 1.0], seed=1)


def test_f1_macro_of_each_resample_is_f1_macro_of_the_resampled_rows():
    y_true, y_pred = predictions(50, classes=4)
    one = f1_macro_interval(y_true, y_pred, num_classes=4, resamples=1, seed=7)
    idx = np.random.default_rng(7).integers(0, 50, size=(1, 50))[0]
    assert one.low == one.high == pytest.approx(f1_macro(y_true[idx], y_pred[idx], 4))


def test_classification_intervals_take_probabilities():
    y_true, y_pred = predictions(120, classes=3)
    probs = np.eye(3)[y_pred] * 0.8 + 0.1
    intervals = classification_intervals(y_true, probs, resamples=200)
    assert intervals["accuracy"] == accuracy_interval(y_true, y_pred, resamples=200)
    assert intervals["f1_macro"].estimate == pytest.approx(f1_macro(y_true, y_pred, 3))


def test_retrieval_intervals_match_retrieval_scores():
    rng = np.random.default_rng(0)
    similarity = rng.normal(size=(80, 80)) + 2.5 * np.eye(80)
    scores = retrieval_scores(similarity)
    intervals = retrieval_intervals(similarity, ks=(1, 5, 10))
    for direction in ("image_to_text", "text_to_image"):
        for k in ("R@1", "R@5", "R@10"):
            interval = intervals[direction][k]
            assert interval.estimate == pytest.approx(scores[direction][k])
            assert interval.low <= interval.estimate <= interval.high
    recalls = [
        scores[d][k] for d in ("image_to_text", "text_to_image") for k in ("R@1", "R@5", "R@10")
    ]
    assert intervals["mean_recall"].estimate == pytest.approx(np.mean(recalls))
    assert contains(intervals["mean_recall"], intervals["mean_recall"].estimate)


def test_regression_intervals_are_target_scores_of_the_resampled_rows():
    rng = np.random.default_rng(1)
    y_true = rng.normal(size=(40, 2)) * [1.0, 10.0]
    y_pred = y_true + rng.normal(size=(40, 2))
    present = rng.random((40, 2)) < 0.8
    intervals = regression_intervals(y_true, y_pred, present, ["a", "b"], resamples=60, seed=4)
    resampled = np.random.default_rng(4).integers(0, 40, size=(60, 40))
    brute = [target_scores(y_true[i], y_pred[i], present[i], ["a", "b"]) for i in resampled]
    estimates = target_scores(y_true, y_pred, present, ["a", "b"])
    for key in ("mae", "rmse", "pearson", "r2"):
        for interval, scores, estimate in (
            (intervals[key], brute, estimates[key]),
            (intervals["per_target"]["b"][key], [s["per_target"]["b"] for s in brute], None),
        ):
            low, high = np.quantile([s[key] for s in scores], [0.025, 0.975])
            assert (interval.low, interval.high) == pytest.approx((low, high))
            assert estimate is None or interval.estimate == pytest.approx(estimate)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="non-empty"):
        bootstrap_mean([])
    with pytest.raises(ValueError, match="no examples"):
        f1_macro_interval([], [])
    with pytest.raises(ValueError, match="level"):
        bootstrap_mean([1.0, 0.0], level=1.5)
    with pytest.raises(ValueError, match="one length"):
        accuracy_interval([0, 1], [0])


def write_results(folder: Path, accuracy: float, f1: float, task: str = "classify_label") -> Path:
    folder.mkdir(parents=True)
    results = {
        "name": folder.name,
        "best_epoch": 2,
        "val_score": accuracy,
        "test": {
            task: {
                "accuracy": accuracy,
                "f1_macro": f1,
                "confusion_matrix": [[3, 1], [0, 4]],
                "num_examples": 8,
                "labels": ["red", "blue"],
            }
        },
        "train_seconds": 1.5,
        "quarantined": {},
    }
    (folder / "results.json").write_text(json.dumps(results), encoding="utf-8")
    return folder


def test_aggregate_runs_pools_every_number(tmp_path):
    runs = [
        write_results(tmp_path / "a", 0.5, 0.4),
        write_results(tmp_path / "b", 0.7, 0.6),
        write_results(tmp_path / "c", 0.9, 0.5),
    ]
    pooled = aggregate_runs(runs)
    accuracy = pooled["test.classify_label.accuracy"]
    assert accuracy["mean"] == pytest.approx(0.7)
    assert accuracy["std"] == pytest.approx(0.2)  # sample std: sqrt((0.04 + 0 + 0.04) / 2)
    assert accuracy["n"] == 3 and accuracy["values"] == [0.5, 0.7, 0.9]
    assert pooled["test.classify_label.f1_macro"]["std"] == pytest.approx(0.1)
    assert pooled["train_seconds"] == {"mean": 1.5, "std": 0.0, "n": 3, "values": [1.5] * 3}
    assert not any("confusion_matrix" in path or "labels" in path for path in pooled)
    assert set(pooled) == {
        "best_epoch",
        "val_score",
        "test.classify_label.accuracy",
        "test.classify_label.f1_macro",
        "test.classify_label.num_examples",
        "train_seconds",
    }
    assert aggregate_runs([runs[0] / "results.json"])["val_score"]["std"] is None  # one run


def test_aggregate_runs_refuses_runs_with_other_tasks_or_no_results(tmp_path):
    runs = [write_results(tmp_path / "a", 0.5, 0.4), write_results(tmp_path / "b", 0.7, 0.6, "x")]
    with pytest.raises(DataError, match=r"different test tasks.*classify_label.*: x"):
        aggregate_runs(runs)
    with pytest.raises(DataError, match=r"results\.json is missing"):
        aggregate_runs([tmp_path / "nothing"])
    with pytest.raises(DataError, match="no runs"):
        aggregate_runs([])
