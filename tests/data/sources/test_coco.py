from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from polymodal.data.sources import convert_coco_captions, convert_karpathy, index_manifest
from polymodal.errors import ConfigError, DataError


def write(path: Path, value: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value), encoding="utf-8")
    return path


def touch(folder: Path, *names: str) -> None:
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"")


def rows_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def skipped_of(out: Path) -> list[tuple[str, int, str]]:
    """(list, line, reason) of each entry left out."""
    return [
        (r["source"].rpartition(":")[2], r["line"], r["reason"])
        for r in rows_of(out / "skipped.jsonl")
    ]


def coco_file(path: Path, images: list[Any], annotations: list[Any]) -> Path:
    return write(path, {"info": {}, "images": images, "annotations": annotations})


def image(image_id: int, split: str = "val2014") -> dict[str, Any]:
    return {"id": image_id, "file_name": f"COCO_{split}_{image_id:012d}.jpg", "width": 64}


def test_coco_captions_one_row_per_image_with_every_reference(tmp_path: Path):
    train = coco_file(
        tmp_path / "annotations" / "captions_train2014.json",
        [image(9, "train2014"), image(25, "train2014")],
        [
            {"id": 1, "image_id": 25, "caption": "A giraffe eating leaves.\n"},
            {"id": 2, "image_id": 9, "caption": " A plate of food."},
            {"id": 3, "image_id": 25, "caption": "A tall giraffe by a tree."},
        ],
    )
    val = coco_file(
        tmp_path / "annotations" / "captions_val2014.json",
        [image(42)],
        [{"id": 4, "image_id": 42, "caption": "Two dogs on a couch."}],
    )
    touch(tmp_path / "coco" / "train2014", image(9, "train2014")["file_name"])
    touch(tmp_path / "coco" / "train2014", image(25, "train2014")["file_name"])
    touch(tmp_path / "coco" / "val2014", image(42)["file_name"])
    out = tmp_path / "out"
    conversion = convert_coco_captions(
        out,
        {"train": train, "val": val},
        {"train": tmp_path / "coco" / "train2014", "val": tmp_path / "coco" / "val2014"},
    )
    assert conversion.splits == {"train": 2, "val": 1}
    assert not (out / "skipped.jsonl").exists()
    assert rows_of(conversion.manifest) == [
        {
            "image_id": 9,
            "split": "train",
            "image": "../coco/train2014/COCO_train2014_000000000009.jpg",
            "caption": "A plate of food.",
            "captions": ["A plate of food."],
        },
        {
            "image_id": 25,
            "split": "train",
            "image": "../coco/train2014/COCO_train2014_000000000025.jpg",
            "caption": "A giraffe eating leaves.",
            "captions": ["A giraffe eating leaves.", "A tall giraffe by a tree."],
        },
        {
            "image_id": 42,
            "split": "val",
            "image": "../coco/val2014/COCO_val2014_000000000042.jpg",
            "caption": "Two dogs on a couch.",
            "captions": ["Two dogs on a couch."],
        },
    ]
    index = index_manifest(conversion.manifest)
    assert (out / index.read(0)["image"]).is_file()


def test_coco_captions_bad_entries_are_left_out_with_reasons(tmp_path: Path):
    path = coco_file(
        tmp_path / "captions_val2014.json",
        [image(1), {"id": "2", "file_name": "x.jpg"}, image(3), image(4), image(1)],
        [
            {"image_id": 1, "caption": "a cat"},
            {"image_id": 1},
            {"image_id": 3, "caption": "   "},
            {"image_id": 99, "caption": "a ghost"},
            {"image_id": 4, "caption": "a dog"},
        ],
    )
    touch(tmp_path / "images", image(1)["file_name"], image(3)["file_name"])
    out = tmp_path / "out"
    conversion = convert_coco_captions(out, {"val": path}, tmp_path / "images")
    assert [row["image_id"] for row in rows_of(conversion.manifest)] == [1]
    assert skipped_of(out) == [
        ("images", 2, "malformed entry"),
        ("images", 5, "duplicate id"),
        ("annotations", 2, "malformed entry"),
        ("annotations", 3, "malformed entry"),
        ("annotations", 4, "unknown image"),
        ("images", 3, "no captions"),
        ("images", 4, "missing image"),
    ]
    details = [r["detail"] for r in rows_of(out / "skipped.jsonl")]
    assert details[:4] == [
        "no 'id' integer",
        "image id 1 again",
        "no 'caption' string",
        "an empty 'caption'",
    ]
    assert conversion.skipped.counts() == {
        "malformed entry": 3,
        "duplicate id": 1,
        "unknown image": 1,
        "no captions": 1,
        "missing image": 1,
    }
    unchecked = convert_coco_captions(tmp_path / "o2", {"val": path}, tmp_path / "images", False)
    assert [row["image_id"] for row in rows_of(unchecked.manifest)] == [1, 4]


