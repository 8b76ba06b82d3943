"""What the worked examples share: train variants of one packaged config on one prepared data
set, score them on the test split (whole, or with a modality missing from every row), and write
the numbers as JSON and a Markdown table.

The examples (``example_driving.py``, ``example_shapeworld.py``, ``example_voice_commands.py``)
generate their data with the generator of ``polymodal data generate NAME``, train what their
README section reports, and write ``docs/examples/NAME.json`` and ``docs/examples/NAME.md``;
``fusion_table.py`` trains every fusion method on three tasks the same way.
"""

from __future__ import annotations

import itertools
import json
import platform
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from polymodal.config import RunConfig, task_targets
from polymodal.data.dataset import read_all
from polymodal.data.pipeline import PreparedData, prepare_data
from polymodal.demo import packaged_config
from polymodal.inference import evaluate_model
from polymodal.models.encoders.pretrained import field_options
from polymodal.models.model import MultimodalModel
from polymodal.progress import set_quiet
from polymodal.train.run import RunResult, run_training

DOCS = Path(__file__).resolve().parent.parent / "docs" / "examples"


def subsets(fields: Sequence[str]) -> list[list[str]]:
    """Every non-empty subset of ``fields``, smallest first."""
    return [
        list(combo)
        for k in range(1, len(fields) + 1)
        for combo in itertools.combinations(fields, k)
    ]


class Study:
    """Variants of one packaged config, trained on one prepared data set under ``work``."""

    def __init__(self, config: str, manifest: Path, work: Path, seed: int = 0) -> None:
        set_quiet(True)
        self.base = packaged_config(config, manifest, work / "runs", seed=seed)
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

    def train(self, config: RunConfig) -> RunResult:
        """Train ``config`` on the shared data; report its test scores, time and size."""
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
        print(f"{config.name}: {_main(run.test)} in {self.results[config.name]['train_seconds']} s")
        return run

    def without(self, run: RunResult, fields: Iterable[str]) -> dict[str, Any]:
        """Test scores with each of ``fields`` absent from every test row, in turn."""
        model = MultimodalModel.from_pretrained(run.model_dir)
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
    parts = []
    for task, scores in test.items():
        key = "accuracy" if "accuracy" in scores else next(iter(scores))
        parts.append(f"{task} {key} {scores[key]}")
    return ", ".join(parts)


def markdown(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A Markdown table; floats with three decimals."""

    def cell(value: Any) -> str:
        return f"{value:.3f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
