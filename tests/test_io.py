"""Atomic writes: a killed save leaves the old file whole, and the next save sweeps its temp."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from polymodal.config import validate
from polymodal.io import atomic_write_text, remove_stale_temp_files
from polymodal.models.model import MultimodalModel
from polymodal.train.run import run_training

KILLED_WRITER = """
import sys, time
from pathlib import Path
from polymodal.io import atomic_write

def write(tmp: Path) -> None:
    tmp.write_bytes(b"x" * 1_000_000)  # half a checkpoint on disk ...
    print("writing", flush=True)
    time.sleep(60)  # ... when the process is killed

atomic_write(Path(sys.argv[1]), write)
"""


def test_a_save_killed_midway_leaves_a_temp_that_the_next_save_removes(tmp_path):
    target = tmp_path / "best" / "model.safetensors"
    target.parent.mkdir()
    target.write_bytes(b"the previous best")
    process = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(target)], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None and process.stdout.readline() == "writing\n"
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    leftovers = [p for p in target.parent.iterdir() if p != target]
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".model.safetensors.")
    assert target.read_bytes() == b"the previous best"  # the old file is whole

    assert remove_stale_temp_files(target.parent) == leftovers
    assert list(target.parent.iterdir()) == [target]


def test_saving_a_model_sweeps_temp_files_of_killed_saves(tmp_path, tiny_manifest):
    config = validate(
        {
            "data": {"manifest": str(tiny_manifest), "image": {"size": 16}},
            "model": {
                "encoders": {"image": {"type": "cnn", "dim": 8, "channels": [8]}},
                "fusion": {"dim": 8},
                "tasks": [{"type": "classify", "target": "label", "hidden": 8}],
            },
            "train": {"epochs": 1, "batch_size": 8, "out_dir": str(tmp_path / "runs")},
        }
    )
    best = run_training(config, log=lambda m: None).model_dir
    stale = best / ".model.safetensors.k1ll3d.tmp"
    stale.write_bytes(b"x" * 1000)
    MultimodalModel.from_pretrained(best).save_pretrained(best)
    assert not stale.exists()
    assert sorted(p.name for p in best.iterdir()) == [
        "config.json",
        "model.safetensors",
        "preprocessor.json",
    ]


def test_atomic_write_leaves_only_the_target(tmp_path):
    path = atomic_write_text(tmp_path / "a" / "notes.json", "{}")
    assert path.read_text() == "{}" and list(path.parent.iterdir()) == [path]