def test_coco_captions_wrong_files_are_errors(tmp_path: Path):
    questions = write(tmp_path / "q_val.json", {"data_subtype": "val2014", "questions": []})
    with pytest.raises(
        DataError,
        match=r"COCO captions file .*q_val.json: expected a list under "
        r"'images' .*it looks like a VQA questions file",
    ):
        convert_coco_captions(tmp_path / "out", {"val": questions}, tmp_path)
    karpathy = write(tmp_path / "dataset_coco.json", {"images": [], "dataset": "coco"})
    with pytest.raises(DataError, match=r"list under 'annotations'.*a Karpathy split file"):
        convert_coco_captions(tmp_path / "out", {"val": karpathy}, tmp_path)
    path = coco_file(tmp_path / "c.json", [image(1)], [{"image_id": 1, "caption": "a cat"}])
    with pytest.raises(DataError, match=r"no images folder for split 'val'"):
        convert_coco_captions(tmp_path / "out", {"val": path}, {"train": tmp_path})
    with pytest.raises(
        DataError, match=r"coco-captions: no entry became a row \(missing image 1\)"
    ):
        convert_coco_captions(tmp_path / "out", {"val": path}, tmp_path / "nowhere")
    assert not (tmp_path / "out" / "manifest.jsonl").exists()


def karpathy_entry(imgid: int, split: str, *raws: str, **extra: Any) -> dict[str, Any]:
    sentences = [{"tokens": raw.lower().split(), "raw": raw, "imgid": imgid} for raw in raws]
    entry = {"filename": f"{imgid}.jpg", "imgid": imgid, "split": split, "sentences": sentences}
    return {**entry, **extra}


def test_karpathy_splits_restval_and_flickr_layout(tmp_path: Path):
    path = write(
        tmp_path / "dataset_coco.json",
        {
            "dataset": "coco",
            "images": [
                karpathy_entry(
                    0, "test", "A man riding.", "A rider.", filepath="val2014", cocoid=7
                ),
                karpathy_entry(1, "restval", "A bus.", filepath="val2014", cocoid=8),
                karpathy_entry(2, "train", "A cat.", filepath="train2014", cocoid=9),
                karpathy_entry(3, "val", "A dog."),  # Flickr: no filepath, no cocoid
            ],
        },
    )
    touch(tmp_path / "images", "val2014/0.jpg", "val2014/1.jpg", "train2014/2.jpg", "3.jpg")
    merged = convert_karpathy(tmp_path / "a", path, tmp_path / "images")
    assert merged.splits == {"train": 2, "val": 1, "test": 1}
    rows = rows_of(merged.manifest)
    assert rows[0] == {
        "image_id": 7,
        "split": "test",
        "image": "../images/val2014/0.jpg",
        "caption": "A man riding.",
        "captions": ["A man riding.", "A rider."],
    }
    assert [(r["image_id"], r["split"], r["image"]) for r in rows[1:]] == [
        (8, "train", "../images/val2014/1.jpg"),
        (9, "train", "../images/train2014/2.jpg"),
        (3, "val", "../images/3.jpg"),
    ]
    kept = convert_karpathy(tmp_path / "b", path, tmp_path / "images", restval="restval")
    assert kept.splits == {"train": 1, "val": 1, "test": 1, "restval": 1}
    with pytest.raises(ConfigError, match=r"restval 'val': use one of train, restval"):
        convert_karpathy(tmp_path / "c", path, tmp_path / "images", restval="val")


def test_karpathy_bad_entries_and_files(tmp_path: Path):
    path = write(
        tmp_path / "dataset_flickr8k.json",
        {
            "images": [
                karpathy_entry(0, "train", "A dog runs."),
                karpathy_entry(1, "holdout", "A cat."),
                {"filename": "2.jpg", "imgid": 2, "split": "train"},
                karpathy_entry(3, "train"),
                {**karpathy_entry(4, "train"), "sentences": [{"tokens": ["a"]}]},
                karpathy_entry(5, "test", "A bird."),
            ]
        },
    )
    touch(tmp_path / "images", "0.jpg")
    out = tmp_path / "out"
    conversion = convert_karpathy(out, path, tmp_path / "images")
    assert conversion.splits == {"train": 1}
    assert skipped_of(out) == [
        ("images", 2, "malformed entry"),
        ("images", 3, "malformed entry"),
        ("images", 4, "no captions"),
        ("images", 5, "malformed entry"),
        ("images", 6, "missing image"),
    ]
    details = [r["detail"] for r in rows_of(out / "skipped.jsonl")]
    assert details[:2] == [
        "split 'holdout' is none of train, val, test, restval",
        "no 'sentences' list",
    ]
    coco = coco_file(tmp_path / "captions_val2014.json", [image(1)], [])
    with pytest.raises(DataError, match=r"'annotations' list: it looks like a COCO captions file"):
        convert_karpathy(tmp_path / "o2", coco, tmp_path / "images")
    with pytest.raises(DataError, match=r"karpathy: no entry became a row \(malformed entry 1\)"):
        convert_karpathy(tmp_path / "o3", write(tmp_path / "k.json", {"images": [[]]}), tmp_path)
