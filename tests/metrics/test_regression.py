"""Regression and sentiment metrics: hand-computed values, sklearn and scipy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from polymodal.metrics.regression import (
    REGRESSION_KEYS,
    regression_scores,
    sentiment_scores,
    target_scores,
)


def test_regression_hand_computed() -> None:
    # errors [1, 0, -1, 2]: MAE 4/4 = 1, RMSE sqrt(6/4). Centred truth [-1.5, -0.5, 0.5, 1.5]
    # and prediction [-1, -1, -1, 3]: covariance sum 6, squares 5 and 12 -> r = 6 / sqrt(60).
    # R2 = 1 - SSE / SST = 1 - 6 / 5.
    scores = regression_scores([1.0, 2.0, 3.0, 4.0], torch.tensor([2.0, 2.0, 2.0, 6.0]))
    expected = {"mae": 1.0, "rmse": np.sqrt(1.5), "pearson": 6 / np.sqrt(60), "r2": -0.2}
    assert scores == pytest.approx(expected)
    assert regression_scores([1, 2, 3], [5, 5, 5])["pearson"] is None  # constant prediction
    perfect = {"mae": 0.0, "rmse": 0.0, "pearson": 1.0, "r2": 1.0}
    assert regression_scores([1.5, -2.0], [1.5, -2.0]) == perfect
    # A constant truth: R2 is 1 for a perfect prediction, else 0 (sklearn's force_finite).
    assert regression_scores([2.0, 2.0], [2.0, 2.0])["r2"] == 1.0
    assert regression_scores([2.0, 2.0], [2.0, 3.0])["r2"] == 0.0
    # 0.1 three times has a mean 1 ulp off 0.1: still a constant, not a tiny variance.
    assert regression_scores([0.1] * 3, [0.1, 0.1, 0.2])["r2"] == 0.0
    assert regression_scores([1.0, 2.0, 3.0], [0.1] * 3)["pearson"] is None


def test_sentiment_hand_computed() -> None:
    y_true = [-2.6, -0.4, 0.0, 0.0, 1.2, 2.5, 3.4]
    y_pred = [-3.5, 0.3, -0.2, 0.6, 1.5, 1.4, 2.4]
    scores = sentiment_scores(y_true, y_pred)
    # >= 0: truth [F F T T T T T], prediction [F T F T T T T]: 5 of 7 agree.
    # F1 of T: TP 4, 5 true, 5 predicted -> 8/10; of F: TP 1, 2 true, 2 predicted -> 2/4.
    # Weighted by true counts: (5 * 0.8 + 2 * 0.5) / 7 = 5/7.
    assert scores["acc2_non_negative"] == pytest.approx(5 / 7)
    assert scores["f1_non_negative"] == pytest.approx(5 / 7)
    # Zero truths out: truth > 0 [F F T T T], prediction > 0 [F T T T T]: 4 of 5 agree.
    # F1 of T: TP 3, 3 true, 4 predicted -> 6/7; of F: TP 1, 2 true, 1 predicted -> 2/3.
    # Weighted: (3 * 6/7 + 2 * 2/3) / 5 = 82/105.
    assert scores["acc2_non_zero"] == pytest.approx(4 / 5)
    assert scores["f1_non_zero"] == pytest.approx(82 / 105)
    # Acc-7, clipped to [-3, 3] and rounded half to even: truth [-3, -0, 0, 0, 1, 2, 3] (2.5 -> 2),
    # prediction [-3, 0, -0, 1, 2, 1, 2] (1.5 -> 2): 3 of 7 agree.
    # Acc-5, clipped to [-2, 2]: truth [-2, -0, 0, 0, 1, 2, 2], prediction
    # [-2, 0, -0, 1, 2, 1, 2]: 4 of 7 agree.
    assert scores["acc7"] == pytest.approx(3 / 7)
    assert scores["acc5"] == pytest.approx(4 / 7)
    assert {k: scores[k] for k in REGRESSION_KEYS} == regression_scores(y_true, y_pred)
    # Every truth neutral: the non-zero variant has nothing to score.
    neutral = sentiment_scores([0.0, 0.0], [0.5, -0.5])
    assert neutral["acc2_non_zero"] is None and neutral["f1_non_zero"] is None
    assert neutral["acc2_non_negative"] == 0.5


def test_sentiment_against_sklearn() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(6)
    y_true = np.round(rng.uniform(-3, 3, 300) * 3) / 3  # MOSI labels: averages of 3 ratings
    y_true[:20] = 0.0
    y_pred = rng.uniform(-3.5, 3.5, 300)
    scores = sentiment_scores(y_true, y_pred)
    for name, keep, truth, pred in (
        ("non_negative", slice(None), y_true >= 0, y_pred >= 0),
        ("non_zero", y_true != 0, y_true > 0, y_pred > 0),
    ):
        truth, pred = truth[keep], pred[keep]
        assert scores[f"acc2_{name}"] == pytest.approx(metrics.accuracy_score(truth, pred))
        expected = metrics.f1_score(truth, pred, average="weighted")
        assert scores[f"f1_{name}"] == pytest.approx(expected)
    assert scores["pearson"] == pytest.approx(np.corrcoef(y_true, y_pred)[0, 1])


def test_regression_against_sklearn_and_scipy() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(3)
    y_true = rng.normal(5.0, 2.0, 200)
    y_pred = y_true + rng.normal(0.5, 1.0, 200)
    scores = regression_scores(y_true, y_pred)
    assert scores["mae"] == pytest.approx(metrics.mean_absolute_error(y_true, y_pred))
    assert scores["rmse"] == pytest.approx(np.sqrt(metrics.mean_squared_error(y_true, y_pred)))
    assert scores["r2"] == pytest.approx(metrics.r2_score(y_true, y_pred))
    assert scores["pearson"] == pytest.approx(stats.pearsonr(y_true, y_pred)[0])


def test_sentiment_matches_mmsa_rounding_and_clipping() -> None:
    # Acc-7 of predictions beyond the scale: 3.7 clips to 3 and matches a truth of 3; Acc-5
    # clips both to 2. A 0.5 rounds to 0 (half to even), as np.round in MMSA.
    scores = sentiment_scores([3.0, 2.0, 0.0], [3.7, 2.9, 0.5])
    assert scores["acc7"] == pytest.approx(2 / 3)  # 3 == 3, 2 != 3, 0 == 0
    assert scores["acc5"] == 1.0  # 2 == 2, 2 == 2, 0 == 0


def test_target_scores_score_each_target_on_its_own_rows() -> None:
    y_true = np.array([[1.0, 10.0], [2.0, 20.0], [3.0, 0.0], [4.0, 0.0]])
    y_pred = np.array([[1.0, 12.0], [3.0, 18.0], [3.0, 99.0], [2.0, 99.0]])
    present = np.array([[True, True], [True, True], [True, False], [True, False]])
    scores = target_scores(y_true, y_pred, present, ["a", "b"])
    a = regression_scores([1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 3.0, 2.0])
    b = regression_scores([10.0, 20.0], [12.0, 18.0])  # rows 3 and 4 lack b: 99 is ignored
    assert scores["per_target"] == {"a": {"rows": 4, **a}, "b": {"rows": 2, **b}}
    assert scores["rows"] == 4
    assert scores["mae"] == pytest.approx((a["mae"] + b["mae"]) / 2)  # (3/4 + 2) / 2
    assert scores["mae"] == pytest.approx(1.375)
    assert scores["r2"] == pytest.approx((a["r2"] + b["r2"]) / 2)


def test_target_scores_of_one_target_and_of_a_target_without_rows() -> None:
    one = target_scores([[1.0], [2.0], [4.0]], [[1.0], [2.5], [3.0]], [[True]] * 3, ["y"])
    assert one == {"rows": 3, **regression_scores([1.0, 2.0, 4.0], [1.0, 2.5, 3.0])}
    present = np.array([[True, False], [True, False]])
    two = target_scores(np.ones((2, 2)), np.ones((2, 2)), present, ["y", "z"], sentiment=True)
    assert two["per_target"]["z"] == {"rows": 0} and two["rows"] == 2
    assert two["acc7"] == 1.0 and two["mae"] == 0.0
    assert two["pearson"] is None  # constant vectors: undefined for every scored target
    with pytest.raises(ValueError, match="no row carries any target"):
        target_scores(np.ones((2, 1)), np.ones((2, 1)), np.zeros((2, 1), bool), ["y"])
    with pytest.raises(ValueError, match="2 target columns but 1 names"):
        target_scores(np.ones((2, 2)), np.ones((2, 2)), np.ones((2, 2), bool), ["y"])


def test_errors() -> None:
    with pytest.raises(ValueError, match="y_true has 2 values but y_pred has 1"):
        regression_scores([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="empty"):
        sentiment_scores([], [])
    with pytest.raises(ValueError, match="NaN or infinite"):
        regression_scores([1.0, np.nan], [1.0, 2.0])
    with pytest.raises(ValueError, match="must be 1-D"):
        regression_scores([[1.0]], [[1.0]])
