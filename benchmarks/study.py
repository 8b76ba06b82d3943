"""What the worked examples share: train variants of one packaged config on one prepared data
set, score them on the test split (whole, or with a modality missing from every row), and write
the numbers as JSON and a Markdown table.

The examples (``example_driving.py``, ``example_shapeworld.py``, ``example_voice_commands.py``)
generate their data with the generator of ``polymodal data generate NAME``, train what their
README section reports, and write ``docs/examples/NAME.json`` and ``docs/examples/NAME.md``;
``fusion_table.py`` trains every fusion method on three tasks the same way.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import torch
import yaml

from polymodal.config import RunConfig, dump_config, task_targets
from polymodal.data.dataset import read_all
from polymodal.data.pipeline import PreparedData, prepare_data
from polymodal.demo import packaged_config
from polymodal.inference import evaluate_model
from polymodal.models.encoders.pretrained import field_options
from polymodal.models.model import MultimodalModel
from polymodal.progress import set_quiet
from polymodal.tasks import TASKS
from polymodal.train.run import run_training

DOCS = Path(__file__).resolve().parent.parent / "docs" / "examples"
STUDY_FILE = "study.json"  # what a finished run reported, beside its results.json


def add_study_options(parser: argparse.ArgumentParser) -> None:
    """``--threads`` and ``--reuse``, which ``Study.configure`` applies."""
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads of every run (train.threads); 1 on a machine busy with other work,"
        " where two threads spin-wait on each other",
    )
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="read back a run of --work that finished with the same config instead of training"
        " it again",
    )


class Trained(NamedTuple):
    """A finished run: its folder, its saved model and its test scores."""

    run_dir: Path
    model_dir: Path
    test: dict[str, Any]


def _same_run(run_dir: Path, config: RunConfig) -> bool:
    """``run_dir`` holds a finished run of ``config`` (``train.threads`` aside: it changes
    only the speed)."""

    def settings(text: str) -> dict[str, Any]:
        loaded = yaml.safe_load(text)
        loaded["train"].pop("threads", None)
        return loaded

    saved = run_dir / "config.yaml"
    return (run_dir / STUDY_FILE).is_file() and settings(saved.read_text()) == settings(
        dump_config(config)
    )


def subsets(fields: Sequence[str]) -> list[list[str]]:
    """Every non-empty subset of ``fields``, smallest first."""
    return [
        list(combo)
        for k in range(1, len(fields) + 1)
        for combo in itertools.combinations(fields, k)
    ]


class Study:
    """Variants of one packaged config, trained on one prepared data set under ``work``.

    ``threads`` and ``reuse`` (set from the command line by ``configure``) hold for every study
    of a script."""

    threads: ClassVar[int | None] = None
    reuse: ClassVar[bool] = False

    @classmethod
    def configure(cls, args: argparse.Namespace) -> None:
        cls.threads, cls.reuse = args.threads, args.reuse

    def __init__(self, config: str, manifest: Path, work: Path, seed: int = 0) -> None:
        set_quiet(True)
        self.base = packaged_config(config, manifest, work / "runs", seed=seed)
        self.base.train.threads = self.threads
        self.prepared: dict[str, PreparedData] = {}
        self.data: PreparedData | None = None  # what the last run read
        self.results: dict[str, Any] = {}
        self.started = time.perf_counter()

    def config(
        self,
        name: str,
        inputs: Sequence[str] | None = None,
        fusion: str | None = None,
        **train: Any,
    ) -> RunConfig:
        """The base config renamed, reading only ``inputs``, with another fusion or train keys."""
        config = self.base.model_copy(deep=True)
        config.name = name
        if inputs is not None:
            config.model.inputs = list(inputs)
            config.model.encoders = {k: v for k, v in config.model.encoders.items() if k in inputs}
        if fusion is not None:
            config.model.fusion.type = fusion  # type: ignore[assignment]
        for key, value in train.items():
            setattr(config.train, key, value)
        return config

    def prepare(self, config: RunConfig) -> PreparedData:
        """The data ``config`` reads, prepared once for every config that reads it alike (the
        same data section, and the same preprocessing asked for by pretrained encoders)."""
        backbones = {
            name: encoder.model_dump(mode="json")
            for name, encoder in config.model.encoders.items()
            if encoder.type == "pretrained"
        }
        key = json.dumps(
            [config.data.model_dump(mode="json"), backbones, config.model.architecture],
            sort_keys=True,
        )
        if key not in self.prepared:
            self.prepared[key] = prepare_data(
                config.data,
                config.seed,
                targets=task_targets(config.model),
                field_options=field_options(config.model),
            )
        self.data = self.prepared[key]
        return self.data

    def train(self, config: RunConfig) -> Trained:
        """Train ``config`` on the shared data (with ``reuse``, read back a finished run of
        the same config); report its test scores, time and size."""
        run_dir = config.train.out_dir / config.name
        if self.reuse and _same_run(run_dir, config):
            self.results[config.name] = json.loads((run_dir / STUDY_FILE).read_text())
            print(f"{config.name}: {_main(self.results[config.name]['test'])} (reused)")
        else:
            data = self.prepare(config)
            start = time.perf_counter()
            run = run_training(config, lambda message: None, data=data, overwrite=True)
            model = MultimodalModel.from_pretrained(run.model_dir)
            self.results[config.name] = {
                "inputs": model.inputs,
                "fusion": config.model.fusion.type,
                "test": run.test,
                "train_seconds": round(time.perf_counter() - start, 1),
                "parameters": sum(p.numel() for p in model.parameters()),
            }
            (run_dir / STUDY_FILE).write_text(json.dumps(self.results[config.name]) + "\n")
            seconds = self.results[config.name]["train_seconds"]
            print(f"{config.name}: {_main(run.test)} in {seconds} s")
        return Trained(run_dir, run_dir / "best", self.results[config.name]["test"])

    def without(self, run: Trained, fields: Iterable[str]) -> dict[str, Any]:
        """Test scores with each of ``fields`` absent from every test row, in turn."""
        model = MultimodalModel.from_pretrained(run.model_dir)
        if self.data is None:  # every run was reused
            self.prepare(self.base)
        assert self.data is not None
        examples = read_all(self.data.splits["test"], self.data.quarantine)
        scores = {}
        for field in fields:
            missing = [{**example, field: None} for example in examples]
            scores[field] = evaluate_model(model, missing)
        self.results[run.run_dir.name]["test_without"] = scores
        return scores

    def write(self, name: str, table: str, extra: dict[str, Any] | None = None) -> None:
        """``docs/examples/NAME.json`` (every number) and ``NAME.md`` (the table)."""
        DOCS.mkdir(parents=True, exist_ok=True)
        report = {
            "runs": self.results,
            **(extra or {}),
            "machine": {
                "cpu": platform.processor() or platform.machine(),
                "torch_threads": torch.get_num_threads(),
                "python": platform.python_version(),
                "torch": torch.__version__,
            },
            "seconds": round(time.perf_counter() - self.started, 1),
        }
        (DOCS / f"{name}.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
        (DOCS / f"{name}.md").write_text(table + "\n", encoding="utf-8")
        print(table)


def _main(test: dict[str, dict[str, Any]]) -> str:
    """Each task's main metric (its task class names it), for the progress line."""
    parts = []
    for task, scores in test.items():
        main = {cls.main_metric for cls in TASKS.values()} & set(scores)
        key = main.pop() if main else next(iter(scores))
        parts.append(f"{task} {key} {scores[key]}")
    return ", ".join(parts)


def markdown(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A Markdown table; floats with three decimals."""

    def cell(value: Any) -> str:
        return f"{value:.3f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
