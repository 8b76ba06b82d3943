"""What the built-in synthetic datasets share: checked sizes, exact seeded splits, JSONL rows and
16-bit wav files."""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import soundfile

from polymodal.errors import ConfigError

SPLITS = (0.7, 0.1, 0.2)


def check_count(n: int, what: str = "rows") -> None:
    if n < 0:
        raise ConfigError(f"n is {n}: the number of {what} cannot be negative")


def split_names(rng: random.Random, n: int, splits: tuple[float, float, float]) -> list[str]:
    """Exactly round(n * val) val and round(n * test) test names, the rest train, shuffled."""
    if len(splits) != 3 or min(splits) < 0 or round(n * splits[1]) + round(n * splits[2]) > n:
        raise ConfigError(f"splits {splits!r}: give three non-negative train/val/test fractions")
    n_val, n_test = round(n * splits[1]), round(n * splits[2])
    names = ["train"] * (n - n_val - n_test) + ["val"] * n_val + ["test"] * n_test
    rng.shuffle(names)
    return names


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> Path:
    """One JSON object a line, ``\\n`` line ends whatever the platform."""
    with path.open("w", encoding="utf-8", newline="\n") as out:
        for row in rows:
            out.write(json.dumps(row) + "\n")
    return path


def write_wav(path: Path, samples: np.ndarray, sample_rate: int) -> None:
    """Mono 16-bit PCM; samples are floats in [-1, 1] (clipped there)."""
    soundfile.write(path, np.clip(samples, -1.0, 1.0), sample_rate, subtype="PCM_16")


def stream(seed: int, name: str) -> np.random.Generator:
    """A numpy generator for one named use of ``seed``, apart from every other use of it."""
    return np.random.default_rng([abs(seed), int(seed < 0), *name.encode()])
