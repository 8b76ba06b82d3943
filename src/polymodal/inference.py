"""The one batched forward that validation, evaluation and prediction share, and the
collect -> metrics loop over a split."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from polymodal.data.dataset import loader
from polymodal.data.pipeline import Example
from polymodal.data.quarantine import Quarantine, QuarantinedRow
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
    model: MultimodalModel,
    examples: Sequence[Example | QuarantinedRow],
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    workers: int = 0,
    shard: tuple[int, int] = (0, 1),
    gather: Callable[[torch.Tensor], torch.Tensor] | None = None,
    quarantine: Quarantine | None = None,
) -> dict[str, dict[str, Any]]:
    """Metrics per task over all ``examples`` (a list, or a split's dataset read by ``workers``
    DataLoader processes), the model in eval mode without gradients.

    Under DDP each rank passes ``shard`` (rank, world size) and reads every world-size-th row
    from its rank on; ``gather`` (``polymodal.train.distributed.gather_variable``) then brings
    every rank's collected outputs together, so the metrics cover the whole split, on every
    rank alike. Rows found bad while reading go to ``quarantine``.
    """
    if not len(examples):
        return {}
    rank, world = shard
    batches = loader(
        examples, model.preprocessor.collate, batch_size, workers, range(rank, len(examples), world)
    )
    collected: dict[str, dict[str, list[torch.Tensor]]] = {name: {} for name in model.tasks}
    with eval_mode(model):
        for batch in progress_bar(batches, "evaluating"):
            for row in batch.quarantined if quarantine is not None else ():
                quarantine.add(row)
            if not len(batch):
                continue
            batch = batch.to(device)
            outputs = forward(model, batch, device)
            for name, task in model.tasks.items():
                for key, value in task.collect(outputs[name], batch).items():
                    collected[name].setdefault(key, []).append(value.cpu())
    together = gather or (lambda tensor: tensor)
    return {
        name: task.metrics({k: together(torch.cat(v)) for k, v in collected[name].items()})
        for name, task in model.tasks.items()
    }


def main_score(metrics: dict[str, dict[str, Any]], model: MultimodalModel) -> float:
    """Mean of each task's main metric: the number that picks the best checkpoint."""
    scores = [float(metrics[name][task.main_metric]) for name, task in model.tasks.items()]
    return sum(scores) / len(scores)
