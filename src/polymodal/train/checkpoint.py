"""Exact resume: a checkpoint folder holds all a run needs to go on bit for bit (weights,
optimizer, schedule, gradient scaler, every random generator, the trainer's progress) as
safetensors and JSON only; nothing is pickled.

A folder is built under a hidden temporary name beside its target (``.NAME.RANDOM.tmp``), each
file and the folder are fsynced, and only then is it renamed into place: a run killed at any
moment leaves the earlier checkpoints whole, and ``CheckpointKeeper.latest`` sweeps the rest.

Layout: ``model.safetensors``; ``optimizer.safetensors`` (per-parameter state tensors, keyed
``state.3.exp_avg``) + ``optimizer.json`` (the rest); ``rng.safetensors``; ``trainer.json``
(scheduler, scaler, RNG values, progress).
"""

from __future__ import annotations

import os
import random
import secrets
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from polymodal.errors import ConfigError, ModelError
from polymodal.io import TEMP_SUFFIX, atomic_write, read_json, write_json

MODEL_FILE = "model.safetensors"
OPTIMIZER_TENSORS_FILE = "optimizer.safetensors"
OPTIMIZER_FILE = "optimizer.json"
RNG_FILE = "rng.safetensors"
TRAINER_FILE = "trainer.json"
FILES = (MODEL_FILE, OPTIMIZER_TENSORS_FILE, OPTIMIZER_FILE, RNG_FILE, TRAINER_FILE)
STEP_PREFIX = "step-"


@dataclass
class RngState:
    """The state of every random generator: tensors for safetensors, JSON-able values."""

    tensors: dict[str, torch.Tensor]
    values: dict[str, Any]


def capture_rng() -> RngState:
    """Python's ``random``, NumPy's global RNG, torch's CPU generator and each CUDA device's."""
    version, internal, gauss_next = random.getstate()
    name, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    tensors = {"torch": torch.get_rng_state(), "numpy": torch.from_numpy(keys.astype(np.int64))}
    tensors.update({f"cuda.{index}": state for index, state in enumerate(cuda)})
    values = {
        "python": [version, list(internal), gauss_next],
        "numpy": [name, int(pos), int(has_gauss), float(cached_gaussian)],
        "cuda_devices": len(cuda),
    }
    return RngState(tensors, values)


def restore_rng(state: RngState) -> None:
    """Put every generator back as ``capture_rng`` found it (CUDA ones when CUDA is here)."""
    version, internal, gauss_next = state.values["python"]
    random.setstate((version, tuple(internal), gauss_next))
    name, pos, has_gauss, cached_gaussian = state.values["numpy"]
    keys = state.tensors["numpy"].numpy().astype(np.uint32)
    np.random.set_state((name, keys, pos, has_gauss, cached_gaussian))
    torch.set_rng_state(state.tensors["torch"])
    if torch.cuda.is_available():
        count = state.values["cuda_devices"]
        torch.cuda.set_rng_state_all([state.tensors[f"cuda.{i}"] for i in range(count)])


def save_state(
    directory: str | Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler | None = None,
    rng: RngState,
    progress: Mapping[str, Any],
) -> Path:
    """Write a checkpoint folder atomically, replacing an existing one; returns its path."""
    optimizer_tensors, optimizer_values = _split_optimizer(optimizer.state_dict())
    trainer = {
        "scheduler": _without_code(scheduler.state_dict()),
        "scaler": None if scaler is None else scaler.state_dict(),
        "rng": rng.values,
        "progress": dict(progress),
    }

    def write(folder: Path) -> None:
        _save_tensors(folder / MODEL_FILE, model.state_dict())
        _save_tensors(folder / OPTIMIZER_TENSORS_FILE, optimizer_tensors)
        write_json(folder / OPTIMIZER_FILE, optimizer_values)
        _save_tensors(folder / RNG_FILE, rng.tensors)
        write_json(folder / TRAINER_FILE, trainer)

    return _write_folder(Path(directory), write)


