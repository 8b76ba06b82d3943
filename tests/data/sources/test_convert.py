from __future__ import annotations

import json
from pathlib import Path

import pytest

from polymodal.data.quarantine import Quarantine
from polymodal.data.sources.convert import (
    ImageFiles,
    by_split,
    folder_for,
    lacking,
    one_or_by_split,
    read_lists,
    skip,
    split_from_name,
    write_manifest,
)
from polymodal.errors import DataError


def test_split_from_name_takes_the_first_split_word():
    assert split_from_name("annotations/captions_train2014.json") == "train"
    assert split_from_name("v2_OpenEnded_mscoco_val2014_questions.json") == "val"
    assert split_from_name("v2_OpenEnded_mscoco_test-dev2015_questions.json") == "test"
    with pytest.raises(DataError, match=r"dataset_coco.json.*SPLIT=PATH, e.g. train="):
        split_from_name("dataset_coco.json")


def test_by_split_reads_prefixes_and_names():
    files = by_split(["a/captions_val2014.json", "test=b/mine.json"], "captions")
    assert files == {"val": Path("a/captions_val2014.json"), "test": Path("b/mine.json")}
    with pytest.raises(DataError, match=r"captions: two files for split 'train'"):
        by_split(["x_train.json", "train=y.json"], "captions")
    assert one_or_by_split(["coco/images"], "--images") == Path("coco/images")
    assert one_or_by_split(["train=a", "val=b"], "--images") == {
        "train": Path("a"),
        "val": Path("b"),
    }
    assert folder_for({"train": "a"}, "train", "images") == Path("a")
    with pytest.raises(DataError, match=r"no images folder for split 'val'; give it as val="):
        folder_for({"train": "a"}, "val", "images")


def test_read_lists_names_the_key_and_the_format_it_sees(tmp_path: Path):
    questions = tmp_path / "q.json"
    questions.write_text(json.dumps({"data_subtype": "val2014", "questions": []}))
    assert read_lists(questions, ("questions",), "VQA questions")["data_subtype"] == "val2014"
    with pytest.raises(DataError) as err:
        read_lists(questions, ("annotations",), "VQA annotations")
    assert str(err.value) == (
        f"VQA annotations file {questions}: expected a list under 'annotations' at the top level; "
        "its keys are 'data_subtype', 'questions'; it looks like a VQA questions file"
    )
    listed = tmp_path / "list.json"
    listed.write_text("[[1, 2]]")
    with pytest.raises(DataError, match=r"list.json: expected a JSON object .*got a list"):
        read_lists(listed, ("images",), "COCO captions")
    broken = tmp_path / "broken.json"
    broken.write_text('{"images": [')
    with pytest.raises(DataError, match=r"COCO captions file .*broken.json is not valid JSON"):
        read_lists(broken, ("images",), "COCO captions")
    with pytest.raises(DataError, match=r"COCO captions file .*absent.json does not exist"):
        read_lists(tmp_path / "absent.json", ("images",), "COCO captions")


def test_lacking_says_which_field():
    assert lacking({"id": 3, "file_name": "a.jpg"}, {"id": int, "file_name": str}) is None
    assert lacking({"id": "3"}, {"id": int}) == "no 'id' integer"
    assert lacking({"id": True}, {"id": int}) == "no 'id' integer"
    assert lacking([1], {"id": int}) == "expected a JSON object, got list"


def test_image_paths_are_relative_and_looked_for_once(tmp_path: Path):
    (tmp_path / "data" / "a.png").parent.mkdir(parents=True)
    (tmp_path / "data" / "a.png").write_bytes(b"")
    files = ImageFiles(tmp_path / "out")
    assert files.locate(tmp_path / "data" / "a.png") == "../data/a.png"
    assert files.locate(tmp_path / "data" / "b.png") is None
    assert ImageFiles(tmp_path / "out", check=False).locate(tmp_path / "b.png") == "../b.png"


def test_write_manifest_counts_splits_and_lists_what_was_left_out(tmp_path: Path):
    skipped = Quarantine()
    skip(skipped, "src.json", 4, "missing image", "x.png is not a file", "image")
    rows = [{"split": "test", "a": 1}, {"split": "train", "a": "é"}, {"split": "val", "a": 3}]
    conversion = write_manifest(tmp_path, iter(rows), skipped, "test")
    assert conversion.splits == {"train": 1, "val": 1, "test": 1} and conversion.rows == 3
    lines = conversion.manifest.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == rows
    [left_out] = [
        json.loads(line) for line in (tmp_path / "skipped.jsonl").read_text().splitlines()
    ]
    assert left_out == {
        "source": "src.json",
        "line": 5,
        "reason": "missing image",
        "detail": "x.png is not a file",
        "field": "image",
    }
    assert conversion.describe() == (
        f"wrote 3 rows (train 1, val 1, test 1): {tmp_path / 'manifest.jsonl'}\n"
        f"left out 1 entries (missing image 1): {tmp_path / 'skipped.jsonl'}"
    )
    write_manifest(tmp_path, iter(rows), Quarantine(), "test")
    assert not (tmp_path / "skipped.jsonl").exists()


def test_no_row_is_an_error_and_keeps_the_old_manifest(tmp_path: Path):
    (tmp_path / "manifest.jsonl").write_text("old\n")
    skipped = Quarantine()
    skip(skipped, "src.json", 0, "missing image", "x.png is not a file", "image")
    with pytest.raises(DataError) as err:
        write_manifest(tmp_path, iter([]), skipped, "coco-captions")
    assert str(err.value) == (
        "coco-captions: no entry became a row (missing image 1); "
        "e.g. src.json entry 1: x.png is not a file"
    )
    assert (tmp_path / "manifest.jsonl").read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.jsonl"]
