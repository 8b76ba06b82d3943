"""Checkpoints: a saved and reloaded run goes on bit for bit, a killed save harms nothing."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from polymodal.errors import ConfigError
from polymodal.train.checkpoint import (
    CheckpointKeeper,
    capture_rng,
    load_state,
    restore_rng,
    save_state,
)

Parts = tuple[torch.nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]


def build(seed: int) -> Parts:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Embedding(10, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 3)
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01, betas=(0.8, 0.99))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / 4))
    return model, optimizer, scheduler


def train(parts: Parts, steps: int, first: int) -> None:
    model, optimizer, scheduler = parts
    for step in range(first, first + steps):
        data = torch.Generator().manual_seed(step)
        tokens = torch.randint(0, 10, (6, 5), generator=data)
        labels = torch.randint(0, 3, (6,), generator=data)
        loss = torch.nn.functional.cross_entropy(model(tokens).mean(1), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key, value in a.items():
        if isinstance(value, torch.Tensor):
            assert value.dtype == b[key].dtype and torch.equal(value, b[key]), key
        elif isinstance(value, dict):
            assert_same_state(value, b[key])
        else:
            assert value == b[key] and type(value) is type(b[key]), key


def save(parts: Parts, directory: Path, scaler=None, progress: dict | None = None) -> Path:
    model, optimizer, scheduler = parts
    return save_state(
        directory,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=scaler,
        rng=capture_rng(),
        progress=progress or {},
    )


def load(parts: Parts, directory: Path, scaler=None) -> tuple:
    model, optimizer, scheduler = parts
    return load_state(
        directory, model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler
    )


def assert_only_safetensors_and_json(folder: Path) -> None:
    assert {p.suffix for p in folder.iterdir()} == {".safetensors", ".json"}


def test_a_reloaded_run_goes_on_bit_for_bit(tmp_path):
    run = build(seed=0)
    train(run, steps=3, first=0)
    scaler = torch.amp.GradScaler("cpu", init_scale=256.0, growth_interval=7)
    progress = {"epoch": 1, "batch": 2, "global_step": 3, "best": {"acc": 0.5}}
    folder = save(run, tmp_path / "ckpt", scaler=scaler, progress=progress)
    assert_only_safetensors_and_json(folder)
    assert list(tmp_path.iterdir()) == [folder]

    resumed = build(seed=1)
    fresh_scaler = torch.amp.GradScaler("cpu")
    _, loaded_progress = load(resumed, folder, scaler=fresh_scaler)
    assert loaded_progress == progress
    assert fresh_scaler.state_dict() == scaler.state_dict()
    for original, restored in zip(run, resumed, strict=True):
        assert_same_state(original.state_dict(), restored.state_dict())

    train(run, steps=3, first=3)
    train(resumed, steps=3, first=3)
    assert_same_state(run[0].state_dict(), resumed[0].state_dict())


def test_float_optimizer_steps_load_as_from_memory(tmp_path):
    run = build(seed=0)
    train(run, steps=1, first=0)
    for state in run[1].state.values():
        state["step"] = float(state["step"])  # as older torch versions kept it
    folder = save(run, tmp_path / "ckpt")
    assert '"step": 1.0' in (folder / "optimizer.json").read_text()
    resumed, in_memory = build(seed=1), build(seed=1)
    load(resumed, folder)
    in_memory[1].load_state_dict(run[1].state_dict())
    assert_same_state(in_memory[1].state_dict(), resumed[1].state_dict())


def draws() -> list[float]:
    """A few numbers from each global generator."""
    numpy = np.random.standard_normal(3).tolist()
    return [random.random(), random.gauss(0, 1), *numpy, *torch.rand(3).tolist()]


def test_every_generator_comes_back(tmp_path):
    parts = build(seed=0)
    random.gauss(0, 1)  # a cached gaussian is part of the state
    np.random.standard_normal()
    state = capture_rng()
    folder = save(parts, tmp_path / "ckpt")  # captures the same state again
    expected = draws()
    restore_rng(state)
    assert draws() == expected
    draws()
    rng, _ = load(parts, folder)
    restore_rng(rng)
    assert draws() == expected


KILLED_SAVE = """
import sys, time
from pathlib import Path
import torch
from polymodal.train import checkpoint

def parts():
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    rng = checkpoint.capture_rng()
    return dict(model=model, optimizer=optimizer, scheduler=scheduler, rng=rng)

keeper = checkpoint.CheckpointKeeper(Path(sys.argv[1]))
keeper.save(1, progress={"step": 1}, **parts())
save_file = checkpoint.save_file

def slow_save_file(tensors, filename):
    save_file(tensors, filename)
    print("writing", flush=True)
    time.sleep(60)

checkpoint.save_file = slow_save_file
keeper.save(2, progress={"step": 2}, **parts())
"""


def test_a_save_killed_midway_leaves_the_previous_checkpoint(tmp_path):
    root = tmp_path / "checkpoints"
    process = subprocess.Popen(
        [sys.executable, "-c", KILLED_SAVE, str(root)], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None and process.stdout.readline() == "writing\n"
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    previous = root / "step-00000001"
    stale = [p for p in root.iterdir() if p != previous]
    assert len(stale) == 1 and stale[0].name.startswith(".step-00000002.")

    keeper = CheckpointKeeper(root)
    assert keeper.latest() == previous
    assert list(root.iterdir()) == [previous]
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    _, progress = load((model, optimizer, scheduler), previous)
    assert progress == {"step": 1}


def test_the_keeper_keeps_the_newest(tmp_path):
    keeper = CheckpointKeeper(tmp_path / "checkpoints", keep=2)
    assert keeper.latest() is None
    run = build(seed=0)
    model, optimizer, scheduler = run
    for step in (1, 2, 3, 3):  # saving a step again replaces it
        train(run, steps=1, first=step)
        kwargs = dict(model=model, optimizer=optimizer, scheduler=scheduler, rng=capture_rng())
        keeper.save(step, progress={"step": step}, **kwargs)
    assert [p.name for p in keeper.checkpoints()] == ["step-00000002", "step-00000003"]
    assert sorted(p.name for p in keeper.root.iterdir()) == ["step-00000002", "step-00000003"]
    latest = keeper.latest()
    assert latest == keeper.root / "step-00000003"
    assert_only_safetensors_and_json(latest)
    resumed = build(seed=1)
    load(resumed, latest)
    assert_same_state(model.state_dict(), resumed[0].state_dict())
    with pytest.raises(ConfigError, match="keep"):
        CheckpointKeeper(tmp_path, keep=0)