def load_state(
    directory: str | Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler | None = None,
) -> tuple[RngState, dict[str, Any]]:
    """Restore a checkpoint in place; returns its RNG state (not yet applied) and progress."""
    directory = Path(directory)
    missing = [name for name in FILES if not (directory / name).is_file()]
    if missing:
        raise ModelError(
            f"checkpoint {directory} lacks {', '.join(missing)}; resume from a folder that "
            "save_state wrote (a run's checkpoints/step-*)"
        )
    trainer = read_json(directory / TRAINER_FILE, "checkpoint")
    if scaler is not None and trainer["scaler"] is None:
        raise ModelError(f"checkpoint {directory} was saved without a gradient scaler")
    model.load_state_dict(load_file(directory / MODEL_FILE))
    optimizer.load_state_dict(
        _join_optimizer(
            load_file(directory / OPTIMIZER_TENSORS_FILE),
            read_json(directory / OPTIMIZER_FILE, "checkpoint"),
            optimizer.defaults,
        )
    )
    scheduler.load_state_dict(trainer["scheduler"])
    if scaler is not None:
        scaler.load_state_dict(trainer["scaler"])
    return RngState(load_file(directory / RNG_FILE), trainer["rng"]), trainer["progress"]


class CheckpointKeeper:
    """A run's newest ``keep`` checkpoints, in ``root/step-00001234/`` (the global step)."""

    def __init__(self, root: str | Path, keep: int = 2) -> None:
        if keep < 1:
            raise ConfigError(f"keep at least one checkpoint (got keep={keep})")
        self.root = Path(root)
        self.keep = keep

    def save(self, step: int, **state: Any) -> Path:
        """``save_state`` (same keyword arguments) for ``step``, then delete all but the newest."""
        path = save_state(self.root / f"{STEP_PREFIX}{step:08d}", **state)
        for old in self.checkpoints()[: -self.keep]:
            shutil.rmtree(old)
        return path

    def checkpoints(self) -> list[Path]:
        """The complete checkpoints, oldest first (a folder only gets its name when whole)."""
        found = [
            path
            for path in self.root.glob(f"{STEP_PREFIX}*")
            if path.is_dir() and path.name.removeprefix(STEP_PREFIX).isdigit()
        ]
        return sorted(found, key=lambda path: int(path.name.removeprefix(STEP_PREFIX)))

    def latest(self) -> Path | None:
        """The newest complete checkpoint, if any; sweeps the temp folders of killed saves."""
        for stale in self.root.glob(f".{STEP_PREFIX}*{TEMP_SUFFIX}"):
            shutil.rmtree(stale, ignore_errors=True)
        found = self.checkpoints()
        return found[-1] if found else None


def _split_optimizer(
    state: dict[str, Any],
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The per-parameter state's tensors (``state.3.exp_avg``) apart from its JSON-able rest."""
    tensors: dict[str, torch.Tensor] = {}
    values: dict[str, dict[str, Any]] = {}
    for param, entries in state["state"].items():
        values[str(param)] = {}
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{param}.{name}"] = value
            else:
                values[str(param)][name] = value
    return tensors, {"state": values, "param_groups": state["param_groups"]}


def _join_optimizer(
    tensors: dict[str, torch.Tensor], values: dict[str, Any], defaults: dict[str, Any]
) -> dict[str, Any]:
    """The optimizer state dict ``_split_optimizer`` took apart; JSON lists become tuples
    again where the optimizer's defaults hold tuples (AdamW's betas)."""
    state = {int(param): entries for param, entries in values["state"].items()}
    for key, tensor in tensors.items():
        _, param, name = key.split(".", 2)
        state[int(param)][name] = tensor
    groups = [
        {k: tuple(v) if isinstance(defaults.get(k), tuple) else v for k, v in group.items()}
        for group in values["param_groups"]
    ]
    return {"state": state, "param_groups": groups}


def _without_code(value: Any) -> Any:
    """``value`` less the functions in its dicts: code is rebuilt by constructors, not saved
    (a LambdaLR's callable objects keep their data, plain functions save as None)."""
    if isinstance(value, dict):
        return {k: _without_code(v) for k, v in value.items() if not callable(v)}
    if isinstance(value, list | tuple):
        return [_without_code(v) for v in value]
    return value


def _save_tensors(path: Path, tensors: Mapping[str, torch.Tensor]) -> None:
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in tensors.items()}
    atomic_write(path, lambda tmp: save_file(state, str(tmp)))


def _write_folder(directory: Path, write: Callable[[Path], None]) -> Path:
    """``write(tmp)`` into a hidden folder beside ``directory``, fsync it, rename it into place.
    An existing ``directory`` is renamed away first and removed once the new one is in place."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(directory)
    tmp.mkdir()
    try:
        write(tmp)
        _fsync(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = _temp_name(directory)
    if directory.exists():
        directory.rename(old)
    tmp.rename(directory)
    _fsync(directory.parent)
    shutil.rmtree(old, ignore_errors=True)
    return directory


def _temp_name(directory: Path) -> Path:
    return directory.with_name(f".{directory.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")


def _fsync(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
