"""Classification and calibration metrics: hand-computed values and sklearn."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from polymodal.metrics.classification import (
    accuracy,
    auroc,
    average_precision,
    classification_scores,
    confusion_matrix,
    expected_calibration_error,
    f1_macro,
    precision_recall_f1,
)

ARGMAX_KEYS = ("accuracy", "f1_macro", "confusion_matrix", "num_examples")


def test_three_classes_with_a_class_never_predicted() -> None:
    # true 0 -> pred 0, 1; true 1 -> pred 1, 1; true 2 -> pred 0, 1 (class 2 never predicted).
    # accuracy = 3/6. F1 = 2TP / (2TP + FP + FN):
    # class 0: TP 1, FP 1, FN 1 -> 1/2; class 1: TP 2, FP 2, FN 0 -> 2/3; class 2: TP 0 -> 0.
    # macro = (1/2 + 2/3 + 0) / 3 = 7/18.
    y_true, y_pred = [0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 0, 1]
    assert accuracy(y_true, y_pred) == pytest.approx(0.5)
    assert f1_macro(y_true, y_pred) == pytest.approx(7 / 18)
    matrix = confusion_matrix(y_true, y_pred)
    assert matrix.dtype == np.int64
    assert matrix.tolist() == [[1, 1, 0], [0, 2, 0], [1, 1, 0]]


def test_label_only_in_prediction_counts_and_absent_labels_do_not() -> None:
    # Class 2 is only predicted: class 0: TP 1, FN 1 -> 2/3; class 1: TP 2 -> 1; class 2: FP 1 -> 0.
    # macro = (2/3 + 1 + 0) / 3 = 5/9. Classes 3 and 4 (num_classes=5) appear nowhere: left out.
    y_true, y_pred = np.array([0, 0, 1, 1]), np.array([0, 2, 1, 1])
    assert f1_macro(y_true, y_pred) == pytest.approx(5 / 9)
    assert f1_macro(y_true, y_pred, num_classes=5) == pytest.approx(5 / 9)
    assert confusion_matrix(y_true, y_pred).tolist() == [[1, 0, 1], [0, 2, 0], [0, 0, 0]]
    assert confusion_matrix(y_true, y_pred, num_classes=5).shape == (5, 5)
    # Class 1 is absent from both: the mean is over classes 0 and 2 only.
    assert f1_macro([0, 2], [0, 2]) == pytest.approx(1.0)


def test_binary() -> None:
    # class 1: TP 2, FN 1, FP 1 -> 4/6; class 0: TP 1, FP 1, FN 1 -> 2/4; macro = 7/12.
    y_true, y_pred = torch.tensor([1, 1, 1, 0, 0]), torch.tensor([1, 0, 1, 1, 0])
    assert accuracy(y_true, y_pred) == pytest.approx(3 / 5)
    assert f1_macro(y_true, y_pred) == pytest.approx(7 / 12)
    assert confusion_matrix(y_true, y_pred).tolist() == [[1, 1], [1, 2]]


def test_classification_scores_from_logits() -> None:
    # argmax per row -> [0, 1, 1, 1] against [0, 1, 2, 1]: accuracy 3/4.
    # class 0: F1 1; class 1: TP 2, FP 1 -> 4/5; class 2: FN 1 -> 0; class 3 absent.
    # macro = (1 + 4/5 + 0) / 3 = 3/5; the matrix keeps all C = 4 classes.
    logits = torch.tensor(
        [[3.0, 1.0, 0.0, -1.0], [0.0, 2.0, 1.0, -1.0], [0.0, 5.0, 4.0, -1.0], [-1.0, 0.5, 0.0, 0.0]]
    )
    scores = classification_scores(torch.tensor([0, 1, 2, 1]), logits)
    assert {key: scores[key] for key in ARGMAX_KEYS} == {
        "accuracy": pytest.approx(0.75),
        "f1_macro": pytest.approx(0.6),
        "confusion_matrix": [[1, 0, 0, 0], [0, 2, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]],
        "num_examples": 4,
    }
    # Logits are softmaxed for the probability metrics: the same values as from probabilities.
    probs = logits.double().softmax(-1)
    from_probs = classification_scores([0, 1, 2, 1], probs)
    assert from_probs.pop("confusion_matrix") == scores["confusion_matrix"]
    assert from_probs == pytest.approx({k: v for k, v in scores.items() if k != "confusion_matrix"})
    # Probabilities in bfloat16 (which numpy cannot hold) give the same argmax.
    low_precision = classification_scores([0, 1, 2, 1], probs.to(torch.bfloat16))
    assert {key: low_precision[key] for key in ARGMAX_KEYS} == {k: scores[k] for k in ARGMAX_KEYS}
    assert low_precision["ece_15"] == pytest.approx(scores["ece_15"], abs=1e-2)


def test_classification_scores_keys() -> None:
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3), size=30)
    y_true = rng.integers(0, 3, 30)
    averaged = {
        f"{m}_{a}" for a in ("macro", "micro", "weighted") for m in ("precision", "recall", "f1")
    }
    common = {"accuracy", "confusion_matrix", "num_examples", "ece_15", *averaged}
    multiclass = classification_scores(y_true, probs)
    assert set(multiclass) == common | {
        "auroc_ovr_macro",
        "auroc_ovr_weighted",
        "average_precision_macro",
    }
    assert multiclass["auroc_ovr_macro"] == pytest.approx(auroc(y_true, probs))
    assert multiclass["auroc_ovr_weighted"] == pytest.approx(auroc(y_true, probs, "weighted"))
    assert multiclass["average_precision_macro"] == pytest.approx(average_precision(y_true, probs))
    assert multiclass["ece_15"] == pytest.approx(expected_calibration_error(y_true, probs))
    binary_probs = rng.dirichlet(np.ones(2), size=30)
    binary_true = rng.integers(0, 2, 30)
    binary = classification_scores(binary_true, binary_probs)
    binary_keys = {"precision", "recall", "f1", "auroc", "average_precision"}
    assert set(binary) == common | binary_keys
    assert binary["auroc"] == pytest.approx(auroc(binary_true, binary_probs[:, 1]))
    assert binary["average_precision"] == pytest.approx(
        average_precision(binary_true, binary_probs[:, 1])
    )
    expected = precision_recall_f1(binary_true, binary_probs.argmax(1), "binary")
    assert binary["f1"] == pytest.approx(expected["f1"])
    # One class in the truth: the ranking metrics are undefined.
    single = classification_scores(np.zeros(30, dtype=int), probs)
    assert single["auroc_ovr_macro"] is None and single["auroc_ovr_weighted"] is None
    assert single["average_precision_macro"] is not None  # class 0 has positives
    single = classification_scores(np.zeros(30, dtype=int), binary_probs)
    assert single["auroc"] is None and single["average_precision"] is None
    one_row = classification_scores([1], [[0.3, 0.7]])
    assert one_row["auroc"] is None and one_row["average_precision"] == 1.0
    assert all(type(v) in (float, int, list) for v in one_row.values() if v is not None)


def test_sklearn_agrees() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    for _ in range(20):
        y_true, y_pred = rng.integers(0, 6, 50), rng.integers(0, 7, 50)
        labels = np.union1d(y_true, y_pred)
        expected = metrics.f1_score(y_true, y_pred, average="macro", labels=labels, zero_division=0)
        assert f1_macro(y_true, y_pred) == pytest.approx(expected)
        assert accuracy(y_true, y_pred) == pytest.approx(metrics.accuracy_score(y_true, y_pred))
        assert np.array_equal(
            confusion_matrix(y_true, y_pred, num_classes=7),
            metrics.confusion_matrix(y_true, y_pred, labels=range(7)),
        )


def sklearn_prf(y_true: np.ndarray, y_pred: np.ndarray, average: str) -> dict[str, float]:
    metrics = pytest.importorskip("sklearn.metrics")
    values = metrics.precision_recall_fscore_support(
        y_true, y_pred, average=average, zero_division=0
    )
    return dict(zip(("precision", "recall", "f1"), values[:3], strict=True))


@pytest.mark.parametrize("average", ["macro", "micro", "weighted", "binary"])
def test_precision_recall_f1_against_sklearn(average: str) -> None:
    rng = np.random.default_rng(1)
    classes = 2 if average == "binary" else 5
    cases = [(rng.integers(0, classes, 40), rng.integers(0, classes, 40)) for _ in range(20)]
    labels = np.arange(40) % classes
    cases += [
        (labels, labels),  # perfect predictions
        (np.ones(6, dtype=int), np.ones(6, dtype=int)),  # one class present
        (np.ones(6, dtype=int), np.zeros(6, dtype=int)),  # every prediction wrong
        (np.zeros(6, dtype=int), np.zeros(6, dtype=int)),  # class 1 nowhere (binary: all 0)
    ]
    if average != "binary":  # a label only predicted, one only true
        cases.append((np.array([0, 0, 1, 3]), np.array([0, 2, 1, 1])))
    for y_true, y_pred in cases:
        expected = sklearn_prf(y_true, y_pred, average)
        assert precision_recall_f1(y_true, y_pred, average) == pytest.approx(expected)


@pytest.mark.parametrize("classes", [2, 4])
def test_keys_are_sklearn_scorer_names(classes: int) -> None:
    # Each precision/recall/F1 key is a scorer name, and scores as that scorer's metric.
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(classes)
    y_true, probs = rng.integers(0, classes, 60), rng.dirichlet(np.ones(classes), size=60)
    scores = classification_scores(y_true, probs)
    averaged = {key for key in scores if key.split("_")[0] in ("precision", "recall", "f1")}
    assert len(averaged) == (12 if classes == 2 else 9)
    assert averaged <= set(metrics.get_scorer_names())
    for key in averaged:
        name, _, average = key.partition("_")
        metric = getattr(metrics, f"{name}_score")
        expected = metric(y_true, probs.argmax(1), average=average or "binary", zero_division=0)
        assert scores[key] == pytest.approx(expected), key


def test_auroc_and_average_precision_binary_against_sklearn() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(2)
    cases = []
    for decimals in (6, 1, 0):  # 0 decimals: scores from {0, 1}, ties everywhere
        for _ in range(10):
            y_true = rng.integers(0, 2, 30)
            y_true[:2] = [0, 1]
            cases.append((y_true, np.round(rng.random(30) + 0.3 * y_true, decimals)))
    cases.append((np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9])))  # perfect
    cases.append((np.array([0, 0, 1, 1]), np.array([0.9, 0.8, 0.2, 0.1])))  # reversed
    cases.append((np.array([0, 1, 1, 0]), np.full(4, 0.5)))  # all tied: 0.5 and prevalence
    for y_true, scores in cases:
        assert auroc(y_true, scores) == pytest.approx(metrics.roc_auc_score(y_true, scores))
        expected = metrics.average_precision_score(y_true, scores)
        assert average_precision(y_true, scores) == pytest.approx(expected)
    assert auroc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert auroc([0, 1, 1, 0], [0.5] * 4) == 0.5
    assert average_precision([0, 1, 1, 0], [0.5] * 4) == 0.5
    assert average_precision([1, 1, 1], [0.2, 0.1, 0.3]) == 1.0  # no negatives: still defined


def test_auroc_and_average_precision_multiclass_against_sklearn() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(3)
    for decimals in (6, 1):
        for _ in range(10):
            y_true = np.r_[np.arange(4), rng.integers(0, 4, 36)]
            probs = np.round(rng.dirichlet(np.ones(4), size=40), decimals)
            probs /= probs.sum(axis=1, keepdims=True)
            for average in ("macro", "weighted"):
                expected = metrics.roc_auc_score(y_true, probs, multi_class="ovr", average=average)
                assert auroc(y_true, probs, average) == pytest.approx(expected)
            onehot = np.eye(4)[y_true]
            expected = metrics.average_precision_score(onehot, probs, average="macro")
            assert average_precision(y_true, probs) == pytest.approx(expected)


def test_classes_absent_from_truth_are_left_out() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(4)
    y_true = rng.choice([0, 2, 3], size=40)  # class 1 never true
    probs = rng.dirichlet(np.ones(4), size=40)
    present = [0, 2, 3]
    per_class = [metrics.roc_auc_score(y_true == k, probs[:, k]) for k in present]
    counts = [np.sum(y_true == k) for k in present]
    assert auroc(y_true, probs) == pytest.approx(np.mean(per_class))
    assert auroc(y_true, probs, "weighted") == pytest.approx(np.average(per_class, weights=counts))
    per_class = [metrics.average_precision_score(y_true == k, probs[:, k]) for k in present]
    assert average_precision(y_true, probs) == pytest.approx(np.mean(per_class))
    with pytest.raises(ValueError, match="AUROC is undefined"):
        auroc(np.zeros(40, dtype=int), probs)  # one class: no class has negatives
    with pytest.raises(ValueError, match="AUROC is undefined"):
        auroc([1, 1, 1], [0.2, 0.5, 0.1])
    with pytest.raises(ValueError, match="AP is undefined"):
        average_precision([0, 0, 0], [0.2, 0.5, 0.1])


def test_ece_hand_computed() -> None:
    # Bins of width 1/15, (lo, hi]:
    # 0.9 and 0.88 -> (13/15, 14/15]: one right, one wrong -> |1/2 - 0.89| = 0.39, share 2/4;
    # 0.7 -> (10/15, 11/15]: right -> 0.3, share 1/4; 0.55 -> (8/15, 9/15]: wrong -> 0.55, 1/4.
    # ECE = 0.39 / 2 + 0.3 / 4 + 0.55 / 4 = 0.4075.
    probs = [[0.9, 0.1], [0.88, 0.12], [0.3, 0.7], [0.45, 0.55]]
    assert expected_calibration_error([0, 1, 1, 0], probs) == pytest.approx(0.4075)
    # 0.8 = 12/15 is the top of bin (11/15, 12/15], so it does not share a bin with 0.81:
    # |1 - 0.8| / 2 + |0 - 0.81| / 2 = 0.505 (one bin would give |1/2 - 0.805| = 0.305).
    assert expected_calibration_error([0, 1], [[0.8, 0.2], [0.81, 0.19]]) == pytest.approx(0.505)
    # Perfectly confident and right: 0.
    assert expected_calibration_error([1, 0], [[0.0, 1.0], [1.0, 0.0]]) == 0.0


def test_ece_against_a_loop() -> None:
    rng = np.random.default_rng(5)
    probs = rng.dirichlet(np.ones(5) * 0.5, size=200)
    y_true = rng.integers(0, 5, 200)
    confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == y_true
    expected = 0.0
    for lo, hi in zip(np.linspace(0, 1, 16)[:-1], np.linspace(0, 1, 16)[1:], strict=True):
        in_bin = (confidence > lo) & (confidence <= hi)
        if in_bin.any():
            gap = abs(correct[in_bin].mean() - confidence[in_bin].mean())
            expected += gap * in_bin.mean()
    assert expected_calibration_error(y_true, probs) == pytest.approx(expected)
    assert expected_calibration_error(y_true, torch.from_numpy(probs).float()) == pytest.approx(
        expected, abs=1e-6
    )


def test_errors() -> None:
    with pytest.raises(ValueError, match="empty"):
        accuracy([], [])
    with pytest.raises(ValueError, match="y_true has 3 labels but y_pred has 2"):
        f1_macro([0, 1, 1], [0, 1])
    with pytest.raises(ValueError, match="y_true has 3 labels but probs has 2"):
        classification_scores([0, 1, 1], np.eye(2))
    with pytest.raises(ValueError, match="empty"):
        classification_scores([], np.zeros((0, 3)))
    with pytest.raises(ValueError, match="shape"):
        classification_scores([0, 1], [0.2, 0.8])
    with pytest.raises(ValueError, match="NaN"):
        classification_scores([0], [[np.nan, 1.0]])
    with pytest.raises(ValueError, match="out of range"):
        confusion_matrix([0, 3], [0, 1], num_classes=3)
    with pytest.raises(ValueError, match="out of range"):
        classification_scores([0, 2], np.eye(2))
    with pytest.raises(ValueError, match="negative"):
        accuracy([0, -1], [0, 1])
    with pytest.raises(ValueError, match="integer"):
        accuracy([0.0, 1.5], [0, 1])
    with pytest.raises(ValueError, match="average must be one of"):
        precision_recall_f1([0, 1], [0, 1], "samples")
    with pytest.raises(ValueError, match="needs labels 0 and 1"):
        precision_recall_f1([0, 2], [0, 1], "binary")
    with pytest.raises(ValueError, match="1-D scores need labels 0 and 1"):
        auroc([0, 2], [0.1, 0.3])
    with pytest.raises(ValueError, match="out of range for 2 columns"):
        average_precision([0, 2], np.eye(2))
    with pytest.raises(ValueError, match="'macro' or 'weighted'"):
        auroc([0, 1], [0.1, 0.3], average="micro")
    with pytest.raises(ValueError, match="y_true has 3 labels but scores has 2 rows"):
        auroc([0, 1, 1], [0.1, 0.3])
    with pytest.raises(ValueError, match="NaN or infinite"):
        auroc([0, 1], [0.1, np.nan])
    with pytest.raises(ValueError, match="softmax"):
        expected_calibration_error([0, 1], [[2.0, -1.0], [0.5, 0.5]])
    with pytest.raises(ValueError, match="NaN or infinite"):
        classification_scores([0], [[np.inf, 1.0]])
