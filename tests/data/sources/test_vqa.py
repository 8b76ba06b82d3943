from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from polymodal.data.sources import convert_vqa, write_vqa_results
from polymodal.errors import DataError
from polymodal.metrics.vqa import vqa_scores, vqa_scores_from_files


def write(path: Path, value: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value), encoding="utf-8")
    return path


def rows_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def question(qid: int, image_id: int, text: str) -> dict[str, Any]:
    return {"image_id": image_id, "question": text, "question_id": qid}


def annotation(qid: int, image_id: int, answers: list[str], **types: str) -> dict[str, Any]:
    return {
        "question_type": types.get("question_type", "what color is the"),
        "multiple_choice_answer": answers[0],
        "answers": [
            {"answer": a, "answer_confidence": "yes", "answer_id": i + 1}
            for i, a in enumerate(answers)
        ],
        "image_id": image_id,
        "answer_type": types.get("answer_type", "other"),
        "question_id": qid,
    }


def questions_file(path: Path, subtype: str | None, entries: list[Any]) -> Path:
    head = {"info": {}, "task_type": "Open-Ended", "data_type": "mscoco"}
    return write(
        path, {**head, **({"data_subtype": subtype} if subtype else {}), "questions": entries}
    )


def image_name(subtype: str, image_id: int) -> str:
    return f"COCO_{subtype}_{image_id:012d}.jpg"


