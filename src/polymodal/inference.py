"""The one batched forward that validation, evaluation and prediction share, and the
collect -> metrics loop over a split."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from polymodal.data.dataset import loader
from polymodal.data.pipeline import Example
from polymodal.data.quarantine import Quarantine, QuarantinedRow
from polymodal.data.schema import Batch
from polymodal.errors import ConfigError
from polymodal.models.model import MultimodalModel
from polymodal.progress import progress_bar
from polymodal.tasks import Task


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


def forward(
    model: MultimodalModel,
    batch: Batch,
    device: str | torch.device,
    tasks: Collection[str] | None = None,
) -> dict[str, Any]:
    """Each task's outputs (or those of ``tasks``) for ``batch`` moved to ``device`` (without
    gradients, in eval mode: inside ``eval_mode``)."""
    return model(batch.to(device), tasks=tasks)


def evaluate_model(
    model: MultimodalModel,
    examples: Sequence[Example | QuarantinedRow],
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    workers: int = 0,
    shard: tuple[int, int] = (0, 1),
    gather: Callable[[torch.Tensor], torch.Tensor] | None = None,
    quarantine: Quarantine | None = None,
    run: Callable[[Batch], dict[str, Any]] | None = None,
) -> dict[str, dict[str, Any]]:
    """Metrics per task over all ``examples`` (a list, or a split's dataset read by ``workers``
    DataLoader processes), the model in eval mode without gradients.

    A task that no row of ``examples`` concerns (none carries its target) reports
    ``{"rows": 0}``. Under DDP each rank passes ``shard`` (rank, world size) and reads every
    world-size-th row from its rank on; ``gather``
    (``polymodal.train.distributed.gather_variable``) then brings every rank's collected
    outputs together, so the metrics cover the whole split, on every rank alike. Rows found
    bad while reading go to ``quarantine``. ``run`` computes each batch's outputs in place
    of the model's own forward (``polymodal.predictor.Predictor.forward`` on ONNX Runtime).
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
            outputs = run(batch) if run is not None else forward(model, batch, device)
            for name, task in model.tasks.items():
                for key, value in task.collect(outputs[name], batch).items():
                    collected[name].setdefault(key, []).append(value.cpu())
    together = gather or (lambda tensor: tensor)
    gathered = {
        name: {k: together(torch.cat(v)) for k, v in collected[name].items()}
        for name in model.tasks
    }
    return {name: task_metrics(task, gathered[name]) for name, task in model.tasks.items()}


def task_metrics(task: Task, collected: dict[str, torch.Tensor]) -> dict[str, Any]:
    """``task.metrics`` of what the task collected over a split; ``{"rows": 0}`` when no row
    concerned it (none carries its target)."""
    if not any(len(value) for value in collected.values()):
        return {"rows": 0}
    return task.metrics(collected)


def selection_weights(
    model: MultimodalModel, select: Mapping[str, float] | None = None
) -> dict[str, float]:
    """Each task's weight in the validation score: ``train.select`` (a task it does not name
    weighs 0), else 1 each; a ConfigError names a task the model does not have."""
    if select is None:
        return dict.fromkeys(model.tasks, 1.0)
    unknown = sorted(set(select) - set(model.tasks))
    if unknown:
        raise ConfigError(
            f"train.select: {', '.join(unknown)} is not a task of the model; its tasks: "
            f"{', '.join(model.tasks)}"
        )
    if any(weight < 0 for weight in select.values()):
        raise ConfigError("train.select: a weight is negative; give each task a weight >= 0")
    if not any(select.values()):
        raise ConfigError("train.select: every weight is 0; give some task a positive weight")
    return {name: float(select.get(name, 0.0)) for name in model.tasks}


def main_score(
    metrics: dict[str, dict[str, Any]],
    model: MultimodalModel,
    select: Mapping[str, float] | None = None,
) -> float | None:
    """The number that picks the best checkpoint: the weighted mean (``selection_weights``)
    of each task's main metric.

    Main metrics are higher-is-better and 1 at best (accuracy, mean recall, R², VQA accuracy),
    so equal weights compare like with like; ``train.select`` reweighs them. A task without
    rows in the split (none carries its target) is left out; None when no weighed task has any.
    """
    weights = selection_weights(model, select)
    scores = {
        name: float(metrics[name][task.main_metric])
        for name, task in model.tasks.items()
        if weights[name] and metrics[name].get(task.main_metric) is not None
    }
    if not scores:
        return None
    return sum(weights[name] * score for name, score in scores.items()) / sum(
        weights[name] for name in scores
    )
