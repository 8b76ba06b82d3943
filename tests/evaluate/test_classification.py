"""Classification metrics against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from polymodal.evaluate import accuracy, classification_scores, confusion_matrix, macro_f1


def test_three_classes_with_a_class_never_predicted() -> None:
    # true 0 -> pred 0, 1; true 1 -> pred 1, 1; true 2 -> pred 0, 1 (class 2 never predicted).
    # accuracy = 3/6. F1 = 2TP / (2TP + FP + FN):
    # class 0: TP 1, FP 1, FN 1 -> 1/2; class 1: TP 2, FP 2, FN 0 -> 2/3; class 2: TP 0 -> 0.
    # macro = (1/2 + 2/3 + 0) / 3 = 7/18.
    y_true, y_pred = [0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 0, 1]
    assert accuracy(y_true, y_pred) == pytest.approx(0.5)
    assert macro_f1(y_true, y_pred) == pytest.approx(7 / 18)
    matrix = confusion_matrix(y_true, y_pred)
    assert matrix.dtype == np.int64
    assert matrix.tolist() == [[1, 1, 0], [0, 2, 0], [1, 1, 0]]


def test_label_only_in_prediction_counts_and_absent_labels_do_not() -> None:
    # Class 2 is only predicted: class 0: TP 1, FN 1 -> 2/3; class 1: TP 2 -> 1; class 2: FP 1 -> 0.
    # macro = (2/3 + 1 + 0) / 3 = 5/9. Classes 3 and 4 (num_classes=5) appear nowhere: left out.
    y_true, y_pred = np.array([0, 0, 1, 1]), np.array([0, 2, 1, 1])
    assert macro_f1(y_true, y_pred) == pytest.approx(5 / 9)
    assert macro_f1(y_true, y_pred, num_classes=5) == pytest.approx(5 / 9)
    assert confusion_matrix(y_true, y_pred).tolist() == [[1, 0, 1], [0, 2, 0], [0, 0, 0]]
    assert confusion_matrix(y_true, y_pred, num_classes=5).shape == (5, 5)
    # Class 1 is absent from both: the mean is over classes 0 and 2 only.
    assert macro_f1([0, 2], [0, 2]) == pytest.approx(1.0)


def test_binary() -> None:
    # class 1: TP 2, FN 1, FP 1 -> 4/6; class 0: TP 1, FP 1, FN 1 -> 2/4; macro = 7/12.
    y_true, y_pred = torch.tensor([1, 1, 1, 0, 0]), torch.tensor([1, 0, 1, 1, 0])
    assert accuracy(y_true, y_pred) == pytest.approx(3 / 5)
    assert macro_f1(y_true, y_pred) == pytest.approx(7 / 12)
    assert confusion_matrix(y_true, y_pred).tolist() == [[1, 1], [1, 2]]


def test_classification_scores_from_logits() -> None:
    # argmax per row -> [0, 1, 1, 1] against [0, 1, 2, 1]: accuracy 3/4.
    # class 0: F1 1; class 1: TP 2, FP 1 -> 4/5; class 2: FN 1 -> 0; class 3 absent.
    # macro = (1 + 4/5 + 0) / 3 = 3/5; the matrix keeps all C = 4 classes.
    logits = torch.tensor(
        [[3.0, 1.0, 0.0, -1.0], [0.0, 2.0, 1.0, -1.0], [0.0, 5.0, 4.0, -1.0], [-1.0, 0.5, 0.0, 0.0]]
    )
    scores = classification_scores(torch.tensor([0, 1, 2, 1]), logits)
    assert scores == {
        "accuracy": pytest.approx(0.75),
        "macro_f1": pytest.approx(0.6),
        "confusion_matrix": [[1, 0, 0, 0], [0, 2, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]],
        "num_examples": 4,
    }
    # Probabilities (here bfloat16, which numpy cannot hold) give the same argmax.
    assert classification_scores([0, 1, 2, 1], logits.softmax(-1).to(torch.bfloat16)) == scores


def test_sklearn_agrees() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    for _ in range(20):
        y_true, y_pred = rng.integers(0, 6, 50), rng.integers(0, 7, 50)
        labels = np.union1d(y_true, y_pred)
        expected = metrics.f1_score(y_true, y_pred, average="macro", labels=labels, zero_division=0)
        assert macro_f1(y_true, y_pred) == pytest.approx(expected)
        assert accuracy(y_true, y_pred) == pytest.approx(metrics.accuracy_score(y_true, y_pred))
        assert np.array_equal(
            confusion_matrix(y_true, y_pred, num_classes=7),
            metrics.confusion_matrix(y_true, y_pred, labels=range(7)),
        )


def test_errors() -> None:
    with pytest.raises(ValueError, match="empty"):
        accuracy([], [])
    with pytest.raises(ValueError, match="y_true has 3 labels but y_pred has 2"):
        macro_f1([0, 1, 1], [0, 1])
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
