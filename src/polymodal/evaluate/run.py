"""``polymodal eval RUN_DIR``: a run's best model scored on a split, with optional extras.

Scores go to RUN_DIR/eval_SPLIT.json (with ``by``, also the scores per value of those manifest
columns: "slices"); ``robustness`` adds RUN_DIR/robustness.json and a plot per task
(RUN_DIR/robustness_TASK.png), ``efficiency`` RUN_DIR/efficiency.json, and ``report``
RUN_DIR/report/ (which shows the other two when they exist, computed now or earlier, and the
slices).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from polymodal.config import RunConfig, load_config
from polymodal.data.dataset import read_all, workers_for
from polymodal.data.pipeline import SPLITS, Example, PreparedData, prepare_data, require_column
from polymodal.data.sources import LINE_KEY, Row
from polymodal.errors import DataError
from polymodal.inference import evaluate_model
from polymodal.io import write_json
from polymodal.models.model import MultimodalModel

EFFICIENCY_FILE = "efficiency.json"


def evaluate_run(
    run_dir: str | Path,
    split: str = "test",
    *,
    robustness: bool = False,
    efficiency: bool = False,
    report: bool = False,
    reference: str | Path | None = None,
    seed: int = 0,
    by: Sequence[str] = (),
) -> dict[str, Any]:
    """Load RUN_DIR/config.yaml and RUN_DIR/best, score ``split``, write RUN_DIR/eval_SPLIT.json.

    ``by`` names manifest columns whose every value is scored on its own rows ("slices"; see
    ``polymodal.evaluate.slices``), with bootstrap intervals seeded with ``seed``; the columns
    a task slices by by default (VQA: question and answer type) join them where the manifest
    has them.
    """
    run_dir = Path(run_dir)
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise DataError(f"{config_path} is missing; pass a folder written by 'polymodal train'")
    config = load_config(config_path)
    model = MultimodalModel.from_pretrained(run_dir / "best")
    data = read_split(config, model, split)
    for column in by:
        require_column(data.index, column, f"--by {column}")
    by = list(dict.fromkeys([*by, *default_slices(model, data.index.columns)]))
    scores: dict[str, Any] = {
        "split": split,
        "rows": len(data.splits[split]),
        "tasks": evaluate_model(model, data.splits[split], workers=workers_for(config.data)),
    }
    if by:
        from polymodal.evaluate.slices import evaluate_slices

        examples, rows = read_rows(data, split, workers_for(config.data))
        scores["slices"] = evaluate_slices(model, examples, rows, by, seed=seed)
    write_json(run_dir / f"eval_{split}.json", scores)
    if robustness:
        from polymodal.evaluate.report import robustness_figure, robustness_tasks
        from polymodal.evaluate.robustness import evaluate_robustness

        scores["robustness"] = evaluate_robustness(
            run_dir, split=split, seed=seed, reference=reference
        )
        for task, result in robustness_tasks(scores["robustness"]).items():
            robustness_figure(result).savefig(run_dir / f"robustness_{task}.png", dpi=110)
    if efficiency:
        from polymodal.evaluate.efficiency import measure_efficiency

        scores["efficiency"] = measure_efficiency(model, data.splits[split])
        write_json(run_dir / EFFICIENCY_FILE, scores["efficiency"])
    if report:
        from polymodal.evaluate.report import write_report
        from polymodal.evaluate.robustness import ROBUSTNESS_FILE

        scores["report"] = str(
            write_report(
                run_dir,
                robustness=_saved(run_dir / ROBUSTNESS_FILE),
                efficiency=_saved(run_dir / EFFICIENCY_FILE),
                split=split,
                seed=seed,
                slices=scores.get("slices"),
            )
        )
    return scores


def default_slices(model: MultimodalModel, columns: Sequence[str]) -> list[str]:
    """The columns the model's tasks slice by by default that the manifest has."""
    wanted = (column for task in model.tasks.values() for column in task.slice_columns)
    return [column for column in dict.fromkeys(wanted) if column in columns]


def _saved(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def read_split(config: RunConfig, model: MultimodalModel, split: str) -> PreparedData:
    """The run's manifest with only ``split`` read, through the model's preprocessing."""
    if split not in SPLITS:
        raise DataError(f"split '{split}' has no rows; splits: {', '.join(SPLITS)}")
    data = prepare_data(
        config.data,
        config.seed,
        preprocessor=model.preprocessor,
        splits=(split,),
        cache_dir=config.train.out_dir / "cache",
    )
    if not len(data.splits[split]):
        raise DataError(f"split '{split}' has no rows; splits: {', '.join(SPLITS)}")
    return data


def read_rows(
    data: PreparedData, split: str, workers: int = 0
) -> tuple[list[Example], dict[int, Row]]:
    """Every good example of ``split`` (bad rows go to the data's quarantine), and the
    manifest row of each by its line."""
    dataset = data.splits[split]
    examples = read_all(dataset, data.quarantine, workers)
    rows = {int(row[LINE_KEY]): row for row in data.index.rows(dataset.positions[dataset.keep])}
    return examples, rows
