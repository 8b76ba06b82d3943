"""A whole run from a config: data, model, training, test evaluation, files in the run dir."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from polymodal.config import RunConfig, dump_config, load_config, task_targets
from polymodal.data.dataset import workers_for
from polymodal.data.pipeline import PreparedData, prepare_data
from polymodal.errors import ConfigError, DataError
from polymodal.inference import evaluate_model
from polymodal.io import atomic_write_text, write_json
from polymodal.models.encoders import pretrained
from polymodal.models.model import MultimodalModel, build_model
from polymodal.models.precompute import precompute_features
from polymodal.models.transfer import load_encoders, transferred_preprocessors
from polymodal.train.checkpoint import CheckpointKeeper
from polymodal.train.distributed import DistContext, barrier, init_distributed
from polymodal.train.trainer import Trainer, TrainResult, seed_everything

Log = Callable[[str], None]


@dataclass
class RunResult:
    run_dir: Path
    model_dir: Path
    test: dict[str, dict[str, Any]]
    train: TrainResult
    data: PreparedData
    is_main: bool = True  # False in the other processes of a torchrun launch


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
    resume: bool = False,
) -> RunResult:
    """Train per ``config``: config.yaml, quarantine.jsonl, metrics.jsonl, TensorBoard events,
    checkpoints/, best/, results.json in ``config.run_dir``.

    ``data`` reuses data already prepared for the same ``config.data`` (several runs, one read).
    A run directory that exists is refused unless ``overwrite``, which clears it; nothing is
    written before the data has been read and checked against the config. ``resume`` goes on
    from the run directory's newest checkpoint instead. Under ``torchrun`` every process runs
    this; only the first writes files.
    """
    run_dir = config.run_dir
    dist = init_distributed(config.train.device)
    checkpoint = None
    if resume:
        checkpoint = CheckpointKeeper(run_dir / "checkpoints").latest()
        if checkpoint is None:
            raise DataError(f"{run_dir} holds no checkpoint to resume from; train it anew")
    else:
        refuse_existing(run_dir, overwrite, _is_run_dir, "run directory")  # before reading data
        barrier()  # every process has looked before the first one makes the run directory
    data = data or _prepare(config, dist)
    if dist.is_main and not resume:
        fresh_directory(run_dir, overwrite, _is_run_dir, "run directory")
        atomic_write_text(run_dir / "config.yaml", dump_config(config))
    barrier()
    for line in describe_data(data) if dist.is_main else ():
        log(line)
    if len(data.quarantine) and dist.is_main:
        log(f"quarantined rows and reasons: {data.quarantine.write(run_dir / 'quarantine.jsonl')}")
    if not len(data.splits["train"]):
        counts = ", ".join(f"{n} {reason}" for reason, n in data.quarantine.counts().items())
        raise DataError(
            f"{config.data.manifest}: no train row can be used, nothing to train on "
            f"(quarantined: {counts or 'none'}; see {run_dir / 'quarantine.jsonl'})"
        )
    if not len(data.splits["val"]) and dist.is_main:
        log("no validation rows: every epoch is kept as the best so far, and no score is shown")
    seed_everything(config.seed)
    pretrained.check_preprocessing(config.model, data.preprocessor)
    model = build_model(config.model, data.preprocessor)
    for task in model.tasks.values() if dist.is_main else ():
        for line in task.describe():
            log(line)
    for name in load_encoders(model) if checkpoint is None else ():
        frozen = " (frozen)" if name in model.frozen else ""
        log(f"encoder '{name}' starts from {config.model.encoders[name].init_from}{frozen}")
    cache = config.train.out_dir / "cache"
    batch = config.train.batch_size
    workers = workers_for(config.data)
    for name in precompute_features(
        model, data.splits, config.data, cache, batch, dist.device, workers
    ):
        log(f"encoder '{name}': the frozen encoder's features are computed once (precompute)")
    trainer = Trainer(
        model,
        data.splits["train"],
        data.splits["val"],
        config.train,
        config.data,
        run_dir,
        dist,
        data.quarantine,
        config.seed,
        log,
    )
    result = trainer.fit(resume=checkpoint)
    test: dict[str, Any] = {}
    if dist.is_main:
        best = MultimodalModel.from_pretrained(result.best_dir)
        best.precomputed = model.precomputed  # the same frozen backbones
        test = evaluate_model(
            best, data.splits["test"], workers=trainer.workers, quarantine=data.quarantine
        )
        if len(data.quarantine):
            data.quarantine.write(run_dir / "quarantine.jsonl")
        write_json(
            run_dir / "results.json",
            {
                "name": config.name,
                "best_epoch": result.best_epoch,
                "val_score": result.best_score,
                "stopped": result.stopped,
                "test": test,
                "train_seconds": round(result.seconds, 3),
                "quarantined": data.quarantine.counts(),
            },
        )
    barrier()
    return RunResult(run_dir, result.best_dir, test, result, data, dist.is_main)


def _prepare(config: RunConfig, dist: DistContext) -> PreparedData:
    """The run's data; under DDP the first process builds a disk store before the others
    open it (they would otherwise all build it at once)."""

    def prepare() -> PreparedData:
        return prepare_data(
            config.data,
            config.seed,
            fitted=transferred_preprocessors(config.model),
            targets=task_targets(config.model),
            cache_dir=config.train.out_dir / "cache",
            field_options=pretrained.field_options(config.model),
        )

    if not dist.enabled or config.data.cache != "disk":
        return prepare()
    data = prepare() if dist.is_main else None
    barrier()
    return data or prepare()


def resume_training(run_dir: str | Path, log: Log = print) -> RunResult:
    """Go on with the run in ``run_dir`` from its newest checkpoint, with its own config."""
    config_path = Path(run_dir) / "config.yaml"
    if not config_path.is_file():
        raise DataError(
            f"{config_path} is missing; --resume takes a folder 'polymodal train' wrote"
        )
    return run_training(load_config(config_path), log, resume=True)
