"""Classification of a label field from the fused representation."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from polymodal.config import ClassifyConfig
from polymodal.data.schema import Batch
from polymodal.metrics.classification import classification_scores
from polymodal.tasks.base import FusedHead, TaskContext, check_field


class Classify(FusedHead):
    """MLP head -> logits; cross-entropy (optionally label-smoothed) over rows with a label."""

    main_metric = "accuracy"

    def __init__(
        self,
        target: str,
        labels: list[str],
        in_dim: int,
        hidden: int = 256,
        dropout: float = 0.1,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(in_dim, hidden, len(labels), dropout)
        self.target = target
        self.label_smoothing = label_smoothing
        self.labels = list(labels)

    @classmethod
    def from_config(cls, config: ClassifyConfig, context: TaskContext) -> Classify:
        check_field(context.preprocessor, config.target, context.where, ("label",))
        assert context.fused_dim is not None
        return cls(
            config.target,
            context.preprocessor.fields[config.target].labels,  # type: ignore[attr-defined]
            context.fused_dim,
            config.hidden,
            config.dropout,
            config.label_smoothing,
        )

    def loss(self, outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        keep = batch.present[self.target]
        if not keep.any():
            return outputs.sum() * 0.0
        targets = batch.values[self.target][keep]
        return F.cross_entropy(outputs[keep], targets, label_smoothing=self.label_smoothing)

    def collect(self, outputs: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        keep = batch.present[self.target]
        return {"probs": outputs[keep].softmax(-1), "targets": batch.values[self.target][keep]}

    def metrics(self, collected: dict[str, torch.Tensor]) -> dict[str, Any]:
        scores = classification_scores(collected["targets"], collected["probs"])
        scores["labels"] = self.labels
        return scores

    def postprocess(self, outputs: torch.Tensor, index: int) -> dict[str, Any]:
        probs = outputs[index].softmax(-1)
        return {
            "label": self.labels[int(probs.argmax())],
            "probabilities": {label: float(p) for label, p in zip(self.labels, probs, strict=True)},
        }
