"""The one batched forward that validation, evaluation and prediction share, and the
collect -> metrics loop over a split."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from polymodal.data.pipeline import Example
from polymodal.data.schema import Batch
from polymodal.models.model import MultimodalModel
from polymodal.progress import progress_bar


def batches(examples: list[Example], batch_size: int) -> list[list[Example]]:
    return [examples[i : i + batch_size] for i in range(0, len(examples), batch_size)]


@contextmanager
def eval_mode(model: MultimodalModel) -> Iterator[MultimodalModel]:
    """The model in eval mode without gradients; its training mode is restored after."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)


def forward(model: MultimodalModel, batch: Batch, device: str | torch.device) -> dict[str, Any]:
    """Each task's outputs for ``batch`` moved to ``device`` (call inside ``eval_mode``)."""
    return model(batch.to(device))


def evaluate_model(
    model: MultimodalModel, examples: list[Example], batch_size: int = 256, device: str = "cpu"
) -> dict[str, dict[str, Any]]:
    """Metrics per task over all ``examples`` (model in eval mode, no gradients)."""
    if not examples:
        return {}
    collected: dict[str, dict[str, list[torch.Tensor]]] = {name: {} for name in model.tasks}
    with eval_mode(model):
        for chunk in progress_bar(batches(examples, batch_size), "evaluating"):
            batch = model.preprocessor.collate(chunk).to(device)
            outputs = forward(model, batch, device)
            for name, task in model.tasks.items():
                for key, value in task.collect(outputs[name], batch).items():
                    collected[name].setdefault(key, []).append(value.cpu())
    return {
        name: task.metrics({k: torch.cat(v) for k, v in collected[name].items()})
        for name, task in model.tasks.items()
    }


def main_score(metrics: dict[str, dict[str, Any]], model: MultimodalModel) -> float:
    """Mean of each task's main metric: the number that picks the best checkpoint."""
    scores = [float(metrics[name][task.main_metric]) for name, task in model.tasks.items()]
    return sum(scores) / len(scores)
