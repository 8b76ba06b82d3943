from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from polymodal.config import RunConfig, load_config, validate
from polymodal.errors import DataError, PolymodalError
from polymodal.evaluate.evaluator import evaluate_model
from polymodal.models.model import MultimodalModel
from polymodal.train.run import run_training


def write_config(bad_manifest, out_dir: Path) -> Path:
    """A tiny run over the bad manifest; the manifest path is relative to the config file."""
    config = {
        "name": "bad",
        "seed": 1,
        "data": {
            "manifest": bad_manifest.path.name,
            "fields": {
                "image": {"kind": "image"},
                "caption": {"kind": "text"},
                "label": {"kind": "label", "role": "target", "labels": list(bad_manifest.labels)},
            },
            "image": {"size": 16},
            "text": {"max_length": 16},
        },
        "model": {
            "encoders": {
                "image": {"type": "cnn", "dim": 16, "channels": [8, 8]},
                "caption": {"type": "transformer", "dim": 16, "layers": 1, "heads": 2},
            },
            "fusion": {"dim": 16},
            "tasks": [{"type": "classify", "target": "label", "hidden": 16}],
        },
        "train": {"epochs": 2, "batch_size": 4, "lr": 0.005, "out_dir": str(out_dir)},
    }
    path = bad_manifest.path.parent / "run.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_run_over_bad_manifest_quarantines_and_writes_run_files(bad_manifest, tmp_path):
    config = load_config(write_config(bad_manifest, tmp_path / "runs"))
    assert config.data.manifest == bad_manifest.path.resolve()
    messages: list[str] = []
    result = run_training(config, log=messages.append)

    run_dir = tmp_path / "runs" / "bad"
    assert result.run_dir == run_dir and result.model_dir == run_dir / "best"
    assert {p.name for p in run_dir.iterdir()} == {
        "config.yaml",
        "quarantine.jsonl",
        "metrics.jsonl",
        "results.json",
        "best",
    }

    quarantined = read_jsonl(run_dir / "quarantine.jsonl")
    assert len(quarantined) == 3
    assert {r["line"]: (r["reason"], r["field"]) for r in quarantined} == bad_manifest.quarantined
    assert all(r["source"] == str(bad_manifest.path.resolve()) and r["detail"] for r in quarantined)
    assert any(m.startswith("quarantined 3 rows:") for m in messages)
    assert {name: len(ex) for name, ex in result.data.splits.items()} == bad_manifest.splits

    saved = validate(yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")))
    assert saved == config

    history = read_jsonl(run_dir / "metrics.jsonl")
    assert [h["epoch"] for h in history] == [1, 2]
    assert all(math.isfinite(h["train_loss"]) for h in history)
    assert all(h["val"]["classify_label"]["num_examples"] == 1 for h in history)

    results = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    assert results["name"] == "bad"
    assert results["best_epoch"] in (1, 2)
    assert results["quarantined"] == {
        "unreadable image": 1,
        "missing image file": 1,
        "unknown label": 1,
    }
    assert results["test"] == result.test
    assert results["test"]["classify_label"]["num_examples"] == 1

    best = MultimodalModel.from_pretrained(run_dir / "best")
    assert best.preprocessor.fields["label"].labels == ["red", "blue"]
    assert best.preprocessor.state() == result.data.preprocessor.state()
    assert evaluate_model(best, result.data.splits["test"]) == results["test"]
    batch = best.preprocessor.collate(result.data.splits["train"])
    assert batch.present["caption"].tolist().count(False) == 1  # the empty caption
    logits = best(batch)["classify_label"]
    assert logits.shape == (7, 2) and torch.isfinite(logits).all()


def test_strict_run_raises_naming_the_bad_row(bad_manifest, tmp_path):
    path = write_config(bad_manifest, tmp_path / "runs")
    config: RunConfig = load_config(path, ["data.strict=true"])
    assert config.data.strict
    where = r"manifest\.jsonl:3 field 'image': unreadable image"
    with pytest.raises(DataError, match=where) as err:
        run_training(config, log=lambda message: None)
    assert isinstance(err.value, PolymodalError)
    assert "strict mode" in str(err.value)
    run_dir = tmp_path / "runs" / "bad"
    assert not (run_dir / "best").exists() and not (run_dir / "results.json").exists()
    assert not (run_dir / "quarantine.jsonl").exists()
