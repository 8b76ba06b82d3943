"""A VQA v2 round trip: official question and annotation files are converted, a tiny model trains
on them, answers every question, writes the official results files, and those score the same
by ``polymodal eval vqa``, by ``polymodal.metrics`` and by the model's own evaluation, overall
and per question type and answer type."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from PIL import Image

from polymodal.cli import main
from polymodal.config import load_config
from polymodal.data.sources import write_vqa_results
from polymodal.evaluate.run import evaluate_run
from polymodal.metrics.vqa import vqa_scores, vqa_scores_from_files
from polymodal.predictor import Predictor
from polymodal.train.run import RunResult, run_training

COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 200, 30)}
# data_subtype of each split's files, and the colours of its images
SPLITS = {
    "train": ("train2014", ["red", "blue", "green", "red"]),
    "val": ("val2014", ["blue", "green"]),
    "test": ("test2015", ["red", "blue"]),
}


def _entries(qid: int, image_id: int, colour: str) -> list[tuple[dict, dict]]:
    """Three questions about one image, each with its annotation of ten human answers."""
    asked = [
        (
            "What color is the square?",
            "what color is the",
            "other",
            [colour] * 8 + [colour.title(), f"dark {colour}"],
        ),
        (
            "Is the square red?",
            "is the",
            "yes/no",
            ["yes" if colour == "red" else "no"] * 9 + ["no" if colour == "red" else "yes"],
        ),
        ("How many squares are there?", "how many", "number", ["1"] * 6 + ["one"] * 3 + ["2"]),
    ]
    pairs = []
    for offset, (text, question_type, answer_type, answers) in enumerate(asked):
        question = {"image_id": image_id, "question": text, "question_id": qid + offset}
        annotation = {
            "question_type": question_type,
            "multiple_choice_answer": answers[0],
            "answers": [
                {"answer": a, "answer_confidence": "yes", "answer_id": i + 1}
                for i, a in enumerate(answers)
            ],
            "image_id": image_id,
            "answer_type": answer_type,
            "question_id": qid + offset,
        }
        pairs.append((question, annotation))
    return pairs


def _write_json(path: Path, value: Any) -> Path:
    path.write_text(json.dumps(value), encoding="utf-8")
    return path


def _write_vqa(root: Path) -> dict[str, tuple[Path, Path]]:
    """Each split's official questions and annotations files, its images named as COCO names
    them: 8 images, 24 questions."""
    files = {}
    image_id = 1
    for split, (subtype, colours) in SPLITS.items():
        questions, answered = [], []
        for colour in colours:
            folder = root / "images" / split
            folder.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (16, 16), COLOURS[colour]).save(
                folder / f"COCO_{subtype}_{image_id:012d}.jpg"
            )
            for question, annotation in _entries(image_id * 10, image_id, colour):
                questions.append(question)
                answered.append(annotation)
            image_id += 1
        head = {"info": {}, "task_type": "Open-Ended", "data_type": "mscoco"}
        files[split] = (
            _write_json(
                root / f"v2_OpenEnded_mscoco_{subtype}_questions.json",
                {**head, "data_subtype": subtype, "questions": questions},
            ),
            _write_json(
                root / f"v2_mscoco_{subtype}_annotations.json",
                {"data_type": "mscoco", "data_subtype": subtype, "annotations": answered},
            ),
        )
    return files


def _cli(capsys: pytest.CaptureFixture[str], *argv: Any) -> str:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def _train(root: Path, manifest: Path) -> RunResult:
    config = {
        "name": "vqa_round_trip",
        "seed": 0,
        "data": {"manifest": str(manifest), "image": {"size": 16}, "cache": "memory"},
        "model": {
            "inputs": ["image", "question"],
            "encoders": {
                "image": {"type": "cnn", "dim": 16, "channels": [8, 8]},
                "question": {"type": "bag", "dim": 16},
            },
            "fusion": {"type": "concat", "dim": 16},
            "tasks": [{"type": "vqa", "target": "answers", "hidden": 16}],
        },
        "train": {"epochs": 10, "batch_size": 4, "lr": 0.05, "out_dir": str(root / "runs")},
    }
    path = root / "vqa.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return run_training(load_config(path), log=lambda _: None)


def test_vqa_v2_files_train_predict_and_score_the_same_everywhere(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    files = _write_vqa(tmp_path)
    out = tmp_path / "converted"
    _cli(
        capsys,
        "data",
        "convert",
        "vqa",
        "--questions",
        *(f"{split}={q}" for split, (q, _) in files.items()),
        "--annotations",
        *(f"{split}={a}" for split, (_, a) in files.items()),
        "--images",
        *(f"{split}={tmp_path / 'images' / split}" for split in files),
        "--out",
        out,
    )
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 24 and {r["split"] for r in rows} == set(SPLITS)
    assert all(len(r["answers"]) == 10 for r in rows)

    result = _train(tmp_path, out / "manifest.jsonl")
    predictor = Predictor.from_pretrained(result.model_dir)
    predicted = predictor.predict(
        [{"image": r["image"], "question": r["question"]} for r in rows], base_dir=out
    )
    answers = {
        r["question_id"]: p["vqa_answers"]["answer"] for r, p in zip(rows, predicted, strict=True)
    }

    for split, (questions, annotated) in files.items():
        asked = {r["question_id"] for r in rows if r["split"] == split}
        results = write_vqa_results(
            {qid: answer for qid, answer in answers.items() if qid in asked},
            tmp_path / f"{split}_results.json",
        )
        printed = _cli(
            capsys,
            "eval",
            "vqa",
            "--questions",
            questions,
            "--annotations",
            annotated,
            "--predictions",
            results,
        )
        direct = vqa_scores(*(json.loads(p.read_text()) for p in (questions, annotated, results)))
        assert vqa_scores_from_files(questions, annotated, results) == direct
        # the same numbers to the last bit; JSON only turns the question ids into strings
        assert json.loads(printed) == json.loads(json.dumps(direct))
        assert set(direct["per_answer_type"]) == {"other", "yes/no", "number"}
        assert set(direct["per_question_type"]) == {"what color is the", "is the", "how many"}
        assert set(direct["per_question"]) == asked
        assert 0 <= direct["overall"] <= 1
        if split == "test":
            own = result.test["vqa_answers"]
            assert own["rows"] == len(asked)
            assert own["vqa_accuracy"] == direct["overall"]
            official_test = direct

    # `polymodal eval RUN` slices a VQA model by question and answer type unasked
    slices = evaluate_run(result.run_dir)["slices"]
    for column in ("question_type", "answer_type"):
        ours = {
            value: scored["tasks"]["vqa_answers"]["vqa_accuracy"]
            for value, scored in slices[column].items()
        }
        assert ours == pytest.approx(official_test[f"per_{column}"], abs=1e-12)
        for value, scored in slices[column].items():
            interval = scored["intervals"]["vqa_answers"]["vqa_accuracy"]
            assert interval["estimate"] == pytest.approx(ours[value], abs=1e-12)
            assert interval["low"] <= interval["estimate"] <= interval["high"]
