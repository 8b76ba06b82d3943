"""ShapeWorld: determinism, layout, and answers and labels checked against the scene objects."""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import defaultdict
from itertools import combinations, pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
from PIL import Image

import polymodal
from polymodal.config import load_config
from polymodal.data.shapeworld import COLOURS, PITCH_HZ, SHAPES, SIZES, SOUND_SECONDS, generate
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


# sha256 of seed 3's 60-scene manifest.jsonl as written before the count column: images and
# texts draw from one random stream, so a draw added or lost anywhere would change it
MANIFEST_BEFORE_COUNT = "c12277afc02a38fe68705370256950612a13439ce4043ebf59989721d1d6b3a9"


def test_same_seed_same_bytes(tmp_path: Path):
    a = generate(tmp_path / "a", n=60, seed=3).parent
    b = generate(tmp_path / "b", n=60, seed=3, progress=True).parent
    c = generate(tmp_path / "c", n=60, seed=4).parent
    for name in ("manifest.jsonl", "questions.jsonl", "vqa.jsonl", "captions.jsonl"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
        assert (a / name).read_bytes() != (c / name).read_bytes()
    pngs = sorted(p.name for p in (a / "images").iterdir())
    assert pngs == [f"{i:06d}.png" for i in range(60)]
    assert all((a / "images" / p).read_bytes() == (b / "images" / p).read_bytes() for p in pngs)
    assert any((a / "images" / p).read_bytes() != (c / "images" / p).read_bytes() for p in pngs)
    without_count = "".join(
        json.dumps({k: v for k, v in row.items() if k != "count"}) + "\n"
        for row in read_jsonl(a / "manifest.jsonl")
    )
    assert hashlib.sha256(without_count.encode()).hexdigest() == MANIFEST_BEFORE_COUNT


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
        assert row["count"] == len(objects)
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


def test_vqa_view_is_the_questions_with_vqa_names(world):
    manifest, _ = world
    vqa = read_jsonl(manifest.parent / "vqa.jsonl")
    renamed = [
        {
            "id": v["question_id"],
            "scene": v["scene"],
            "split": v["split"],
            "image": v["image"],
            "question": v["question"],
            "answer": v["answer"],
            "type": v["question_type"],
        }
        for v in vqa
    ]
    assert renamed == read_jsonl(manifest.parent / "questions.jsonl")
    for v in vqa:
        yes_no = v["answer"] in ("yes", "no")
        expected = "yes/no" if yes_no else "number" if v["question_type"] == "count" else "other"
        assert v["answer_type"] == expected, v
    assert {v["answer_type"] for v in vqa} == {"yes/no", "number", "other"}


def test_captioning_view_lists_every_wording(world):
    manifest, rows = world
    views = read_jsonl(manifest.parent / "captions.jsonl")
    head = ("id", "split", "image", "caption")
    assert [tuple(v[k] for k in head) for v in views] == [tuple(r[k] for k in head) for r in rows]
    drawn: dict[int, set[int]] = defaultdict(set)
    for view, row in zip(views, rows, strict=True):
        phrases = [f"a {o['size']} {o['colour']} {o['shape']}" for o in row["objects"]]
        assert len(set(view["captions"])) == len(view["captions"]) == 4
        assert all(p in caption for p in phrases for caption in view["captions"])
        drawn[len(phrases)].add(view["captions"].index(view["caption"]))
    assert drawn == {1: {0, 1, 2, 3}, 2: {0, 1, 2, 3}, 3: {0, 1, 2, 3}}


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


# --- the sound track and the labels for three modalities -------------------------------------

AREA = {"circle": math.pi / 4, "square": 1.0, "triangle": 0.5}  # of the bounding square


def area(obj: Obj) -> float:
    return AREA[obj["shape"]] * WIDTH_AT_64[obj["size"]] ** 2


def decode(path: Path) -> list[Obj]:
    """The objects a sound plays, read from the signal: each half-second slot's steady part
    gives the colour (the strongest frequency), the shape (the 2nd and 3rd harmonics: none, odd
    only, or both) and the size (how loud the tone is for its shape)."""
    samples, rate = soundfile.read(path)
    objects = []
    for slot in range(3):
        part = samples[round((slot * 0.5 + 0.1) * rate) : round((slot * 0.5 + 0.4) * rate)]
        rms = float(np.sqrt(np.mean(part**2)))
        if rms < 0.02:  # noise only: no more objects
            assert np.sqrt(np.mean(samples[round(slot * 0.5 * rate) :] ** 2)) < 0.02
            break
        spectrum = np.abs(np.fft.rfft(part * np.hanning(len(part))))
        hz = np.fft.rfftfreq(len(part), 1 / rate)
        peak = hz[np.argmax(spectrum)]

        def near(f: float, spectrum: np.ndarray = spectrum, hz: np.ndarray = hz) -> float:
            return float(spectrum[np.abs(hz - f) < 8].max())

        colour = min(PITCH_HZ, key=lambda c: abs(PITCH_HZ[c] - peak))
        assert abs(PITCH_HZ[colour] - peak) / PITCH_HZ[colour] < 0.02, (path, slot, peak)
        second, third = near(2 * peak) / near(peak), near(3 * peak) / near(peak)
        shape = "circle" if third < 0.1 else "square" if second < 0.1 else "triangle"
        # the loudest tone, a large square's, has an RMS of 0.2: the others as their area
        small, large = (0.2 * area({"shape": shape, "size": s}) / 400 for s in SIZES)
        size = "small" if rms < math.sqrt(small * large) else "large"
        objects.append({"shape": shape, "colour": colour, "size": size})
    return objects


@pytest.fixture(scope="module")
def heard(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Row]]:
    """600 scenes with their sound."""
    out = tmp_path_factory.mktemp("shapeworld_sound") / "world"
    manifest = generate(out, n=600, seed=5, sound=True)
    return manifest, read_jsonl(manifest)


