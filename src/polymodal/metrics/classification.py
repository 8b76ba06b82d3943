"""Classification and calibration metrics (numpy; lists and tensors work).

Labels are integer class indices. A function returning one number raises ValueError where that
number is undefined (AUROC with one class in truth, say); the ``*_scores`` dictionaries hold
None there instead.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

AVERAGES = ("macro", "micro", "weighted", "binary")
ECE_BINS = 15
DISTRIBUTION_TOLERANCE = 1e-2  # rows summing to 1 within this are probabilities (bfloat16 too)


def _to_numpy(values: Any) -> np.ndarray:
    """An array from a list, array or tensor (any device; bfloat16 becomes float32)."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu()
        return (values.float() if values.dtype == torch.bfloat16 else values).numpy()
    return np.asarray(values)


def _label_vector(values: Any, name: str) -> np.ndarray:
    """Class indices as a 1-D int64 array."""
    array = _to_numpy(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D class indices, got shape {array.shape}")
    if array.size and not (np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_):
        raise ValueError(f"{name} must hold integer class indices, got dtype {array.dtype}")
    if array.size and array.min() < 0:
        raise ValueError(f"{name} has a negative class index ({array.min()})")
    return array.astype(np.int64)


def _labels(y_true: Any, y_pred: Any, pred_name: str = "y_pred") -> tuple[np.ndarray, np.ndarray]:
    """Both label vectors as 1-D int64 arrays of equal, non-zero length."""
    true, pred = _label_vector(y_true, "y_true"), _label_vector(y_pred, pred_name)
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


def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Elementwise ratio in float64, 0 where the denominator is 0 (zero_division=0)."""
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)


def _precision_recall_f1(matrix: np.ndarray, average: str) -> dict[str, float]:
    """Precision, recall and F1 from a confusion matrix; see ``precision_recall_f1``."""
    if average not in AVERAGES:
        raise ValueError(f"average must be one of {', '.join(AVERAGES)}, got {average!r}")
    hits, support, predicted = np.diag(matrix), matrix.sum(axis=1), matrix.sum(axis=0)
    weights = None
    if average == "micro":
        hits, support, predicted = hits.sum(), support.sum(), predicted.sum()
    elif average == "binary":
        if len(matrix) > 2:
            raise ValueError(f"average='binary' needs labels 0 and 1, got label {len(matrix) - 1}")
        matrix = np.pad(matrix, (0, 2 - len(matrix)))  # class 1 may appear nowhere
        hits, support, predicted = matrix[1, 1], matrix[1].sum(), matrix[:, 1].sum()
    else:
        present = (support + predicted) > 0
        hits, support, predicted = hits[present], support[present], predicted[present]
        weights = support if average == "weighted" else None
    values = {
        "precision": _divide(hits, predicted),
        "recall": _divide(hits, support),
        "f1": _divide(2 * hits, support + predicted),
    }
    return {name: float(np.average(value, weights=weights)) for name, value in values.items()}


def precision_recall_f1(
    y_true: Any, y_pred: Any, average: str = "macro", num_classes: int | None = None
) -> dict[str, float]:
    """Precision, recall and F1 as sklearn's ``precision_recall_fscore_support``, zero_division=0.

    "macro" is the unweighted mean over labels present in truth or prediction, "weighted" the
    mean weighted by each label's true count, "micro" pools the counts (all three equal
    accuracy for single-label data), "binary" scores class 1 alone (labels must be 0 or 1).
    """
    return _precision_recall_f1(confusion_matrix(y_true, y_pred, num_classes), average)


def f1_macro(y_true: Any, y_pred: Any, num_classes: int | None = None) -> float:
    """Unweighted mean F1 over labels present in truth or prediction (zero_division=0)."""
    return precision_recall_f1(y_true, y_pred, "macro", num_classes)["f1"]


def _scores_matrix(scores: Any, name: str) -> np.ndarray:
    """Finite scores as a float64 (N, C) matrix; a 1-D vector becomes one column."""
    array = _to_numpy(scores)
    if array.ndim not in (1, 2) or 0 in array.shape:
        raise ValueError(f"{name} must have shape (N,) or (N, C), got {array.shape}")
    array = array.astype(np.float64).reshape(len(array), -1)
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contain NaN or infinite values")
    return array


def _targets(y_true: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """One-vs-rest targets and scores, both (N, K); 1-D scores score class 1 of 0/1 labels."""
    array = _to_numpy(scores)
    matrix = _scores_matrix(array, "scores")
    true = _label_vector(y_true, "y_true")
    if len(true) != len(matrix):
        raise ValueError(f"y_true has {len(true)} labels but scores has {len(matrix)} rows")
    if array.ndim == 1:
        if true.max() > 1:
            raise ValueError(f"1-D scores need labels 0 and 1, got label {true.max()}")
        return (true == 1)[:, None], matrix
    if true.max() >= matrix.shape[1]:
        raise ValueError(f"class index {true.max()} is out of range for {matrix.shape[1]} columns")
    return true[:, None] == np.arange(matrix.shape[1]), matrix


def _tie_runs(ordered: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per position of column-sorted scores, the first and last position of its run of ties."""
    n = len(ordered)
    index = np.broadcast_to(np.arange(n)[:, None], ordered.shape)
    differs = ordered[1:] != ordered[:-1]
    edge = np.ones((1, ordered.shape[1]), dtype=bool)
    first = np.maximum.accumulate(np.where(np.vstack([edge, differs]), index, 0), axis=0)
    last = np.where(np.vstack([differs, edge]), index, n - 1)
    return first, np.minimum.accumulate(last[::-1], axis=0)[::-1]


