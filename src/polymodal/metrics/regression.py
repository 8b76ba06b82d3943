"""Regression and sentiment-intensity metrics (numpy; lists and tensors work).

The sentiment set reproduces the CMU-MOSI / MOSEI regression evaluation of MMSA
(github.com/thuiar/MMSA, ``src/MMSA/utils/metricsTop.py``, ``__eval_mosei_regression`` at commit
a94e65d07fa1ae0d44e552390074b29b0898edfd): Acc-2 and weighted F1 of ``>= 0`` against ``< 0``
("has 0"), the same of ``> 0`` against ``< 0`` on the rows whose truth is not 0 ("non 0"), and
Acc-5 / Acc-7 as ``np.round`` of both vectors clipped to [-2, 2] / [-3, 3]. MulT's
``src/eval_metrics.py`` (github.com/yaohungt/Multimodal-Transformer, commit
a670936824ee722c8494fd98d204977a1d663c7a) computes Acc-5, Acc-7 and the non-0 accuracy alike,
but passes (prediction, truth) to ``f1_score``, which weights its F1 by predicted rather than
true class counts, and without ``exclude_zero`` splits ``> 0`` against ``<= 0``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from polymodal.metrics.classification import _to_numpy, precision_recall_f1

REGRESSION_KEYS = ("mae", "rmse", "pearson", "r2")


def _values(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    """Both vectors as finite 1-D float64 arrays of equal, non-zero length."""
    arrays = []
    for name, values in (("y_true", y_true), ("y_pred", y_pred)):
        array = _to_numpy(values)
        if array.ndim != 1:
            raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
        array = array.astype(np.float64)
        if not np.isfinite(array).all():
            raise ValueError(f"{name} contains NaN or infinite values")
        arrays.append(array)
    true, pred = arrays
    if len(true) != len(pred):
        raise ValueError(f"y_true has {len(true)} values but y_pred has {len(pred)}")
    if len(true) == 0:
        raise ValueError("no examples to score: y_true and y_pred are empty")
    return true, pred


def regression_scores(y_true: Any, y_pred: Any) -> dict[str, float | None]:
    """Mean absolute error, root mean squared error, Pearson correlation and coefficient of
    determination ("mae", "rmse", "pearson", "r2").

    "pearson" is None when either vector is constant. "r2" is ``1 - SSE / SST`` as sklearn's
    ``r2_score``; with a constant truth (SST 0) it is 1 for a perfect prediction, else 0
    (sklearn's ``force_finite``).
    """
    true, pred = _values(y_true, y_pred)
    error = pred - true
    true_centred, pred_centred = true - true.mean(), pred - pred.mean()
    residual, total = np.sum(error**2), np.sum(true_centred**2)
    varied = np.ptp(true) > 0  # exactly: a constant's mean may differ from it in the last bit
    pearson = None
    if varied and np.ptp(pred) > 0:
        pearson = float(
            np.sum(true_centred * pred_centred) / np.sqrt(total * np.sum(pred_centred**2))
        )
    return {
        "mae": float(np.mean(np.abs(error))),
        "rmse": float(np.sqrt(np.mean(error**2))),
        "pearson": pearson,
        "r2": float(1 - residual / total) if varied else float(residual == 0),
    }


def _weighted_f1(true: np.ndarray, pred: np.ndarray) -> float:
    """Count-weighted F1 of two boolean vectors (sklearn's f1_score(average="weighted"))."""
    return precision_recall_f1(true, pred, "weighted", 2)["f1"]


def sentiment_scores(y_true: Any, y_pred: Any) -> dict[str, float | None]:
    """CMU-MOSI/MOSEI sentiment metrics from scores in [-3, 3], as MMSA (see the module).

    "acc2_non_negative" / "f1_non_negative": >= 0 against < 0, zero counting as positive.
    "acc2_non_zero" / "f1_non_zero": examples whose truth is 0 left out, then > 0 against
    < 0 (None if every truth is 0). Both F1s are weighted by true class counts, as MMSA's
    f1_score(average="weighted"). "acc5" / "acc7": both vectors clipped to [-2, 2] / [-3, 3]
    and rounded half to even (np.round); clipping and rounding commute at integer bounds.
    Also the ``regression_scores``.
    """
    true, pred = _values(y_true, y_pred)
    scores: dict[str, float | None] = {
        "acc2_non_negative": float(np.mean((true >= 0) == (pred >= 0))),
        "f1_non_negative": _weighted_f1(true >= 0, pred >= 0),
        "acc2_non_zero": None,
        "f1_non_zero": None,
    }
    non_zero = true != 0
    if non_zero.any():
        true_sign, pred_sign = true[non_zero] > 0, pred[non_zero] > 0
        scores["acc2_non_zero"] = float(np.mean(true_sign == pred_sign))
        scores["f1_non_zero"] = _weighted_f1(true_sign, pred_sign)
    for classes, bound in ((5, 2.0), (7, 3.0)):
        same = np.round(np.clip(true, -bound, bound)) == np.round(np.clip(pred, -bound, bound))
        scores[f"acc{classes}"] = float(np.mean(same))
    return {**scores, **regression_scores(true, pred)}


def _mean_defined(values: list[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None


def target_scores(
    y_true: Any,
    y_pred: Any,
    present: Any,
    names: Sequence[str],
    sentiment: bool = False,
) -> dict[str, Any]:
    """Scores of several numeric targets: (N, K) truth and prediction, an (N, K) mask of the
    rows that carry each target, and the K target names.

    "rows" counts the rows that carry some target. Each target is scored on its own rows
    (``regression_scores``, or ``sentiment_scores`` when ``sentiment``); each metric at the top
    level is its mean over the targets that define it (None where none does). With several
    targets, "per_target" holds every target's own "rows" and scores (a target with no row is
    scored nowhere).
    """
    true, pred = (np.asarray(_to_numpy(v), dtype=np.float64) for v in (y_true, y_pred))
    mask = np.asarray(_to_numpy(present), dtype=bool)
    if true.ndim != 2 or true.shape != pred.shape or true.shape != mask.shape:
        raise ValueError(
            f"need (N, K) truth, prediction and mask, got {true.shape} {pred.shape} {mask.shape}"
        )
    if true.shape[1] != len(names):
        raise ValueError(f"{true.shape[1]} target columns but {len(names)} names")
    score = sentiment_scores if sentiment else regression_scores
    per_target: dict[str, dict[str, Any]] = {}
    for k, name in enumerate(names):
        rows = mask[:, k]
        per_target[name] = {"rows": int(rows.sum())}
        if rows.any():
            per_target[name].update(score(true[rows, k], pred[rows, k]))
    scored = [s for s in per_target.values() if s["rows"]]
    if not scored:
        raise ValueError("no examples to score: no row carries any target")
    keys = [key for key in scored[0] if key != "rows"]
    out: dict[str, Any] = {"rows": int(mask.any(axis=1).sum())}
    out |= {key: _mean_defined([s[key] for s in scored]) for key in keys}
    if len(names) > 1:
        out["per_target"] = per_target
    return out
