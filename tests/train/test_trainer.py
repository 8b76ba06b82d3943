from __future__ import annotations

import itertools
import json
from pathlib import Path

from polymodal.config import validate
from polymodal.train.run import run_training
from polymodal.train.trainer import warmup_cosine


def run_config(manifest: Path, out: Path, name: str = "run") -> object:
    return validate(
        {
            "name": name,
            "seed": 3,
            "data": {"manifest": str(manifest), "image": {"size": 16}},
            "model": {
                "inputs": ["image", "text"],
                "encoders": {
                    "image": {"type": "cnn", "dim": 16, "channels": [8, 8]},
                    "text": {"type": "transformer", "dim": 16, "layers": 1, "heads": 2},
                },
                "tasks": [{"type": "classify", "target": "label", "hidden": 16}],
            },
            "train": {"epochs": 3, "batch_size": 4, "lr": 0.005, "out_dir": str(out)},
        }
    )


def test_schedule_warms_up_then_decays():
    factors = [warmup_cosine(s, 2, 10) for s in range(10)]
    assert factors[:2] == [0.5, 1.0]
    assert factors[2] == 1.0 and factors[-1] < 0.05
    assert all(a >= b for a, b in itertools.pairwise(factors[2:]))


def test_run_writes_files_learns_and_is_repeatable(tiny_manifest, tmp_path):
    first = run_training(run_config(tiny_manifest, tmp_path / "a"), log=lambda m: None)
    run_dir = tmp_path / "a" / "run"
    assert {p.name for p in run_dir.iterdir()} >= {
        "config.yaml",
        "metrics.jsonl",
        "best",
        "results.json",
    }
    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert first.test["classify_label"]["num_examples"] == 4
    results = json.loads((run_dir / "results.json").read_text())
    assert results["best_epoch"] == first.train.best_epoch

    second = run_training(run_config(tiny_manifest, tmp_path / "b"), log=lambda m: None)
    assert [h["train_loss"] for h in second.train.history] == [h["train_loss"] for h in history]
    assert second.test == first.test