def test_the_sound_leaves_every_other_file_as_it_was(tmp_path: Path):
    quiet = generate(tmp_path / "quiet", n=40, seed=2).parent
    loud = generate(tmp_path / "loud", n=40, seed=2, sound=True).parent
    assert not (quiet / "sounds").exists()
    for name in ["questions.jsonl"] + [f"images/{i:06d}.png" for i in range(40)]:
        assert (quiet / name).read_bytes() == (loud / name).read_bytes(), name
    sound_columns = {"audio", "paired_audio", "trimodal"}
    quiet_rows, loud_rows = (
        read_jsonl(quiet / "manifest.jsonl"),
        read_jsonl(loud / "manifest.jsonl"),
    )
    for a, b in zip(quiet_rows, loud_rows, strict=True):
        assert set(b) - set(a) == sound_columns
        assert a == {k: v for k, v in b.items() if k not in sound_columns}
    again = generate(tmp_path / "again", n=40, seed=2, sound=True).parent
    other = generate(tmp_path / "other", n=40, seed=3, sound=True).parent
    wavs = sorted(p.name for p in (loud / "sounds").iterdir())
    assert wavs == sorted(p.name for p in (again / "sounds").iterdir())
    assert all(
        (loud / "sounds" / w).read_bytes() == (again / "sounds" / w).read_bytes() for w in wavs
    )
    assert (loud / "sounds/000000.wav").read_bytes() != (other / "sounds/000000.wav").read_bytes()


def test_sound_files(heard):
    manifest, rows = heard
    for row in rows[:100]:
        assert row["audio"] == f"sounds/{row['id']}.wav"
        assert row["paired_audio"] in (row["audio"], f"sounds/{row['id']}_other.wav")
        for column in ("audio", "paired_audio"):
            info = soundfile.info(manifest.parent / row[column])
            assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
            assert info.frames == round(SOUND_SECONDS * 16000) == 24000
    written = {p.name for p in (manifest.parent / "sounds").iterdir()}
    assert written == {Path(r[c]).name for r in rows for c in ("audio", "paired_audio")}


def test_the_sound_plays_each_object_left_to_right(heard):
    manifest, rows = heard
    for row in rows[:150]:
        played = decode(manifest.parent / row["audio"])
        assert played == [{k: o[k] for k in ("shape", "colour", "size")} for o in row["objects"]]


