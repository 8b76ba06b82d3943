"""Shared fixtures: a tiny manifest of real PNG files with a few kinds of fields."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220)}


def write_png(path: Path, colour: tuple[int, int, int], size: int = 16) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), colour).save(path)


def _write_tiny_manifest(folder: Path) -> Path:
    """24 rows: image colour decides the label; text and a price column ride along."""
    rows = []
    for i in range(24):
        colour = "red" if i % 2 == 0 else "blue"
        write_png(folder / "img" / f"{i}.png", COLOURS[colour])
        rows.append(
            {
                "id": str(i),
                "split": "train" if i < 16 else ("val" if i < 20 else "test"),
                "image": f"img/{i}.png",
                "text": f"a {colour} square number {i}",
                "price": float(i),
                "label": colour,
            }
        )
    path = folder / "manifest.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def write_tiny_manifest() -> Callable[[Path], Path]:
    """The ``tiny_manifest`` writer, for module-scoped fixtures that train once per module."""
    return _write_tiny_manifest


@pytest.fixture
def tiny_manifest(tmp_path: Path) -> Path:
    return _write_tiny_manifest(tmp_path)


@dataclass(frozen=True)
class BadManifest:
    """A manifest with known bad rows: ``quarantined`` maps line -> (reason, field)."""

    path: Path
    labels: tuple[str, ...]
    quarantined: dict[int, tuple[str, str]]
    empty_caption_line: int
    splits: dict[str, int]  # loaded rows per split


@pytest.fixture
def bad_manifest(tmp_path: Path) -> BadManifest:
    """12 rows (image, caption, label; split 8 train / 2 val / 2 test) with four defects.

    Line 3 (train): truncated PNG. Line 7 (train): empty caption, which is an absent field,
    not a bad row. Line 9 (val): image file missing. Line 11 (test): label 'green', outside the
    label set (red, blue).
    """
    rng = np.random.default_rng(0)
    rows = []
    for i in range(12):
        colour = "red" if i % 2 == 0 else "blue"
        noise = rng.integers(-25, 26, size=(16, 16, 3))
        pixels = np.clip(np.array(COLOURS[colour]) + noise, 0, 255).astype(np.uint8)
        path = tmp_path / "img" / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path)
        rows.append(
            {
                "split": "train" if i < 8 else ("val" if i < 10 else "test"),
                "image": f"img/{i}.png",
                "caption": f"a {colour} square number {i}",
                "label": colour,
            }
        )
    truncated = tmp_path / "img" / "2.png"
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    rows[6]["caption"] = ""
    rows[8]["image"] = "img/missing.png"
    rows[10]["label"] = "green"
    path = tmp_path / "manifest.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return BadManifest(
        path=path,
        labels=("red", "blue"),
        quarantined={
            3: ("unreadable image", "image"),
            9: ("missing image file", "image"),
            11: ("unknown label", "label"),
        },
        empty_caption_line=7,
        splits={"train": 7, "val": 1, "test": 1},
    )
