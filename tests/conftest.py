"""Shared fixtures: a tiny manifest of real PNG files with a few kinds of fields."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220)}


def write_png(path: Path, colour: tuple[int, int, int], size: int = 16) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), colour).save(path)


@pytest.fixture
def tiny_manifest(tmp_path: Path) -> Path:
    """24 rows: image colour decides the label; text and a price column ride along."""
    rows = []
    for i in range(24):
        colour = "red" if i % 2 == 0 else "blue"
        write_png(tmp_path / "img" / f"{i}.png", COLOURS[colour])
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
    path = tmp_path / "manifest.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path
