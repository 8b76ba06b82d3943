"""A whole run from a config: data, model, training, test evaluation, files in the run dir."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from polymodal.config import RunConfig, dump_config, task_targets
from polymodal.data.pipeline import PreparedData, prepare_data
from polymodal.errors import ConfigError, DataError
from polymodal.inference import evaluate_model
from polymodal.io import atomic_write_text, write_json
from polymodal.models.model import MultimodalModel, build_model
from polymodal.models.transfer import load_encoders, transferred_preprocessors
from polymodal.train.trainer import Trainer, TrainResult, seed_everything

Log = Callable[[str], None]


@dataclass
class RunResult:
    run_dir: Path
    model_dir: Path
    test: dict[str, dict[str, Any]]
    train: TrainResult
    data: PreparedData


def describe_data(data: PreparedData) -> list[str]:
    """Lines on the schema (and whether it was inferred), split sizes and quarantined rows."""
    how = "inferred" if data.schema_inferred else "from the config"
    lines = [f"schema ({how}):"]
    for name, spec in data.schema.fields.items():
        columns = spec.numeric + spec.categorical
        extra = f" columns={columns}" if columns and columns != [name] else ""
        lines.append(f"  {name}: {spec.kind} ({spec.role}){extra}")
    sizes = ", ".join(f"{k} {len(v)}" for k, v in data.splits.items())
    lines.append(f"rows: {sizes}")
    if len(data.quarantine):
        counts = ", ".join(f"{reason} {n}" for reason, n in data.quarantine.counts().items())
        lines.append(f"quarantined {len(data.quarantine)} rows: {counts}")
    return lines


def refuse_existing(
    path: Path, overwrite: bool, written_by_us: Callable[[Path], bool], what: str
) -> None:
    """Refuse a folder that holds files (they would mix with a new run's) unless ``overwrite``,
    and even then one that ``written_by_us`` does not recognise: a mistyped path never
    deletes a user's files."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{what} {path} is a file; choose a folder")
    if not (path.is_dir() and any(path.iterdir())):
        return
    if not overwrite:
        raise ConfigError(
            f"{what} {path} exists and holds an earlier run's files; pass --overwrite to "
            "replace it, or choose another folder"
        )
    if not written_by_us(path):
        raise ConfigError(
            f"{what} {path} holds files polymodal did not write; nothing was deleted: "
            "choose another folder"
        )


def fresh_directory(
    path: Path, overwrite: bool, written_by_us: Callable[[Path], bool], what: str
) -> None:
    """Make ``path`` an empty folder, clearing an earlier run's (see ``refuse_existing``)."""
    refuse_existing(path, overwrite, written_by_us, what)
    if path.is_dir():
        shutil.rmtree(path)
    path.mkdir(parents=True)


def _is_run_dir(path: Path) -> bool:
    return (path / "config.yaml").is_file()


def run_training(
    config: RunConfig,
    log: Log = print,
    data: PreparedData | None = None,
    overwrite: bool = False,
) -> RunResult:
    """Train per ``config``: config.yaml, quarantine.jsonl, metrics.jsonl, best/, results.json.

    ``data`` reuses data already prepared for the same ``config.data`` (several runs, one read).
    A run directory that exists is refused unless ``overwrite``, which clears it; nothing is
    written before the data has been read and checked against the config.
    """
    run_dir = config.run_dir
    refuse_existing(run_dir, overwrite, _is_run_dir, "run directory")  # before reading data
    data = data or prepare_data(
        config.data,
        config.seed,
        fitted=transferred_preprocessors(config.model),
        targets=task_targets(config.model),
    )
    fresh_directory(run_dir, overwrite, _is_run_dir, "run directory")
    atomic_write_text(run_dir / "config.yaml", dump_config(config))
    for line in describe_data(data):
        log(line)
    if len(data.quarantine):
        log(f"quarantined rows and reasons: {data.quarantine.write(run_dir / 'quarantine.jsonl')}")
    if not data.splits["train"]:
        counts = ", ".join(f"{n} {reason}" for reason, n in data.quarantine.counts().items())
        raise DataError(
            f"{config.data.manifest}: no train row can be used, nothing to train on "
            f"(quarantined: {counts or 'none'}; see {run_dir / 'quarantine.jsonl'})"
        )
    if not data.splits.get("val"):
        log("no validation rows: every epoch is kept as the best so far, and no score is shown")
    seed_everything(config.seed)
    model = build_model(config.model, data.preprocessor)
    for name in load_encoders(model):
        frozen = " (frozen)" if name in model.frozen else ""
        log(f"encoder '{name}' starts from {config.model.encoders[name].init_from}{frozen}")
    trainer = Trainer(
        model,
        data.splits["train"],
        data.splits.get("val", []),
        config.train,
        run_dir,
        config.seed,
        log,
    )
    result = trainer.fit()
    best = MultimodalModel.from_pretrained(result.best_dir)
    test = evaluate_model(best, data.splits.get("test", []))
    write_json(
        run_dir / "results.json",
        {
            "name": config.name,
            "best_epoch": result.best_epoch,
            "val_score": result.best_score,
            "test": test,
            "train_seconds": round(result.seconds, 3),
            "quarantined": data.quarantine.counts(),
        },
    )
    return RunResult(run_dir, result.best_dir, test, result, data)
