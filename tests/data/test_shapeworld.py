"""ShapeWorld: determinism, layout, and answers and labels checked against the scene objects."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from itertools import combinations, pairwise
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from polymodal.data.shapeworld import COLOURS, SHAPES, SIZES, generate
from polymodal.errors import ConfigError

Row = dict[str, Any]
Obj = dict[str, Any]

# Rough reference colours, chosen here apart from the generator's own values.
REFERENCE_RGB = {
    "red": (255, 0, 0),
    "green": (0, 160, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
    "purple": (128, 0, 128),
}
WIDTH_AT_64 = {"small": 12, "large": 20}


def read_jsonl(path: Path) -> list[Row]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Row]]:
    """2,000 scenes, enough to measure label balance."""
    manifest = generate(tmp_path_factory.mktemp("shapeworld") / "world", n=2000, seed=0)
    return manifest, read_jsonl(manifest)


def the(objects: list[Obj], colour: str, shape: str) -> Obj:
    """The single object with this colour and shape; fails when there is none or several."""
    [obj] = [o for o in objects if o["colour"] == colour and o["shape"] == shape]
    return obj


def has(objects: list[Obj], colour: str, shape: str) -> bool:
    return any(o["colour"] == colour and o["shape"] == shape for o in objects)


def statement_truth(text: str, objects: list[Obj]) -> tuple[str, bool]:
    """(type, truth) of a statement, parsed from its text and checked against the objects."""
    if m := re.fullmatch(r"the (\w+) (\w+) is to the (left|right) of the (\w+) (\w+)", text):
        a, b = the(objects, m[1], m[2]), the(objects, m[4], m[5])
        return "spatial", (a["x"] < b["x"]) == (m[3] == "left")
    count = r"(?:there is|there are|the image contains|the image shows exactly) (\d) shapes?"
    if m := re.fullmatch(count, text):
        return "count", int(m[1]) == len(objects)
    existence = r"(?:there is|the image contains) an? (\w+) (\w+)|an? (\w+) (\w+) is present"
    if m := re.fullmatch(existence, text):
        colour, shape = (m[1], m[2]) if m[1] else (m[3], m[4])
        assert colour in COLOURS and shape in SHAPES
        return "existence", has(objects, colour, shape)
    raise AssertionError(f"unknown statement {text!r}")


def answer(question: str, objects: list[Obj]) -> tuple[str, str]:
    """(type, answer) of a question, worked out from the objects."""
    if m := re.fullmatch(r"what colour is the (\w+)\?", question):
        [obj] = [o for o in objects if o["shape"] == m[1]]
        return "colour", obj["colour"]
    if m := re.fullmatch(r"what shape is the (\w+) object\?", question):
        [obj] = [o for o in objects if o["colour"] == m[1]]
        return "shape", obj["shape"]
    if question == "how many shapes are there?":
        return "count", str(len(objects))
    if m := re.fullmatch(r"is there an? (\w+) (\w+)\?", question):
        return "existence", "yes" if has(objects, m[1], m[2]) else "no"
    if m := re.fullmatch(r"is the (\w+) (\w+) to the left of the (\w+) (\w+)\?", question):
        a, b = the(objects, m[1], m[2]), the(objects, m[3], m[4])
        return "spatial", "yes" if a["x"] < b["x"] else "no"
    if m := re.fullmatch(r"what shape is to the (left|right) of the (\w+) (\w+)\?", question):
        ref = the(objects, m[2], m[3])
        [obj] = [o for o in objects if (o["x"] < ref["x"]) == (m[1] == "left") and o is not ref]
        return "spatial", obj["shape"]
    raise AssertionError(f"unknown question {question!r}")


def test_same_seed_same_bytes(tmp_path: Path):
    a = generate(tmp_path / "a", n=60, seed=3).parent
    b = generate(tmp_path / "b", n=60, seed=3, progress=True).parent
    c = generate(tmp_path / "c", n=60, seed=4).parent
    for name in ("manifest.jsonl", "questions.jsonl"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
        assert (a / name).read_bytes() != (c / name).read_bytes()
    pngs = sorted(p.name for p in (a / "images").iterdir())
    assert pngs == [f"{i:06d}.png" for i in range(60)]
    assert all((a / "images" / p).read_bytes() == (b / "images" / p).read_bytes() for p in pngs)
    assert any((a / "images" / p).read_bytes() != (c / "images" / p).read_bytes() for p in pngs)


@pytest.mark.parametrize(
    ("n", "splits", "image_size"), [(97, (0.7, 0.1, 0.2), 64), (50, (0.5, 0.3, 0.2), 48)]
)
def test_exact_splits_and_images(tmp_path: Path, n, splits, image_size):
    manifest = generate(tmp_path, n=n, seed=1, image_size=image_size, splits=splits)
    rows = read_jsonl(manifest)
    n_val, n_test = round(n * splits[1]), round(n * splits[2])
    counts = {s: sum(r["split"] == s for r in rows) for s in ("train", "val", "test")}
    assert counts == {"train": n - n_val - n_test, "val": n_val, "test": n_test}
    assert [r["id"] for r in rows] == [f"{i:06d}" for i in range(n)]
    for row in rows:
        assert row["image"] == f"images/{row['id']}.png"
        with Image.open(manifest.parent / row["image"]) as image:
            assert image.mode == "RGB" and image.size == (image_size, image_size)
        gap = image_size / 4
        assert all(b["x"] - a["x"] >= gap for a, b in pairwise(row["objects"]))


def test_scene_layout(world):
    _, rows = world
    assert {len(r["objects"]) for r in rows} == {1, 2, 3}
    for row in rows:
        objects = row["objects"]
        assert all(list(o) == ["shape", "colour", "size", "x", "y"] for o in objects)
        assert all(
            o["shape"] in SHAPES and o["colour"] in COLOURS and o["size"] in SIZES for o in objects
        )
        assert len({(o["colour"], o["shape"]) for o in objects}) == len(objects)
        assert all(b["x"] - a["x"] >= 16 for a, b in pairwise(objects))
        for a, b in combinations(objects, 2):  # bounding boxes do not touch
            reach = (WIDTH_AT_64[a["size"]] + WIDTH_AT_64[b["size"]]) / 2
            assert max(abs(a["x"] - b["x"]), abs(a["y"] - b["y"])) >= reach


def test_pixels_show_the_objects(world):
    manifest, rows = world
    for row in rows[:300]:
        with Image.open(manifest.parent / row["image"]) as image:
            pixels = image.load()
        background = pixels[0, 0]
        assert len(set(background)) == 1 and background[0] > 200
        for obj in row["objects"]:
            x, y = obj["x"], obj["y"]
            rgb = pixels[x, y]
            nearest = min(
                REFERENCE_RGB,
                key=lambda c: sum((p - q) ** 2 for p, q in zip(rgb, REFERENCE_RGB[c], strict=True)),
            )
            assert nearest == obj["colour"]
            top, bottom = y, y
            while pixels[x, top - 1] != background:
                top -= 1
            while pixels[x, bottom + 1] != background:
                bottom += 1
            assert abs(bottom - top + 1 - WIDTH_AT_64[obj["size"]]) <= 2


def test_captions_describe_every_object_left_to_right(world):
    _, rows = world
    wordings: dict[int, set[str]] = defaultdict(set)
    for row in rows:
        caption, objects = row["caption"], row["objects"]
        phrases = [f"a {o['size']} {o['colour']} {o['shape']}" for o in objects]
        found = [caption.find(p) for p in phrases]
        assert min(found) >= 0, (caption, phrases)
        order = sorted(range(len(objects)), key=found.__getitem__)
        if "to the right of" in caption:
            assert order == [1, 0]
        elif " between " in caption:
            assert order == [1, 0, 2]
        else:
            assert order == list(range(len(objects)))
        for phrase in phrases:
            caption = caption.replace(phrase, "X")
        wordings[len(objects)].add(caption)
    assert all(len(templates) >= 3 for templates in wordings.values())


def test_articles_and_number_agree(world):
    _, rows = world
    texts = [r["caption"] for r in rows] + [r["statement"] for r in rows]
    texts += [q["question"] for r in rows for q in r["questions"]]
    for text in texts:
        assert not re.search(r"\ba [aeiou]|\ban [^aeiou]", text), text
        assert not re.search(r"there are 1\b|there is [23]\b|\b1 shapes|\b[23] shape\b", text), text


def test_questions_are_answered_correctly(world):
    manifest, rows = world
    yes = defaultdict(list)
    for row in rows:
        objects = row["objects"]
        types = [q["type"] for q in row["questions"]]
        assert len(types) == len(set(types))
        assert {"count", "existence"} <= set(types)
        assert ("spatial" in types) == (len(objects) >= 2)
        shapes, colours = [o["shape"] for o in objects], [o["colour"] for o in objects]
        assert ("colour" in types) == any(shapes.count(s) == 1 for s in shapes)
        assert ("shape" in types) == any(colours.count(c) == 1 for c in colours)
        for q in row["questions"]:
            assert answer(q["question"], objects) == (q["type"], q["answer"]), q
            if q["answer"] in ("yes", "no"):
                yes[q["type"]].append(q["answer"] == "yes")
    assert abs(sum(yes["existence"]) / len(yes["existence"]) - 0.5) < 0.05
    assert abs(sum(yes["spatial"]) / len(yes["spatial"]) - 0.5) < 0.08

    flat = read_jsonl(manifest.parent / "questions.jsonl")
    expected = [
        {"id": f"{r['id']}_q{k}", "scene": r["id"], "split": r["split"], "image": r["image"], **q}
        for r in rows
        for k, q in enumerate(r["questions"])
    ]
    assert flat == expected


def test_labels_are_the_truth_of_the_statements(world):
    _, rows = world
    for row in rows:
        kind, truth = statement_truth(row["statement"], row["objects"])
        assert kind == row["statement_type"]
        assert row["label"] == ("true" if truth else "false"), row


def test_text_alone_does_not_predict_the_label(world):
    _, rows = world
    assert abs(sum(r["label"] == "true" for r in rows) / len(rows) - 0.5) < 0.05
    by_text: dict[str, list[bool]] = defaultdict(list)
    by_type: dict[str, list[bool]] = defaultdict(list)
    for row in rows:
        by_text[row["statement"]].append(row["label"] == "true")
        by_type[row["statement_type"]].append(row["label"] == "true")
    frequent = [labels for labels in by_text.values() if len(labels) >= 20]
    assert len(frequent) >= 30
    assert all(abs(sum(labels) / len(labels) - 0.5) < 0.3 for labels in frequent)
    # Chi-square over texts: each term is ~1 on average when the label is a fair coin per text.
    chi2 = sum((sum(ls) - len(ls) / 2) ** 2 / (len(ls) / 4) for ls in frequent)
    assert chi2 / len(frequent) < 1.6
    assert all(abs(sum(labels) / len(labels) - 0.5) < 0.1 for labels in by_type.values())


def test_image_alone_does_not_predict_the_label(world):
    _, rows = world
    by_count: dict[int, list[bool]] = defaultdict(list)
    for row in rows:
        by_count[len(row["objects"])].append(row["label"] == "true")
    assert sorted(by_count) == [1, 2, 3]
    assert all(abs(sum(labels) / len(labels) - 0.5) < 0.08 for labels in by_count.values())


def test_statement_mix(tmp_path: Path):
    rows = read_jsonl(generate(tmp_path / "count", n=80, statement_mix={"count": 1.0}))
    assert {r["statement_type"] for r in rows} == {"count"}
    rows = read_jsonl(generate(tmp_path / "spatial", n=80, statement_mix={"spatial": 2.0}))
    assert all(
        r["statement_type"] == ("spatial" if len(r["objects"]) > 1 else "existence") for r in rows
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n": -1},
        {"n": 10, "image_size": 16},
        {"n": 10, "splits": (0.2, 0.6, 0.6)},
        {"n": 10, "splits": (0.8, -0.1, 0.3)},
        {"n": 10, "statement_mix": {"colour": 1.0}},
        {"n": 10, "statement_mix": {"count": 0.0}},
    ],
)
def test_bad_arguments(tmp_path: Path, kwargs):
    with pytest.raises(ConfigError):
        generate(tmp_path, **kwargs)
