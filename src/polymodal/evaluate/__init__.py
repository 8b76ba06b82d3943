"""Evaluation: metrics that match the official scripts, robustness, efficiency, reports.

Names are imported on first use (PEP 562), so ``import polymodal.evaluate`` stays light and
the metric modules, which the tasks import, never wait on the model-loading ones.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "accuracy": "classification",
    "classification_scores": "classification",
    "confusion_matrix": "classification",
    "f1_macro": "classification",
    "regression_scores": "classification",
    "sentiment_scores": "classification",
    "precision_recall_f1": "classification",
    "auroc": "classification",
    "average_precision": "classification",
    "expected_calibration_error": "classification",
    "retrieval_scores": "retrieval",
    "caption_scores": "captioning",
    "load_coco_captions": "captioning",
    "vqa_scores": "vqa",
    "vqa_scores_from_files": "vqa",
    "answer_accuracy": "vqa",
    "aggregate_runs": "confidence",
    "bootstrap": "confidence",
    "classification_intervals": "confidence",
    "retrieval_intervals": "confidence",
    "CORRUPTIONS": "corruptions",
    "MISSING_RATES": "corruptions",
    "SEVERITIES": "corruptions",
    "evaluate_robustness": "robustness",
    "relative_robustness": "robustness",
    "effective_robustness": "robustness",
    "measure_efficiency": "efficiency",
    "parameter_counts": "efficiency",
    "evaluate_model": "evaluator",
    "evaluate_run": "run",
    "write_report": "report",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'polymodal.evaluate' has no attribute {name!r}")
    module = importlib.import_module(f"polymodal.evaluate.{_EXPORTS[name]}")
    return getattr(module, name)


def __dir__() -> list[str]:
    return __all__
