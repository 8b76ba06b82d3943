"""Bootstrap confidence intervals for headline metrics, and metrics aggregated over several runs.

Intervals are percentile intervals over resamples of the examples (or queries), drawn with
replacement from one seeded generator, many resamples at once with numpy. The point estimate is
the metric on all examples; for a biased statistic (macro F1 over many rare classes) the
percentile interval can sit beside it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from polymodal.errors import DataError
from polymodal.metrics.classification import f1_macro
from polymodal.metrics.regression import REGRESSION_KEYS, target_scores
from polymodal.metrics.retrieval import _query_ranks

RESAMPLES = 1000
LEVEL = 0.95
CHUNK_ELEMENTS = 1 << 22  # temporary elements per batch of resamples: bounds memory

Statistic = Callable[[np.ndarray], np.ndarray]  # (R, n) resample indices -> (R,) values


@dataclass(frozen=True)
class Interval:
    """A point estimate on all examples and the bootstrap interval around it."""

    estimate: float
    low: float
    high: float
    level: float = LEVEL

    def to_dict(self) -> dict[str, float]:
        return {"estimate": self.estimate, "low": self.low, "high": self.high, "level": self.level}


def _resamples(n: int, resamples: int, seed: int, width: int) -> Iterator[np.ndarray]:
    """(R, n) index arrays, ``resamples`` rows in all, from one generator seeded with ``seed``.

    R is as many resamples as fit in CHUNK_ELEMENTS at ``width`` temporary elements each; the
    indices drawn do not depend on it.
    """
    rng = np.random.default_rng(seed)
    rows = max(1, CHUNK_ELEMENTS // width)
    for start in range(0, resamples, rows):
        yield rng.integers(0, n, size=(min(rows, resamples - start), n))


def bootstrap(
    statistic: Statistic,
    n: int,
    estimate: float,
    resamples: int = RESAMPLES,
    level: float = LEVEL,
    seed: int = 0,
    width: int | None = None,
) -> Interval:
    """Percentile interval of ``statistic`` over ``resamples`` resamples of ``n`` examples.

    ``width`` is the temporary elements ``statistic`` needs per resample (default ``n``).
    Resamples where the statistic is undefined (NaN) are left out.
    """
    if n < 1:
        raise ValueError("no examples to resample")
    if resamples < 1 or not 0 < level < 1:
        raise ValueError(f"need resamples >= 1 and 0 < level < 1, got {resamples} and {level}")
    chunks = _resamples(n, resamples, seed, width or n)
    values = np.concatenate([statistic(idx) for idx in chunks])
    tail = (1 - level) / 2
    low, high = np.nanquantile(values, [tail, 1 - tail])  # NaN: undefined on that resample
    return Interval(float(estimate), float(low), float(high), level)


def bootstrap_mean(
    values: Any, resamples: int = RESAMPLES, level: float = LEVEL, seed: int = 0
) -> Interval:
    """Interval for the mean of per-example ``values`` (1-D)."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or not len(array):
        raise ValueError(f"values must be a non-empty 1-D array, got shape {array.shape}")
    return bootstrap(
        lambda idx: array[idx].mean(axis=1), len(array), float(array.mean()), resamples, level, seed
    )


