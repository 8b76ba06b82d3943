"""Classification metrics over integer class indices (numpy; lists and torch tensors accepted)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def _to_numpy(values: Any) -> np.ndarray:
    """An array from a list, array or tensor (any device; bfloat16 becomes float32)."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu()
        return (values.float() if values.dtype == torch.bfloat16 else values).numpy()
    return np.asarray(values)


def _labels(y_true: Any, y_pred: Any, pred_name: str = "y_pred") -> tuple[np.ndarray, np.ndarray]:
    """Both label vectors as 1-D int64 arrays of equal, non-zero length."""
    arrays = []
    for name, values in (("y_true", y_true), (pred_name, y_pred)):
        array = _to_numpy(values)
        if array.ndim != 1:
            raise ValueError(f"{name} must be 1-D class indices, got shape {array.shape}")
        if array.size and not (np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_):
            raise ValueError(f"{name} must hold integer class indices, got dtype {array.dtype}")
        if array.size and array.min() < 0:
            raise ValueError(f"{name} has a negative class index ({array.min()})")
        arrays.append(array.astype(np.int64))
    true, pred = arrays
    if len(true) != len(pred):
        raise ValueError(f"y_true has {len(true)} labels but {pred_name} has {len(pred)}")
    if len(true) == 0:
        raise ValueError(f"no examples to score: y_true and {pred_name} are empty")
    return true, pred


def accuracy(y_true: Any, y_pred: Any) -> float:
    """Fraction of examples whose predicted class equals the true class."""
    true, pred = _labels(y_true, y_pred)
    return float(np.mean(true == pred))


def _confusion(true: np.ndarray, pred: np.ndarray, num_classes: int | None) -> np.ndarray:
    """Counts of (true, predicted) pairs with one bincount over ``true * C + pred``."""
    largest = int(max(true.max(), pred.max()))
    if num_classes is None:
        num_classes = largest + 1
    elif largest >= num_classes:
        raise ValueError(f"class index {largest} is out of range for num_classes={num_classes}")
    counts = np.bincount(true * num_classes + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).astype(np.int64)


def confusion_matrix(y_true: Any, y_pred: Any, num_classes: int | None = None) -> np.ndarray:
    """(C, C) int64 counts: rows are true classes, columns predicted classes.

    ``num_classes`` defaults to the largest label seen plus one.
    """
    return _confusion(*_labels(y_true, y_pred), num_classes)


def _macro_f1(matrix: np.ndarray) -> float:
    """Mean F1 over classes present in truth or prediction; F1 = 2TP / (2TP + FP + FN)."""
    true_counts, pred_counts = matrix.sum(axis=1), matrix.sum(axis=0)
    present = (true_counts + pred_counts) > 0
    f1 = 2 * np.diag(matrix)[present] / (true_counts + pred_counts)[present]
    return float(f1.mean())


def macro_f1(y_true: Any, y_pred: Any, num_classes: int | None = None) -> float:
    """Unweighted mean F1 over labels present in truth or prediction (zero_division=0)."""
    return _macro_f1(confusion_matrix(y_true, y_pred, num_classes))


def classification_scores(y_true: Any, probs: Any) -> dict[str, Any]:
    """Accuracy, macro F1 and confusion matrix from (N, C) probabilities or logits (argmax)."""
    scores = _to_numpy(probs)
    if scores.ndim != 2 or scores.shape[1] == 0:
        raise ValueError(f"probs must have shape (N, C) with C >= 1, got {scores.shape}")
    if np.isnan(scores).any():
        raise ValueError("probs contain NaN")
    y_pred = scores.argmax(axis=1)
    matrix = _confusion(*_labels(y_true, y_pred, pred_name="probs"), scores.shape[1])
    return {
        "accuracy": float(np.trace(matrix) / matrix.sum()),
        "macro_f1": _macro_f1(matrix),
        "confusion_matrix": matrix.tolist(),
        "num_examples": int(matrix.sum()),
    }
