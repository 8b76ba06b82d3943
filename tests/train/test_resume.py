"""Exact resume: a training process killed with SIGKILL and resumed ends bit for bit where an
uninterrupted run with the same seed ends (CPU, DataLoader workers on)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

CONFIG = """\
name: run
seed: 7
data:
  manifest: {manifest}
  image: {{size: 16}}
  workers: 1
model:
  inputs: [image, text, price]
  encoders:
    image: {{type: cnn, channels: [8, 8], dim: 16, dropout: 0.2}}
    text: {{type: transformer, dim: 16, layers: 1, heads: 2, dropout: 0.2}}
    price: {{type: mlp, dim: 16, hidden: 16}}
  fusion: {{dim: 16, dropout: 0.2}}
  tasks: [{{type: classify, target: label, hidden: 16}}]
train:
  epochs: 6
  batch_size: 2
  lr: 0.005
  checkpoint_every: 1
  keep_checkpoints: 3
"""


def polymodal(*args: str, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "CI": "true"}
    return subprocess.Popen(
        [sys.executable, "-m", "polymodal", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(process: subprocess.Popen) -> str:
    out, _ = process.communicate(timeout=300)
    assert process.returncode == 0, out
    return out


def steps(run: Path) -> list[int]:
    folder = run / "checkpoints"
    names = folder.glob("step-*") if folder.is_dir() else []
    return sorted(int(p.name.removeprefix("step-")) for p in names)


def losses(run: Path) -> list[tuple[int, float, float | None]]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [(r["epoch"], r["train_loss"], r["val_score"]) for r in map(json.loads, lines)]


@pytest.mark.slow
def test_a_run_killed_anywhere_resumes_to_the_same_weights(tmp_path, tiny_manifest):
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG.format(manifest=tiny_manifest), encoding="utf-8")
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    finish(polymodal("train", str(config), "--set", f"train.out_dir={whole}", cwd=tmp_path))

    process = polymodal("train", str(config), "--set", f"train.out_dir={killed}", cwd=tmp_path)
    deadline = time.monotonic() + 120
    while not any(s >= 13 for s in steps(killed / "run")):  # into epoch 2 of 6 (8 steps each)
        assert process.poll() is None, process.communicate()[0]
        assert time.monotonic() < deadline
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    left = steps(killed / "run")
    assert left and max(left) < 48, "the kill came after the run had finished"

    finish(polymodal("train", "--resume", str(killed / "run"), cwd=tmp_path))
    last = max(steps(whole / "run"))
    assert last == max(steps(killed / "run")) == 48
    for name in (f"checkpoints/step-{last:08d}/model.safetensors", "best/model.safetensors"):
        a, b = load_file(whole / "run" / name), load_file(killed / "run" / name)
        assert a.keys() == b.keys()
        assert all(a[k].equal(b[k]) for k in a), name  # bitwise
    assert losses(whole / "run") == losses(killed / "run")
    a, b = (json.loads((r / "run" / "results.json").read_text()) for r in (whole, killed))
    assert a["test"] == b["test"] and a["best_epoch"] == b["best_epoch"]
