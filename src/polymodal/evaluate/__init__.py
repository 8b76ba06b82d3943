"""Evaluation metrics: classification scores and cross-modal retrieval ranks."""

from polymodal.evaluate.classification import (
    accuracy,
    classification_scores,
    confusion_matrix,
    macro_f1,
)
from polymodal.evaluate.retrieval import retrieval_scores

__all__ = ["accuracy", "classification_scores", "confusion_matrix", "macro_f1", "retrieval_scores"]
