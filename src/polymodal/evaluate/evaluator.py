"""Run a model over examples and compute every task's metrics."""

from __future__ import annotations

from typing import Any

import torch

from polymodal.data.pipeline import Example
from polymodal.models.model import MultimodalModel
from polymodal.progress import progress_bar


def batches(examples: list[Example], batch_size: int) -> list[list[Example]]:
    return [examples[i : i + batch_size] for i in range(0, len(examples), batch_size)]


@torch.no_grad()
def evaluate_model(
    model: MultimodalModel, examples: list[Example], batch_size: int = 256, device: str = "cpu"
) -> dict[str, dict[str, Any]]:
    """Metrics per task over all ``examples`` (model in eval mode, no gradients)."""
    if not examples:
        return {}
    was_training = model.training
    model.eval()
    collected: dict[str, dict[str, list[torch.Tensor]]] = {name: {} for name in model.tasks}
    chunks = batches(examples, batch_size)
    for chunk in progress_bar(chunks, "evaluating"):
        batch = model.preprocessor.collate(chunk).to(device)
        outputs = model(batch)
        for name, task in model.tasks.items():
            for key, value in task.collect(outputs[name], batch).items():
                collected[name].setdefault(key, []).append(value.cpu())
    model.train(was_training)
    return {
        name: task.metrics({k: torch.cat(v) for k, v in collected[name].items()})
        for name, task in model.tasks.items()
    }


def main_score(metrics: dict[str, dict[str, Any]], model: MultimodalModel) -> float:
    """Mean of each task's main metric: the number that picks the best checkpoint."""
    scores = [float(metrics[name][task.main_metric]) for name, task in model.tasks.items()]
    return sum(scores) / len(scores)