def _auroc_columns(positive: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """AUROC per column from the Mann-Whitney statistic with average ranks (a positive tied with
    a negative counts one half), which is the trapezoidal area under the ROC curve. NaN for a
    column without positives or without negatives."""
    order = np.argsort(scores, axis=0, kind="stable")
    first, last = _tie_runs(np.take_along_axis(scores, order, axis=0))
    ranks = np.empty(scores.shape)
    np.put_along_axis(ranks, order, (first + last) / 2 + 1, axis=0)
    n_positive = positive.sum(axis=0)
    pairs = n_positive * (len(scores) - n_positive)
    wins = (ranks * positive).sum(axis=0) - n_positive * (n_positive + 1) / 2
    return np.divide(wins, pairs, out=np.full(len(pairs), np.nan), where=pairs > 0)


def _average_precision_columns(positive: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Average precision per column: the mean over positives of the precision at the lowest
    score of the positive's run of ties (sklearn's thresholds). NaN for a column without
    positives."""
    order = np.argsort(-scores, axis=0, kind="stable")
    _, last = _tie_runs(np.take_along_axis(-scores, order, axis=0))
    hits = np.take_along_axis(positive, order, axis=0)
    precision = np.take_along_axis(np.cumsum(hits, axis=0), last, axis=0) / (last + 1)
    n_positive = hits.sum(axis=0)
    total = (precision * hits).sum(axis=0)
    return np.divide(total, n_positive, out=np.full(len(total), np.nan), where=n_positive > 0)


def _mean_defined(values: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Mean (optionally weighted) of the values that are not NaN; NaN if none is."""
    defined = ~np.isnan(values)
    if not defined.any():
        return float("nan")
    return float(np.average(values[defined], weights=None if weights is None else weights[defined]))


def _defined(value: float, what: str) -> float:
    if np.isnan(value):
        raise ValueError(f"{what} is undefined: y_true needs positive and negative examples")
    return value


def auroc(y_true: Any, scores: Any, average: str = "macro") -> float:
    """Area under the ROC curve, equal to sklearn's ``roc_auc_score``.

    1-D ``scores`` score class 1 of labels 0 and 1. (N, C) scores give one-vs-rest AUROC per
    class, averaged over the classes present in ``y_true``: "macro" unweighted, "weighted" by
    their count. A class absent from ``y_true`` has no AUROC and is left out (sklearn returns
    NaN for the average instead).
    """
    if average not in ("macro", "weighted"):
        raise ValueError(f"average must be 'macro' or 'weighted', got {average!r}")
    positive, matrix = _targets(y_true, scores)
    weights = positive.sum(axis=0) if average == "weighted" else None
    return _defined(_mean_defined(_auroc_columns(positive, matrix), weights), "AUROC")


def average_precision(y_true: Any, scores: Any) -> float:
    """Average precision, equal to sklearn's ``average_precision_score``.

    1-D ``scores`` score class 1 of labels 0 and 1; (N, C) scores give the unweighted mean of
    the one-vs-rest values of the classes present in ``y_true`` (sklearn counts an absent class
    as 0). Undefined without positive examples, where sklearn returns 0.
    """
    positive, matrix = _targets(y_true, scores)
    return _defined(_mean_defined(_average_precision_columns(positive, matrix)), "AP")


def _is_distribution(matrix: np.ndarray) -> bool:
    """Whether every row holds probabilities in [0, 1] summing to 1."""
    in_range = bool(((matrix >= 0) & (matrix <= 1)).all())
    return in_range and bool(np.all(np.abs(matrix.sum(axis=1) - 1) <= DISTRIBUTION_TOLERANCE))


def _ece(true: np.ndarray, probs: np.ndarray, n_bins: int) -> float:
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == true
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.searchsorted(edges, confidence, side="left") - 1  # bin b is (edges[b], edges[b+1]]
    keep = bins >= 0  # a confidence of exactly 0 is in no bin
    confidence_sums = np.bincount(bins[keep], weights=confidence[keep], minlength=n_bins)
    correct_sums = np.bincount(bins[keep], weights=correct[keep], minlength=n_bins)
    return float(np.abs(correct_sums - confidence_sums).sum() / len(true))


def expected_calibration_error(y_true: Any, probs: Any, n_bins: int = ECE_BINS) -> float:
    """Expected calibration error over ``n_bins`` equal-width bins (lo, hi] of [0, 1], in float64.

    A row's confidence is its largest probability and its prediction the argmax; the error is
    the sum over bins of |accuracy - mean confidence| times the bin's share of all rows.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    matrix = _scores_matrix(probs, "probs")
    if not _is_distribution(matrix):
        raise ValueError("probs rows must be probabilities summing to 1 (softmax the logits)")
    true, _ = _labels(y_true, matrix.argmax(axis=1), pred_name="probs")
    return _ece(true, matrix, n_bins)


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def _none_if_nan(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


def classification_scores(y_true: Any, probs: Any) -> dict[str, Any]:
    """Every classification metric from (N, C) probabilities or logits.

    Keys follow scikit-learn's scorer names. Predictions are the argmax. Precision, recall
    and F1 come macro-, micro- and weighted-averaged (``precision_recall_f1``) as
    "precision_macro", "recall_micro", "f1_weighted" and so on, and for two classes also for
    class 1 as plain "precision", "recall" and "f1". Ranking and calibration metrics use the
    rows as probabilities when each is a distribution, else their softmax: "auroc" and
    "average_precision" of class 1 for two classes; "auroc_ovr_macro", "auroc_ovr_weighted"
    and "average_precision_macro" for more; "ece_15" always. Undefined values (one class in
    y_true) are None.
    """
    scores = _to_numpy(probs)
    if scores.ndim != 2 or scores.shape[1] == 0:
        raise ValueError(f"probs must have shape (N, C) with C >= 1, got {scores.shape}")
    if not np.isfinite(scores).all():
        raise ValueError("probs contain NaN or infinite values")
    true, pred = _labels(y_true, scores.argmax(axis=1), pred_name="probs")
    matrix = _confusion(true, pred, scores.shape[1])
    result: dict[str, Any] = {
        "accuracy": float(np.trace(matrix) / matrix.sum()),
        "confusion_matrix": matrix.tolist(),
        "num_examples": int(matrix.sum()),
    }
    for average in AVERAGES if len(matrix) == 2 else AVERAGES[:3]:
        for name, value in _precision_recall_f1(matrix, average).items():
            result[name if average == "binary" else f"{name}_{average}"] = value
    probabilities = scores.astype(np.float64)
    if not _is_distribution(probabilities):
        probabilities = _softmax(probabilities)
    positive = true[:, None] == np.arange(len(matrix))
    if len(matrix) == 2:
        result["auroc"] = _none_if_nan(_auroc_columns(positive, probabilities)[1])
        ap = _average_precision_columns(positive[:, 1:], probabilities[:, 1:])[0]
        result["average_precision"] = _none_if_nan(ap)
    elif len(matrix) > 2:
        areas = _auroc_columns(positive, probabilities)
        result["auroc_ovr_macro"] = _none_if_nan(_mean_defined(areas))
        result["auroc_ovr_weighted"] = _none_if_nan(_mean_defined(areas, positive.sum(axis=0)))
        ap = _mean_defined(_average_precision_columns(positive, probabilities))
        result["average_precision_macro"] = _none_if_nan(ap)
    result[f"ece_{ECE_BINS}"] = _ece(true, probabilities, ECE_BINS)
    return result
