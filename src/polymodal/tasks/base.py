"""What every task provides: a head, a loss, predictions and the metrics it reports."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from polymodal.data.pipeline import Preprocessor
from polymodal.data.schema import Batch
from polymodal.errors import ConfigError, did_you_mean
from polymodal.models.encoders.base import Encoded


def check_field(preprocessor: Preprocessor, name: str, where: str, kinds: tuple[str, ...]) -> None:
    """A ConfigError naming ``where`` unless field ``name`` exists and is of one of ``kinds``."""
    fields = preprocessor.schema.fields
    if name not in fields:
        raise ConfigError(
            f"{where}: field '{name}' is not in the data{did_you_mean(name, list(fields))} "
            f"(fields: {', '.join(fields)}; a target is a field of kind label, from data.fields "
            "or data.target)"
        )
    if fields[name].kind not in kinds:
        raise ConfigError(
            f"{where}: field '{name}' is {fields[name].kind}; expected {' or '.join(kinds)}"
        )


@dataclass(frozen=True)
class TaskContext:
    """What a task is built from besides its config: the fitted preprocessing, each input
    encoder's output size, the fused vector's size (None without a fusion), and the config key
    that errors name (``model.tasks.N``)."""

    preprocessor: Preprocessor
    encoder_dims: dict[str, int]
    fused_dim: int | None
    where: str

    def check_input(self, name: str) -> None:
        """A ConfigError unless ``name`` is a model input."""
        if name not in self.encoder_dims:
            raise ConfigError(
                f"{self.where}: '{name}' must be a model input ({', '.join(self.encoder_dims)})"
            )


class Task(nn.Module, ABC):
    """A head on the fused vector (``uses_fusion``) or on the encoders' outputs directly,
    built by ``from_config`` (``polymodal.models.model.TASKS`` maps each config type to it).

    ``collect`` keeps, per batch, what ``metrics`` needs over a whole split; ``main_metric``
    names the metric that picks the best checkpoint (higher is better); ``slice_columns`` the
    manifest columns ``polymodal eval`` reports slices by whenever the manifest has them.
    """

    uses_fusion: bool = True
    main_metric: str = ""
    slice_columns: tuple[str, ...] = ()

    @classmethod
    @abstractmethod
    def from_config(cls, config: Any, context: TaskContext) -> Task:
        """The task its config describes, checked against the data and the encoders."""

    @abstractmethod
    def forward(
        self,
        fused: torch.Tensor | None,
        encoded: dict[str, Encoded],
        present: dict[str, torch.Tensor],
    ) -> Any: ...

    def network(
        self,
        fused: torch.Tensor | None,
        encoded: dict[str, Encoded],
        present: dict[str, torch.Tensor],
    ) -> Any:
        """The outputs of one pass through the task's layers, before any search over them
        (what an ONNX export computes): ``forward``'s, unless the task decodes."""
        return self(fused, encoded, present)

    def describe(self) -> list[str]:
        """Lines a training run logs about the built task (what it fitted from the data)."""
        return []

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


class FusedHead(Task):
    """A task whose outputs come from an MLP head on the fused vector (hidden width,
    ReLU, dropout): classification, regression, VQA."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, dropout: float) -> None:
        super().__init__()
        self.head = nn.Sequential(
            nn.Linear(in_dim, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, out_dim),
        )

    def forward(
        self,
        fused: torch.Tensor | None,
        encoded: dict[str, Encoded],
        present: dict[str, torch.Tensor],
    ) -> torch.Tensor:
        assert fused is not None
        return self.head(fused)
