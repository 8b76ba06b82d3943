"""Evaluation: a run scored, robustness, efficiency, reports, confidence intervals.

The pure metric functions live in ``polymodal.metrics`` and the shared forward loop in
``polymodal.inference``; their names are exported here too (``from polymodal.evaluate import
caption_scores`` keeps working). Names are imported on first use (PEP 562), so
``import polymodal.evaluate`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "accuracy": "polymodal.metrics.classification",
    "classification_scores": "polymodal.metrics.classification",
    "confusion_matrix": "polymodal.metrics.classification",
    "f1_macro": "polymodal.metrics.classification",
    "regression_scores": "polymodal.metrics.regression",
    "sentiment_scores": "polymodal.metrics.regression",
    "precision_recall_f1": "polymodal.metrics.classification",
    "auroc": "polymodal.metrics.classification",
    "average_precision": "polymodal.metrics.classification",
    "expected_calibration_error": "polymodal.metrics.classification",
    "retrieval_scores": "polymodal.metrics.retrieval",
    "caption_scores": "polymodal.metrics.captioning",
    "load_coco_captions": "polymodal.metrics.captioning",
    "vqa_scores": "polymodal.metrics.vqa",
    "vqa_scores_from_files": "polymodal.metrics.vqa",
    "answer_accuracy": "polymodal.metrics.vqa",
    "aggregate_runs": "polymodal.evaluate.confidence",
    "bootstrap": "polymodal.evaluate.confidence",
    "classification_intervals": "polymodal.evaluate.confidence",
    "retrieval_intervals": "polymodal.evaluate.confidence",
    "CORRUPTIONS": "polymodal.evaluate.corruptions",
    "MISSING_RATES": "polymodal.evaluate.corruptions",
    "SEVERITIES": "polymodal.evaluate.corruptions",
    "evaluate_robustness": "polymodal.evaluate.robustness",
    "relative_robustness": "polymodal.evaluate.robustness",
    "effective_robustness": "polymodal.evaluate.robustness",
    "measure_efficiency": "polymodal.evaluate.efficiency",
    "parameter_counts": "polymodal.evaluate.efficiency",
    "evaluate_model": "polymodal.inference",
    "evaluate_run": "polymodal.evaluate.run",
    "write_report": "polymodal.evaluate.report",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'polymodal.evaluate' has no attribute {name!r}")
    module = importlib.import_module(_EXPORTS[name])
    return getattr(module, name)


def __dir__() -> list[str]:
    return __all__
