from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from polymodal.data.sources import Conversion, convert_easyvqa
from polymodal.errors import ConfigError, DataError

easy_vqa = pytest.importorskip("easy_vqa")


def rows_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def linked(tmp_path_factory: pytest.TempPathFactory) -> Conversion:
    return convert_easyvqa(tmp_path_factory.mktemp("easyvqa") / "out", link=True)


def test_every_question_of_the_package(linked: Conversion):
    rows = rows_of(linked.manifest)
    assert linked.splits == {"train": 38_575 - 3_832, "val": 3_832, "test": 9_673}
    assert not len(linked.skipped)
    assert len(rows) == 38_575 + 9_673
    assert {r["answer"] for r in rows} == set(easy_vqa.get_answers())
    assert len(easy_vqa.get_answers()) == 13
    columns = {"image", "question", "answer", "question_type", "answer_type", "split"}
    assert all(set(r) == columns for r in rows)
    texts, answers, image_ids = easy_vqa.get_test_questions()
    test_rows = [r for r in rows if r["split"] == "test"]
    assert [r["question"] for r in test_rows] == texts
    assert [r["answer"] for r in test_rows] == answers
    assert [r["image"] for r in test_rows] == [f"images/test/{i}.png" for i in image_ids]


def test_question_and_answer_types(linked: Conversion):
    rows = rows_of(linked.manifest)
    assert Counter(r["answer_type"] for r in rows) == {
        "yes/no": 35_543,
        "color": 6_446,
        "shape": 6_259,
    }
    assert len({r["question_type"] for r in rows}) == 24
    typed = {r["question"]: (r["question_type"], r["answer_type"]) for r in rows}
    assert typed["is there not a red shape?"] == ("is there not a COLOR shape?", "yes/no")
    assert typed["what is the color of the triangle?"] == (
        "what is the color of the SHAPE?",
        "color",
    )
    assert typed["what is the teal shape?"] == ("what is the COLOR shape?", "shape")


def test_val_holds_out_whole_train_images(linked: Conversion):
    rows = rows_of(linked.manifest)
    images = {name: {r["image"] for r in rows if r["split"] == name} for name in linked.splits}
    assert len(images["val"]) == 400 and len(images["train"]) == 3_600
    assert not images["val"] & images["train"]
    assert all(image.startswith("images/train/") for image in images["val"])
    counts = Counter(r["split"] for r in rows if r["image"] in images["val"])
    assert counts == {"val": 3_832}


def test_linked_images_lead_to_the_package(linked: Conversion):
    link = linked.manifest.parent / "images" / "train" / "0.png"
    assert link.is_symlink() and link.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert link.read_bytes() == Path(easy_vqa.get_train_image_paths()[0]).read_bytes()


def test_copies_and_a_question_without_its_image(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A stand-in package of three images: copies are plain files; a question about an image
    the package lacks is left out."""
    for name in ("train/1.png", "train/2.png", "test/1.png"):
        (tmp_path / "pkg" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "pkg" / name).write_bytes(name.encode())
    package = SimpleNamespace(
        get_train_questions=lambda: (["q1", "q2", "q3"], ["yes", "no", "red"], [1, 2, 5]),
        get_test_questions=lambda: (["q4"], ["circle"], [1]),
        get_train_image_paths=lambda: {i: str(tmp_path / f"pkg/train/{i}.png") for i in (1, 2)},
        get_test_image_paths=lambda: {1: str(tmp_path / "pkg/test/1.png")},
    )
    monkeypatch.setitem(sys.modules, "easy_vqa", package)
    conversion = convert_easyvqa(tmp_path / "out", val_fraction=0.5, seed=0)
    rows = rows_of(conversion.manifest)
    assert [(r["question"], r["image"]) for r in rows] == [
        ("q1", "images/train/1.png"),
        ("q2", "images/train/2.png"),
        ("q4", "images/test/1.png"),
    ]
    assert sorted(r["split"] for r in rows) == ["test", "train", "val"]
    copy = tmp_path / "out" / "images" / "test" / "1.png"
    assert not copy.is_symlink() and copy.read_bytes() == b"test/1.png"
    [left_out] = conversion.skipped.rows
    assert (left_out.source, left_out.line, left_out.reason) == (
        "easy_vqa train questions",
        3,
        "missing image",
    )


def test_bad_arguments_and_missing_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    with pytest.raises(ConfigError, match=r"val_fraction 1.0: give a fraction in \[0, 1\)"):
        convert_easyvqa(tmp_path, val_fraction=1.0)
    monkeypatch.setitem(sys.modules, "easy_vqa", None)
    with pytest.raises(DataError, match=r"easy-VQA is not installed: pip install easy-vqa"):
        convert_easyvqa(tmp_path)
