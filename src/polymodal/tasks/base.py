"""What every task provides: a head, a loss, predictions and the metrics it reports."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import nn

from polymodal.data.schema import Batch
from polymodal.models.encoders.base import Encoded


class Task(nn.Module, ABC):
    """A head on the fused vector (``uses_fusion``) or on the encoders' outputs directly.

    ``collect`` keeps, per batch, what ``metrics`` needs over a whole split; ``main_metric``
    names the metric that picks the best checkpoint (higher is better).
    """

    uses_fusion: bool = True
    main_metric: str = ""

    @abstractmethod
    def forward(
        self,
        fused: torch.Tensor | None,
        encoded: dict[str, Encoded],
        present: dict[str, torch.Tensor],
    ) -> Any: ...

    def encoder_outputs(self) -> dict[str, set[str]]:
        """What the head reads of the encoders' outputs itself: field -> {"tokens", "pooled"}
        (none for a head on the fused vector)."""
        return {}

    @abstractmethod
    def loss(self, outputs: Any, batch: Batch) -> torch.Tensor: ...

    @abstractmethod
    def collect(self, outputs: Any, batch: Batch) -> dict[str, torch.Tensor]: ...

    @abstractmethod
    def metrics(self, collected: dict[str, torch.Tensor]) -> dict[str, Any]: ...

    @abstractmethod
    def postprocess(self, outputs: Any, index: int) -> dict[str, Any]:
        """One row's prediction as JSON-ready values."""
