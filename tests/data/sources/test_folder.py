from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from polymodal.data.sources import convert_image_folder
from polymodal.errors import ConfigError, DataError


def rows_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def touch(root: Path, *names: str) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"")


def test_one_root_is_split_per_class_by_seed(tmp_path: Path):
    root = tmp_path / "photos"
    touch(root, *(f"cat/{i:02d}.jpg" for i in range(20)), *(f"dog/{i}.PNG" for i in range(10)))
    touch(root, "dog/deeper/x.png", "dog/notes.txt", "readme.md", ".DS_Store", "cat/.hidden.jpg")
    conversion = convert_image_folder(tmp_path / "out", root, 0.1, 0.2, seed=1)
    rows = rows_of(conversion.manifest)
    assert Counter((r["label"], r["split"]) for r in rows) == {
        ("cat", "train"): 14,
        ("cat", "val"): 2,
        ("cat", "test"): 4,
        ("dog", "train"): 8,
        ("dog", "val"): 1,
        ("dog", "test"): 2,
    }
    assert rows[0]["image"] == "../photos/cat/00.jpg"
    assert "../photos/dog/deeper/x.png" in {r["image"] for r in rows}
    assert conversion.skipped.counts() == {"not an image": 1, "outside a class folder": 1}
    assert [Path(r.source).name for r in conversion.skipped.rows] == ["notes.txt", "readme.md"]
    again = convert_image_folder(tmp_path / "again", root, 0.1, 0.2, seed=1)
    other = convert_image_folder(tmp_path / "other", root, 0.1, 0.2, seed=2)
    assert [r["split"] for r in rows_of(again.manifest)] == [r["split"] for r in rows]
    assert [r["split"] for r in rows_of(other.manifest)] != [r["split"] for r in rows]


def test_a_root_per_split_keeps_its_split(tmp_path: Path):
    touch(tmp_path / "train", "a/1.png", "b/2.png")
    touch(tmp_path / "val", "a/3.png")
    conversion = convert_image_folder(
        tmp_path / "out", {"train": tmp_path / "train", "val": tmp_path / "val"}
    )
    assert rows_of(conversion.manifest) == [
        {"image": "../train/a/1.png", "label": "a", "split": "train"},
        {"image": "../train/b/2.png", "label": "b", "split": "train"},
        {"image": "../val/a/3.png", "label": "a", "split": "val"},
    ]


def test_bad_folders(tmp_path: Path):
    with pytest.raises(DataError, match=r"image folder .*nowhere is not a folder"):
        convert_image_folder(tmp_path / "out", tmp_path / "nowhere")
    touch(tmp_path / "flat", "1.png", "2.png")
    with pytest.raises(DataError, match=r"flat has no class folder \(one sub-folder per class\)"):
        convert_image_folder(tmp_path / "out", tmp_path / "flat")
    touch(tmp_path / "empty", "cat/notes.txt")
    with pytest.raises(DataError, match=r"image-folder: no entry became a row \(not an image 1\)"):
        convert_image_folder(tmp_path / "out", tmp_path / "empty")
    with pytest.raises(ConfigError, match=r"val 0.5, test 0.5: fractions must be non-negative"):
        convert_image_folder(tmp_path / "out", tmp_path / "flat", 0.5, 0.5)
