"""Metrics per slice: ``polymodal eval RUN_DIR --by COLUMN`` scores the rows of each value of a
manifest column (question type, source, device...) on their own, with bootstrap intervals.

The model runs once over the split; each slice's metrics are its task's ``metrics`` of the
rows of that slice alone, exactly what scoring a manifest of only those rows would give.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from polymodal.data.pipeline import Example
from polymodal.data.schema import is_absent
from polymodal.data.sources import LINE_KEY, Row
from polymodal.evaluate.confidence import RESAMPLES
from polymodal.evaluate.report import TaskOutputs, collect_outputs, json_ready, task_intervals
from polymodal.inference import eval_mode, task_metrics
from polymodal.models.model import MultimodalModel

NONE = "(none)"  # the slice of the rows without a value in the column


def slice_key(value: Any) -> str:
    """The slice a cell puts its row in: its text (a list or an object as JSON, a boolean as
    true / false), NONE when the cell is absent or empty."""
    if is_absent(value) or value in ([], {}):
        return NONE
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return str(value)


def _ordered(keys: Sequence[str]) -> list[str]:
    """Values in numeric order when they are all numbers, else in text order; NONE last."""

    def number(key: str) -> float | None:
        try:
            return float(key)
        except ValueError:
            return None

    values = sorted(key for key in keys if key != NONE)
    if all(number(key) is not None for key in values):
        values.sort(key=number)
    return values + [NONE] * (NONE in keys)


def _subset(outputs: TaskOutputs, members: set[int]) -> TaskOutputs:
    """The collected rows (one per kept example, in order) of the examples in ``members``."""
    keep = [i for i, example in enumerate(outputs.rows) if example in members]
    index = torch.tensor(keep, dtype=torch.long)
    return TaskOutputs(
        {key: value[index] for key, value in outputs.collected.items()},
        [outputs.rows[i] for i in keep],
    )


def _score(
    model: MultimodalModel,
    outputs: dict[str, TaskOutputs],
    members: set[int],
    resamples: int,
    seed: int,
) -> dict[str, Any]:
    tasks, intervals = {}, {}
    for name, task in model.tasks.items():
        part = _subset(outputs[name], members)
        tasks[name] = task_metrics(task, part.collected)
        if part.rows:
            intervals[name] = json_ready(task_intervals(task, part, resamples, seed))
    return {"rows": len(members), "tasks": tasks, "intervals": intervals}


def evaluate_slices(
    model: MultimodalModel,
    examples: list[Example],
    rows: Mapping[int, Row],
    columns: Sequence[str],
    resamples: int = RESAMPLES,
    seed: int = 0,
    batch_size: int = 256,
) -> dict[str, dict[str, Any]]:
    """Per column, per value (``slice_key``; numbers in numeric order, NONE last): the
    slice's "rows" (they add up to ``examples``), each task's metrics on them ("tasks") and
    the bootstrap intervals of its headline metrics ("intervals", seeded with ``seed``).

    ``rows`` maps a manifest line to its row, where the columns' values are read.
    """
    with eval_mode(model):
        outputs, _ = collect_outputs(model, examples, batch_size)
    result: dict[str, dict[str, Any]] = {}
    for column in columns:
        groups: dict[str, set[int]] = {}
        for i, example in enumerate(examples):
            key = slice_key(rows[int(example[LINE_KEY])].get(column))
            groups.setdefault(key, set()).add(i)
        result[column] = {
            key: _score(model, outputs, groups[key], resamples, seed)
            for key in _ordered(list(groups))
        }
    return result
