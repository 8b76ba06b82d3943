"""The vqa task: soft targets over the answer vocabulary, BCE, the official VQA accuracy, top
answers in predictions, and a tiny run that trains, saves, reloads and answers."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from polymodal.config import DataConfig, FieldSpec, VQAConfig, load_config, task_targets
from polymodal.data.pipeline import Preprocessor
from polymodal.data.schema import Schema
from polymodal.errors import ConfigError
from polymodal.metrics.vqa import answer_accuracy, vqa_scores
from polymodal.predictor import Predictor
from polymodal.tasks import TASKS, VQA, TaskContext
from polymodal.train.run import run_training
from tests.conftest import COLOURS, write_png

VARIANTS = ["yes", "Yes", "no", "2", "two", "Two", "red", "a red", "blue", "cat", "dog"]


def _preprocessor(rows: list[dict], tmp_path: Path) -> Preprocessor:
    schema = Schema({"answer": FieldSpec(kind="answers", role="target")})
    pre = Preprocessor.build(schema, DataConfig(manifest=tmp_path / "m.jsonl"))
    return pre.fit(rows)


def _task(pre: Preprocessor, top_k: int = 100) -> VQA:
    context = TaskContext(pre, {"image": 4}, 4, "model.tasks.0")
    return VQA.from_config(VQAConfig(target="answer", top_k=top_k, hidden=8), context)


def _batch(pre: Preprocessor, rows: list[dict], tmp_path: Path):
    return pre.collate([pre.example(row, tmp_path) for row in rows])


def test_vqa_is_a_task_whose_target_reads_as_answers():
    assert TASKS["vqa"] is VQA and VQA.uses_fusion
    config = VQAConfig(target="answer")
    assert config.name == "vqa_answer" and config.targets == ["answer"]
    assert config.top_k == 3000


def test_dense_soft_targets_keep_the_top_k(tmp_path: Path):
    rows = [{"answer": ["yes"] * 6 + ["no"] * 4}, {"answer": "yes"}, {"answer": "cat"}]
    pre = _preprocessor([*rows, {"answer": "dog"}], tmp_path)
    task = _task(pre, top_k=2)
    assert task.answers == ["yes", "cat"] and task.coverage == 3 / 4
    assert task.describe() == [
        "answers 'answer': the 2 most frequent cover 75.0% of the train questions"
    ]
    batch = _batch(pre, [*rows, {"answer": "dog"}, {"answer": ["no"] * 10}, {}], tmp_path)
    dense = task.answer_scores(batch)
    # "dog" is past the top 2 and "no" nobody's consensus: they score nothing
    expected = [[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]
    assert dense[..., 0].tolist() == expected  # VQA scores
    assert dense[..., 1].tolist() == expected  # consensus


def test_loss_is_bce_over_the_answers_of_rows_with_answers(tmp_path: Path):
    rows = [{"answer": ["yes"] * 3 + ["cat"] * 7}, {"answer": None}, {"answer": "yes"}]
    pre = _preprocessor(rows, tmp_path)
    task = _task(pre)
    batch = _batch(pre, rows, tmp_path)
    logits = torch.tensor([[0.5, -1.0], [9.0, 9.0], [2.0, 0.0]])
    soft = torch.tensor([[1.0, answer_accuracy("yes", rows[0]["answer"])], [0.0, 1.0]])
    expected = F.binary_cross_entropy_with_logits(logits[[0, 2]], soft, reduction="sum") / 2
    assert task.answers == ["cat", "yes"]
    assert float(task.loss(logits, batch)) == pytest.approx(float(expected))
    none = _batch(pre, [{"answer": None}], tmp_path)
    grad = logits[:1].clone().requires_grad_()
    task.loss(grad, none).backward()
    assert grad.grad is not None and not grad.grad.any()


def test_accuracy_equals_the_official_vqa_accuracy(tmp_path: Path):
    """The task's vqa_accuracy, to the last bit, is what polymodal.metrics.vqa gives the same
    top answers written as an official results file."""
    generator = random.Random(1)
    rows = [{"answer": [generator.choice(VARIANTS) for _ in range(10)]} for _ in range(200)] + [
        {"answer": [answer] * 10} for answer in VARIANTS
    ]
    pre = _preprocessor(rows, tmp_path)
    task = _task(pre, top_k=5)  # some consensus answers fall outside: they score 0
    batch = _batch(pre, rows, tmp_path)
    torch.manual_seed(0)
    logits = torch.randn(len(rows), len(task.answers)) * 3
    metrics = task.metrics(task.collect(logits, batch))
    questions = {"questions": [{"question_id": i} for i in range(len(rows))]}
    annotations = {
        "annotations": [
            {
                "question_id": i,
                "answers": [{"answer": a, "answer_id": j} for j, a in enumerate(row["answer"])],
                "answer_type": "other",
                "question_type": "what",
            }
            for i, row in enumerate(rows)
        ]
    }
    predictions = [
        {"question_id": i, "answer": task.postprocess(logits, i)["answer"]}
        for i in range(len(rows))
    ]
    official = vqa_scores(questions, annotations, predictions)
    assert metrics["vqa_accuracy"] == official["overall"]
    assert 0 < metrics["vqa_accuracy"] < 1 and metrics["rows"] == len(rows)
    assert metrics["answers"] == 5 and metrics["answer_coverage"] == task.coverage


def test_plain_accuracy_is_the_share_of_consensus_answers(tmp_path: Path):
    rows = [{"answer": ["yes"] * 7 + ["no"] * 3}, {"answer": "no"}, {"answer": ["dog"] * 10}]
    pre = _preprocessor(rows, tmp_path)
    task = _task(pre)
    assert task.answers == ["dog", "no", "yes"]
    logits = torch.tensor([[0.0, 5.0, 1.0], [0.0, 5.0, 1.0], [5.0, 0.0, 0.0]])  # no, no, dog
    metrics = task.metrics(task.collect(logits, _batch(pre, rows, tmp_path)))
    assert metrics["accuracy"] == pytest.approx(2 / 3)
    no_score = answer_accuracy("no", rows[0]["answer"])
    assert metrics["vqa_accuracy"] == pytest.approx((no_score + 1 + 1) / 3)


def test_prediction_lists_the_top_answers_with_scores(tmp_path: Path):
    pre = _preprocessor([{"answer": a} for a in "abcdefg"], tmp_path)
    task = _task(pre)
    logits = torch.arange(7.0).unsqueeze(0)
    predicted = task.postprocess(logits, 0)
    assert predicted["answer"] == "g"
    assert [a["answer"] for a in predicted["top_answers"]] == ["g", "f", "e", "d", "c"]
    assert predicted["top_answers"][0]["score"] == pytest.approx(
        float(torch.sigmoid(torch.tensor(6.0)))
    )


def test_target_must_be_an_answers_field_with_answers(tmp_path: Path):
    schema = Schema({"answer": FieldSpec(kind="label", role="target")})
    pre = Preprocessor.build(schema, DataConfig(manifest=tmp_path / "m.jsonl")).fit(
        [{"answer": "yes"}]
    )
    with pytest.raises(
        ConfigError, match=r"model.tasks.0: field 'answer' is label; expected answers"
    ):
        _task(pre)
    empty = _preprocessor([{"answer": None}], tmp_path)
    with pytest.raises(ConfigError, match=r"has no answer in the train rows"):
        _task(empty)


def _write_colour_vqa(folder: Path) -> Path:
    """Red and blue squares; "what color?" (ten answers, with typing variants) and "is it
    red?" (one answer); some train rows lack answers."""
    rows = []
    for i in range(48):
        colour = "red" if i % 2 == 0 else "blue"
        write_png(folder / "img" / f"{i}.png", COLOURS[colour])
        split = "train" if i < 32 else ("val" if i < 40 else "test")
        if i % 4 < 2:
            question, answers = "what color is it", [colour] * 8 + [colour.title(), "purple"]
        else:
            question, answers = "is it red", "yes" if colour == "red" else "no"
        rows.append(
            {
                "image": f"img/{i}.png",
                "question": question,
                "answer": None if split == "train" and i % 8 == 7 else answers,
                "split": split,
            }
        )
    path = folder / "manifest.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_tiny_run_trains_saves_reloads_and_answers(tmp_path: Path):
    manifest = _write_colour_vqa(tmp_path)
    config = {
        "name": "vqa",
        "seed": 0,
        "data": {"manifest": manifest.name, "image": {"size": 16}, "cache": "memory"},
        "model": {
            "inputs": ["image", "question"],
            "encoders": {
                "image": {"type": "cnn", "dim": 16, "channels": [8, 8]},
                "question": {"type": "bag", "dim": 16},
            },
            "fusion": {"type": "product", "dim": 16},
            "tasks": [{"type": "vqa", "target": "answer", "hidden": 16}],
        },
        "train": {"epochs": 2, "batch_size": 8, "lr": 0.01, "out_dir": str(tmp_path / "runs")},
    }
    path = tmp_path / "vqa.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    loaded = load_config(path)
    assert task_targets(loaded.model) == {"answer": "answers"}
    messages: list[str] = []
    result = run_training(loaded, log=messages.append)

    assert "  answer: answers (target)" in messages  # inferred from the vqa task
    assert "answers 'answer': the 4 most frequent cover 100.0% of the train questions" in messages
    assert not len(result.data.quarantine)  # rows without answers are masked, not errors
    test = json.loads((result.run_dir / "results.json").read_text())["test"]["vqa_answer"]
    assert test["rows"] == 8 and test["answers"] == 4
    assert 0 <= test["accuracy"] <= 1 and 0 <= test["vqa_accuracy"] <= 1
    saved = json.loads((result.model_dir / "preprocessor.json").read_text())
    assert saved["fields"]["answer"]["answers"] == ["blue", "red", "yes", "no"]
    assert saved["fields"]["answer"]["counts"] == [8, 8, 8, 4]

    predictor = Predictor.from_pretrained(result.model_dir)
    predicted = predictor.predict(
        [{"image": "img/0.png", "question": "what color is it"}], base_dir=tmp_path
    )[0]["vqa_answer"]
    assert predicted["answer"] == predicted["top_answers"][0]["answer"]
    assert {a["answer"] for a in predicted["top_answers"]} == {"blue", "red", "no", "yes"}
    scores = [a["score"] for a in predicted["top_answers"]]
    assert scores == sorted(scores, reverse=True) and all(0 < s < 1 for s in scores)