def test_largest_is_seen_read_and_heard(world, heard):
    _, rows = world
    assert {r["largest"] for r in rows} == set(SHAPES)
    for row in rows:
        objects = row["objects"]
        biggest = max(area(o) for o in objects)
        assert {o["shape"] for o in objects if area(o) == biggest} == {row["largest"]}
        named = re.findall(r"\b(small|large) \w+ (circle|square|triangle)", row["caption"])
        assert len(named) == len(objects)
        assert max(named, key=lambda p: area({"size": p[0], "shape": p[1]}))[1] == row["largest"]
    manifest, rows = heard
    for row in rows[:100]:
        samples, rate = soundfile.read(manifest.parent / row["audio"])
        slots = [
            samples[round((k * 0.5 + 0.1) * rate) : round((k * 0.5 + 0.4) * rate)] for k in range(3)
        ]
        loudest = int(np.argmax([np.sqrt(np.mean(s**2)) for s in slots]))
        assert row["objects"][loudest]["shape"] == row["largest"]


def test_the_trimodal_label_needs_all_three(heard):
    """Image + text know whether the statement holds (s), image + sound whether the sound is
    the image's (m), text + sound whether the statement holds of the sound's scene, which is s
    again; the label is s and m: each pair is left with a fair coin."""
    manifest, rows = heard
    known: dict[str, list[tuple[Any, str]]] = defaultdict(list)
    by_text: dict[str, list[bool]] = defaultdict(list)
    played: dict[tuple[bool, bool], list[list[Obj]]] = defaultdict(list)
    for row in rows:
        objects = row["objects"]
        s, m = row["label"] == "true", row["paired_audio"] == row["audio"]
        assert row["trimodal"] == ("true" if s and m else "false")
        sound = decode(manifest.parent / row["paired_audio"])
        scene = [{k: o[k] for k in ("shape", "colour", "size")} for o in objects]
        assert (sound == scene) == m
        t = statement_truth(row["statement"], [{**o, "x": k} for k, o in enumerate(sound)])[1]
        assert t == s
        for pair, value in (("image+text", s), ("image+audio", m), ("text+audio", t)):
            known[pair].append((value, row["trimodal"]))
        by_text[row["statement"]].append(m)
        played[s, m].append(sound)
    assert abs(sum(r["paired_audio"] == r["audio"] for r in rows) / len(rows) - 0.5) < 0.06
    for pair, pairs in known.items():  # the best guess from what the pair knows
        groups: dict[Any, list[str]] = defaultdict(list)
        for value, label in pairs:
            groups[value].append(label)
        best = sum(max(labels.count("true"), labels.count("false")) for labels in groups.values())
        assert best / len(pairs) <= 0.8, pair  # 0.75 but for the coin flips' spread
    # Whether the sound is the scene's is a fair coin whatever the statement says ...
    frequent = [ms for ms in by_text.values() if len(ms) >= 10]
    assert len(frequent) >= 15
    chi2 = sum((sum(ms) - len(ms) / 2) ** 2 / (len(ms) / 4) for ms in frequent)
    assert chi2 / len(frequent) < 1.6
    # ... and a stand-in sounds like the scene would: as many objects, as large, as coloured
    for s in (False, True):
        own, other = played[s, True], played[s, False]
        for count in (1, 2, 3):
            shares = [sum(len(o) == count for o in sounds) / len(sounds) for sounds in (own, other)]
            assert abs(shares[0] - shares[1]) < 0.1, (s, count, shares)
        for key, values in (("size", SIZES), ("colour", COLOURS), ("shape", SHAPES)):
            for value in values:
                shares = [
                    sum(o[key] == value for objs in sounds for o in objs) / sum(map(len, sounds))
                    for sounds in (own, other)
                ]
                assert abs(shares[0] - shares[1]) < 0.08, (s, key, value, shares)


@pytest.mark.parametrize(
    ("name", "target", "inputs"),
    [
        ("shapeworld_trimodal", "trimodal", ("image", "statement", "paired_audio")),
        ("shapeworld_largest", "largest", ("image", "caption", "audio")),
    ],
)
def test_the_packaged_configs_read_the_manifest_s_columns(heard, name, target, inputs):
    manifest, rows = heard
    path = Path(polymodal.__file__).parent / "configs" / f"{name}.yaml"
    config = load_config(path, [f"data.manifest={manifest}"])
    fields = config.data.fields
    assert fields is not None and set(fields) <= set(rows[0])
    kinds = {k: v.kind for k, v in fields.items() if v.role == "input"}
    assert kinds == dict(zip(inputs, ("image", "text", "audio"), strict=True))
    assert fields[target].labels == sorted({r[target] for r in rows})
