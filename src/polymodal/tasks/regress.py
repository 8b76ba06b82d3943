"""Regression of one or several number fields from the fused representation."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from polymodal.config import RegressConfig, RegressionLoss
from polymodal.data.modalities.number import NumberPreprocessor
from polymodal.data.schema import Batch
from polymodal.metrics.regression import target_scores
from polymodal.tasks.base import FusedHead, TaskContext, check_field


class Regress(FusedHead):
    """MLP head -> one value per target in standard units (each target's train mean and
    standard deviation); the loss (squared, Huber or absolute error) is the mean over the
    (row, target) cells that carry a value, so a row lacking one target still trains the others.

    Predictions and metrics are in the targets' own units. ``r2`` (the mean over targets of
    the coefficient of determination: 1 at best, 0 for predicting the mean) picks the best
    checkpoint; MAE, RMSE and Pearson are reported beside it, and the CMU-MOSI/MOSEI sentiment
    metrics with ``sentiment``.
    """

    main_metric = "r2"

    def __init__(
        self,
        targets: list[str],
        mean: list[float],
        std: list[float],
        in_dim: int,
        hidden: int = 256,
        dropout: float = 0.1,
        loss: RegressionLoss = "mse",
        huber_delta: float = 1.0,
        sentiment: bool = False,
    ) -> None:
        super().__init__(in_dim, hidden, len(targets), dropout)
        self.targets = list(targets)
        self.loss_name, self.huber_delta, self.sentiment = loss, huber_delta, sentiment
        # the fitted statistics come with the preprocessor, so they are not saved as weights
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float64), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float64), persistent=False)

    @classmethod
    def from_config(cls, config: RegressConfig, context: TaskContext) -> Regress:
        fields = []
        for target in config.targets:
            check_field(context.preprocessor, target, context.where, ("number",))
            field = context.preprocessor.fields[target]
            assert isinstance(field, NumberPreprocessor)
            fields.append(field)
        assert context.fused_dim is not None
        return cls(
            config.targets,
            [f.mean[f.column] for f in fields],
            [f.std[f.column] for f in fields],
            context.fused_dim,
            config.hidden,
            config.dropout,
            config.loss,
            config.huber_delta,
            config.sentiment,
        )

    def _targets(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, K) standardised targets (0 where absent) and the (B, K) mask of present ones."""
        values = torch.cat([batch.values[t].reshape(-1, 1) for t in self.targets], dim=1)
        present = torch.stack([batch.present[t] for t in self.targets], dim=1)
        return values, present

    def kept(self, batch: Batch) -> torch.Tensor:
        """The rows of ``batch`` that carry at least one target (those ``collect`` keeps)."""
        return self._targets(batch)[1].any(dim=1)

    def loss(self, outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        targets, present = self._targets(batch)
        if not present.any():
            return outputs.sum() * 0.0
        predicted, wanted = outputs.float()[present], targets[present]
        if self.loss_name == "huber":
            return F.huber_loss(predicted, wanted, delta=self.huber_delta)
        if self.loss_name == "l1":
            return F.l1_loss(predicted, wanted)
        return F.mse_loss(predicted, wanted)

    def original_units(self, standardised: torch.Tensor) -> torch.Tensor:
        """(B, K) values in standard units back in each target's own units (float64)."""
        return standardised.double() * self.std + self.mean

    def collect(self, outputs: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        targets, present = self._targets(batch)
        keep = present.any(dim=1)
        return {
            "predicted": self.original_units(outputs[keep]),
            "targets": self.original_units(targets[keep]),
            "present": present[keep],
        }

    def metrics(self, collected: dict[str, torch.Tensor]) -> dict[str, Any]:
        return target_scores(
            collected["targets"],
            collected["predicted"],
            collected["present"],
            self.targets,
            self.sentiment,
        )

    def postprocess(self, outputs: torch.Tensor, index: int) -> dict[str, Any]:
        values = self.original_units(outputs[index : index + 1])[0]
        return {"values": {t: float(v) for t, v in zip(self.targets, values, strict=True)}}