def _class_indices(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    true, pred = (np.asarray(torch.as_tensor(v).cpu(), dtype=np.int64) for v in (y_true, y_pred))
    if true.ndim != 1 or true.shape != pred.shape:
        raise ValueError(f"need two 1-D label vectors of one length, got {true.shape} {pred.shape}")
    return true, pred


def accuracy_interval(
    y_true: Any, y_pred: Any, resamples: int = RESAMPLES, level: float = LEVEL, seed: int = 0
) -> Interval:
    """Interval for accuracy from per-example true and predicted class indices."""
    true, pred = _class_indices(y_true, y_pred)
    return bootstrap_mean(true == pred, resamples, level, seed)


def f1_macro_interval(
    y_true: Any,
    y_pred: Any,
    num_classes: int | None = None,
    resamples: int = RESAMPLES,
    level: float = LEVEL,
    seed: int = 0,
) -> Interval:
    """Interval for macro F1 (as ``f1_macro``): one confusion matrix per resample, one bincount."""
    true, pred = _class_indices(y_true, y_pred)
    classes = num_classes or int(max(true.max(initial=0), pred.max(initial=0))) + 1
    codes = true * classes + pred
    cells = classes * classes

    def statistic(idx: np.ndarray) -> np.ndarray:
        offsets = (np.arange(len(idx)) * cells)[:, None]
        counts = np.bincount((codes[idx] + offsets).ravel(), minlength=len(idx) * cells)
        matrix = counts.reshape(len(idx), classes, classes)
        totals = matrix.sum(axis=2) + matrix.sum(axis=1)  # true + predicted counts per class
        f1 = 2 * np.diagonal(matrix, axis1=1, axis2=2) / np.maximum(totals, 1)
        return f1.sum(axis=1) / (totals > 0).sum(axis=1)

    estimate = f1_macro(true, pred, classes)
    return bootstrap(statistic, len(true), estimate, resamples, level, seed, len(true) + cells)


def classification_intervals(
    y_true: Any, probs: Any, resamples: int = RESAMPLES, level: float = LEVEL, seed: int = 0
) -> dict[str, Interval]:
    """Intervals for "accuracy" and "f1_macro" (``classification_scores`` keys) from true
    classes and (N, C) probabilities (argmax)."""
    scores = torch.as_tensor(probs)
    y_pred = scores.argmax(dim=1)
    return {
        "accuracy": accuracy_interval(y_true, y_pred, resamples, level, seed),
        "f1_macro": f1_macro_interval(y_true, y_pred, scores.shape[1], resamples, level, seed),
    }


def retrieval_intervals(
    similarity: Any,
    ks: Sequence[int] = (1, 5, 10),
    directions: tuple[str, str] = ("image_to_text", "text_to_image"),
    resamples: int = RESAMPLES,
    level: float = LEVEL,
    seed: int = 0,
) -> dict[str, Any]:
    """R@K intervals per direction and for their mean ("mean_recall"), query i matching item i.

    Ranks are those of ``retrieval_scores`` (stable ties); pair i is resampled as one unit, so
    both directions see the same resample.
    """
    scores = torch.as_tensor(similarity).detach().double()
    ranks = [_query_ranks(m, None, "stable").numpy() for m in (scores, scores.T)]
    hits = {
        (name, k): (rank <= k).astype(np.float64)
        for name, rank in zip(directions, ranks, strict=True)
        for k in ks
    }
    out: dict[str, Any] = {
        name: {f"R@{k}": bootstrap_mean(hits[name, k], resamples, level, seed) for k in ks}
        for name in directions
    }
    mean_hits = np.mean(list(hits.values()), axis=0)  # per pair: its share of R@K hits
    out["mean_recall"] = bootstrap_mean(mean_hits, resamples, level, seed)
    return out


def _regression_statistics(
    true: np.ndarray, pred: np.ndarray, weight: np.ndarray
) -> dict[str, np.ndarray]:
    """MAE, RMSE, Pearson and R² of each row of (R, n) arrays over the cells ``weight`` (0 or 1)
    counts, as ``regression_scores`` (NaN where a row has no cell, or Pearson is undefined)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        count = weight.sum(axis=1)
        error = pred - true
        residual = (weight * error**2).sum(axis=1)
        true_c = true - (weight * true).sum(axis=1, keepdims=True) / count[:, None]
        pred_c = pred - (weight * pred).sum(axis=1, keepdims=True) / count[:, None]
        total = (weight * true_c**2).sum(axis=1)
        spread = {
            name: np.where(weight > 0, v, -np.inf).max(1) - np.where(weight > 0, v, np.inf).min(1)
            for name, v in (("true", true), ("pred", pred))
        }
        varied = spread["true"] > 0
        pearson = (weight * true_c * pred_c).sum(axis=1) / np.sqrt(
            total * (weight * pred_c**2).sum(axis=1)
        )
        statistics = {
            "mae": (weight * np.abs(error)).sum(axis=1) / count,
            "rmse": np.sqrt(residual / count),
            "pearson": np.where(varied & (spread["pred"] > 0), pearson, np.nan),
            "r2": np.where(varied, 1 - residual / total, (residual == 0).astype(np.float64)),
        }
    return {name: np.where(count > 0, value, np.nan) for name, value in statistics.items()}


def regression_intervals(
    y_true: Any,
    y_pred: Any,
    present: Any,
    names: Sequence[str],
    resamples: int = RESAMPLES,
    level: float = LEVEL,
    seed: int = 0,
) -> dict[str, Any]:
    """Intervals for "mae", "rmse", "pearson" and "r2" as ``target_scores`` reports them, from
    (N, K) truth, prediction and presence mask: rows are resampled as units, each target scored
    on the resampled rows that carry it, each metric averaged over the targets (those a resample
    leaves undefined are skipped). With several targets "per_target" holds each one's."""
    true, pred = (np.asarray(torch.as_tensor(v).cpu(), dtype=np.float64) for v in (y_true, y_pred))
    mask = np.asarray(torch.as_tensor(present).cpu(), dtype=np.float64)
    estimates = target_scores(true, pred, mask > 0, names)
    targets = range(len(names))

    def statistic(key: str, which: Sequence[int]) -> Statistic:
        def values(idx: np.ndarray) -> np.ndarray:
            per = [
                _regression_statistics(true[idx, k], pred[idx, k], mask[idx, k])[key] for k in which
            ]
            stacked = np.stack(per)
            defined = ~np.isnan(stacked)
            total = np.where(defined, stacked, 0.0).sum(axis=0)
            return np.where(defined.any(axis=0), total / np.maximum(defined.sum(axis=0), 1), np.nan)

        return values

    def intervals(scores: dict[str, Any], which: Sequence[int]) -> dict[str, Interval]:
        return {
            key: bootstrap(statistic(key, which), len(true), scores[key], resamples, level, seed)
            for key in REGRESSION_KEYS
            if scores.get(key) is not None
        }

    out: dict[str, Any] = intervals(estimates, targets)
    if len(names) > 1:
        out["per_target"] = {
            name: intervals(estimates["per_target"][name], [k]) for k, name in enumerate(names)
        }
    return out


def numeric_leaves(value: Any, prefix: str = "") -> dict[str, float]:
    """Numbers in nested dicts keyed by dotted path (lists, strings and booleans are skipped)."""
    if isinstance(value, dict):
        leaves: dict[str, float] = {}
        for key, item in value.items():
            leaves.update(numeric_leaves(item, f"{prefix}{key}."))
        return leaves
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return {prefix[:-1]: float(value)}
    return {}


def _read_results(path: Path) -> dict[str, Any]:
    file = path if path.is_file() else path / "results.json"
    if not file.is_file():
        raise DataError(f"{file} is missing; pass run folders written by 'polymodal train'")
    return json.loads(file.read_text(encoding="utf-8"))


def aggregate_runs(run_dirs: Sequence[str | Path]) -> dict[str, dict[str, Any]]:
    """Mean, sample std (ddof=1; None for one run), n and values of every number in the runs'
    results.json files, keyed by dotted path (e.g. "test.classify_label.accuracy").

    Every run must report the same test tasks; numbers missing from some run are left out.
    """
    if not run_dirs:
        raise DataError("no runs to aggregate; pass two or more run folders")
    results = {str(p): _read_results(Path(p)) for p in run_dirs}
    tasks = {name: sorted(r.get("test", {})) for name, r in results.items()}
    if len({tuple(t) for t in tasks.values()}) > 1:
        listed = "; ".join(f"{name}: {', '.join(t) or 'none'}" for name, t in tasks.items())
        raise DataError(f"the runs report different test tasks and cannot be pooled ({listed})")
    leaves = [numeric_leaves(r) for r in results.values()]
    common = [path for path in leaves[0] if all(path in other for other in leaves[1:])]
    aggregated = {}
    for path in common:
        values = [leaf[path] for leaf in leaves]
        aggregated[path] = {
            "mean": float(np.mean(values)),
            "std": float(np.std(values, ddof=1)) if len(values) > 1 else None,
            "n": len(values),
            "values": values,
        }
    return aggregated