@pytest.fixture
def vqa_files(tmp_path: Path) -> dict[str, Path]:
    """train2014 (3 questions, 2 annotated), val2014 (2, annotated), test-dev2015 (1)."""
    ten = ["red"] * 7 + ["dark red"] * 3
    files = {
        "train_q": questions_file(
            tmp_path / "v2_OpenEnded_mscoco_train2014_questions.json",
            "train2014",
            [
                question(90, 9, "What color is the bus?"),
                question(91, 9, "Is it raining?"),
                question(250, 25, "How many giraffes?"),
            ],
        ),
        "train_a": write(
            tmp_path / "v2_mscoco_train2014_annotations.json",
            {
                "data_subtype": "train2014",
                "annotations": [
                    annotation(90, 9, ten),
                    annotation(250, 25, ["2"] * 10, question_type="how many", answer_type="number"),
                    annotation(777, 77, ["yes"] * 10),  # no such question
                ],
            },
        ),
        "val_q": questions_file(
            tmp_path / "v2_OpenEnded_mscoco_val2014_questions.json",
            "val2014",
            [question(420, 42, "Is there a dog?"), question(421, 42, "Is there a cat?")],
        ),
        "val_a": write(
            tmp_path / "v2_mscoco_val2014_annotations.json",
            {
                "annotations": [
                    annotation(
                        420, 42, ["yes"] * 10, question_type="is there a", answer_type="yes/no"
                    ),
                    annotation(
                        421,
                        42,
                        ["no"] * 9 + ["yes"],
                        question_type="is there a",
                        answer_type="yes/no",
                    ),
                ]
            },
        ),
        "test_q": questions_file(
            tmp_path / "v2_OpenEnded_mscoco_test-dev2015_questions.json",
            "test2015",
            [question(5, 1, "What is this?")],
        ),
        "pairs": write(tmp_path / "v2_mscoco_val2014_complementary_pairs.json", [[420, 421], [1]]),
    }
    for subtype, image_id in (
        ("train2014", 9),
        ("train2014", 25),
        ("val2014", 42),
        ("test2015", 1),
    ):
        path = tmp_path / "coco" / subtype / image_name(subtype, image_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    return files


def test_vqa_rows_with_answers_types_and_complements(tmp_path: Path, vqa_files: dict[str, Path]):
    out = tmp_path / "out"
    images = {
        s: tmp_path / "coco" / d
        for s, d in (("train", "train2014"), ("val", "val2014"), ("test", "test2015"))
    }
    conversion = convert_vqa(
        out,
        {"train": vqa_files["train_q"], "val": vqa_files["val_q"], "test": vqa_files["test_q"]},
        images,
        {"train": vqa_files["train_a"], "val": vqa_files["val_a"]},
        [vqa_files["pairs"]],
    )
    assert conversion.splits == {"train": 2, "val": 2, "test": 1}
    rows = rows_of(conversion.manifest)
    assert rows[0] == {
        "question_id": 90,
        "split": "train",
        "image": "../coco/train2014/COCO_train2014_000000000009.jpg",
        "image_id": 9,
        "question": "What color is the bus?",
        "answer": "red",
        "answers": ["red"] * 7 + ["dark red"] * 3,
        "question_type": "what color is the",
        "answer_type": "other",
    }
    assert [(r["question_id"], r.get("complement")) for r in rows] == [
        (90, None),
        (250, None),
        (420, 421),
        (421, 420),
        (5, None),
    ]
    assert rows[-1] == {
        "question_id": 5,
        "split": "test",
        "image": "../coco/test2015/COCO_test2015_000000000001.jpg",
        "image_id": 1,
        "question": "What is this?",
    }
    left_out = [
        (Path(r["source"]).name, r["line"], r["reason"]) for r in rows_of(out / "skipped.jsonl")
    ]
    assert left_out == [
        ("v2_mscoco_val2014_complementary_pairs.json", 2, "malformed entry"),
        ("v2_OpenEnded_mscoco_train2014_questions.json:questions", 2, "no annotation"),
        ("v2_mscoco_train2014_annotations.json:annotations", 3, "no question"),
    ]


def test_vqa_results_round_trip_through_the_official_scorer(
    tmp_path: Path, vqa_files: dict[str, Path]
):
    conversion = convert_vqa(
        tmp_path / "out",
        {"val": vqa_files["val_q"]},
        tmp_path / "coco" / "val2014",
        {"val": vqa_files["val_a"]},
    )
    predictions = {row["question_id"]: "yes" for row in rows_of(conversion.manifest)}
    results = write_vqa_results(predictions, tmp_path / "results.json")
    assert json.loads(results.read_text()) == [
        {"question_id": 420, "answer": "yes"},
        {"question_id": 421, "answer": "yes"},
    ]
    scores = vqa_scores_from_files(vqa_files["val_q"], vqa_files["val_a"], results)
    assert scores["per_question"] == {420: 1.0, 421: pytest.approx(0.3)}
    loaded = [json.loads(p.read_text()) for p in (vqa_files["val_q"], vqa_files["val_a"], results)]
    assert vqa_scores(*loaded) == scores
    with pytest.raises(DataError, match=r"question 7: the answer must be a string"):
        write_vqa_results({7: 3}, tmp_path / "bad.json")


def test_vqa_wrong_files_are_errors_naming_file_and_key(tmp_path: Path, vqa_files: dict[str, Path]):
    images = tmp_path / "coco" / "val2014"
    out = tmp_path / "out"
    swapped = {"val": vqa_files["val_a"]}
    with pytest.raises(DataError) as err:
        convert_vqa(out, {"val": vqa_files["val_q"]}, images, {"val": vqa_files["val_q"]})
    assert "VQA annotations file" in str(err.value)
    assert "expected a list under 'annotations'" in str(err.value)
    assert str(err.value).endswith("it looks like a VQA questions file")
    with pytest.raises(
        DataError,
        match=r"VQA questions file .*: expected a list under 'questions'.*"
        r"an annotations file",
    ):
        convert_vqa(out, swapped, images, swapped)
    with pytest.raises(
        DataError,
        match=r"annotations file .*train2014_annotations.json answers none "
        r"of the questions of .*val2014_questions.json; are the two files",
    ):
        convert_vqa(out, {"val": vqa_files["val_q"]}, images, {"val": vqa_files["train_a"]})
    with pytest.raises(
        DataError, match=r"annotations for split\(s\) train, which no questions file has"
    ):
        convert_vqa(out, {"val": vqa_files["val_q"]}, images, {"train": vqa_files["train_a"]})
    with pytest.raises(DataError, match=r"image pattern '\{id\}.jpg': unknown field \{id\}"):
        convert_vqa(out, {"val": vqa_files["val_q"]}, images, image_pattern="{id}.jpg")
    with pytest.raises(DataError, match=r"image pattern '\{split:d\}.jpg': Unknown format code"):
        convert_vqa(out, {"val": vqa_files["val_q"]}, images, image_pattern="{split:d}.jpg")
    with pytest.raises(DataError, match=r"complementary pairs file .*: expected a list of"):
        convert_vqa(out, {"val": vqa_files["val_q"]}, images, pairs=[vqa_files["val_a"]])
    with pytest.raises(
        DataError,
        match=r"VQA annotations file .*: no usable annotation \(entry 1: "
        r"no 'multiple_choice_answer' string\)",
    ):
        bad = write(tmp_path / "bad.json", {"annotations": [{"question_id": 420}]})
        convert_vqa(out, {"val": vqa_files["val_q"]}, images, {"val": bad})
    assert not out.exists() or not any(out.iterdir())


def test_vqa_subtype_pattern_and_missing_images(tmp_path: Path):
    path = questions_file(
        tmp_path / "my_val_questions.json",
        None,
        [question(1, 3, "What?"), {"question_id": 2, "image_id": 3}, question(3, 4, "Who?")],
    )
    out = tmp_path / "out"
    with pytest.raises(
        DataError,
        match=r"my_val_questions.json: no 'data_subtype' string .*"
        r"give an image pattern without \{data_subtype\}",
    ):
        convert_vqa(out, {"val": path}, tmp_path)
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "val-3.png").write_bytes(b"")
    conversion = convert_vqa(
        out, {"val": path}, tmp_path / "img", image_pattern="{split}-{image_id}.png"
    )
    assert [(r["question_id"], r["image"]) for r in rows_of(conversion.manifest)] == [
        (1, "../img/val-3.png")
    ]
    assert conversion.skipped.counts() == {"malformed entry": 1, "missing image": 1}
    details = [r.detail for r in conversion.skipped.rows]
    assert details == ["no 'question' string", f"{tmp_path / 'img' / 'val-4.png'} is not a file"]
