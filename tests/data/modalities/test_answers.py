from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from polymodal.config import DataConfig, FieldSpec
from polymodal.data.modalities.answers import AnswersPreprocessor, consensus, human_answers
from polymodal.data.pipeline import Preprocessor, prepare_data
from polymodal.data.quarantine import QuarantinedRow
from polymodal.data.schema import Schema, infer_schema
from polymodal.errors import RowError
from polymodal.metrics.vqa import answer_accuracy, normalize_answer

OTHERS = ["dog", "bird", "fish", "cow", "horse", "sheep", "goat", "duck", "frog", "mouse"]


def fitted(*rows: object) -> AnswersPreprocessor:
    return AnswersPreprocessor("answers").fit({"answers": value} for value in rows)


def scores(pre: AnswersPreprocessor, answers: list[str]) -> dict[str, float]:
    return {pre.answers[i]: score for i, score in pre.scores(answers).items()}


@pytest.mark.parametrize(
    ("matches", "expected"), [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)]
)
def test_soft_score_of_ten_answers_by_hand(matches: int, expected: float):
    """Each human left out in turn: min(1, matches among the other nine / 3), averaged.
    One match: nine subsets hold it once (1/3 each) -> 0.3; two: 2 x 1/3 + 8 x 2/3 -> 0.6;
    three: 3 x 2/3 + 7 x 1 -> 0.9; four or more: 1."""
    pre = fitted("cat", *OTHERS)
    answers = ["cat"] * matches + OTHERS[: 10 - matches]
    assert scores(pre, answers).get("cat", 0.0) == pytest.approx(expected, abs=1e-12)
    assert scores(pre, answers).get("cat", 0.0) == answer_accuracy("cat", answers)


def test_scores_are_the_official_accuracy_of_every_vocabulary_entry():
    """Over random answer sets with typing variants, an entry scores exactly what the
    official accuracy gives predicting it, and entries left out score 0 there."""
    variants = ["Two", "2", "two", "2.", "yes", "Yes", "yes!", "a dog", "dog", "the cat", "cat"]
    generator = random.Random(0)
    rows = [[generator.choice(variants) for _ in range(10)] for _ in range(300)]
    rows += [[variant] * 10 for variant in variants]  # humans agreeing: compared as typed
    pre = fitted(*rows)
    for answers in rows:
        got = pre.scores(answers)
        for i, answer in enumerate(pre.answers):
            assert got.get(i, 0.0) == answer_accuracy(answer, answers)


def test_normalisation_is_the_official_one():
    pre = fitted(["Two"] * 6 + ["2"] * 4, ["dog"] * 10)
    assert normalize_answer("Two") == "2"
    # one entry for "Two" and "2", shown as typed most often; "Two" and "2" both match it
    assert pre.answers == ["Two", "dog"]
    assert scores(pre, ["2"] * 9 + ["two"]) == {"Two": answer_accuracy("Two", ["2"] * 9 + ["two"])}
    assert scores(pre, ["2"] * 10) == {}  # ten agreeing humans: compared as typed, as official
    assert scores(pre, ["Two"] * 10) == {"Two": 1.0}


def test_vocabulary_is_ranked_by_consensus_with_its_coverage():
    pre = fitted(
        ["yes"] * 7 + ["no"] * 3,
        ["yes"] * 10,
        "Yes",  # one answer string: normalised like the others
        ["red"] * 4 + ["blue"] * 6,
        "2",
        "two",
        "cat",
    )
    assert pre.answers == ["yes", "2", "blue", "cat"]
    assert pre.counts == [3, 2, 1, 1]  # "no" and "red" are nobody's consensus
    assert pre.questions == 7
    assert [pre.coverage(k) for k in (1, 2, 4, 10)] == [3 / 7, 5 / 7, 1.0, 1.0]
    again = AnswersPreprocessor.from_state("answers", json.loads(json.dumps(pre.state())))
    assert again.answers == pre.answers and again.coverage(2) == pre.coverage(2)


def test_one_answer_scores_its_normalised_match(tmp_path: Path):
    pre = fitted("circle", "yes", "yes")
    assert scores(pre, ["Circle."]) == {"circle": 1.0}
    assert scores(pre, ["square"]) == {}
    # rows: vocabulary id, score, consensus; the consensus is listed even when it scores 0
    assert pre.read("the circle", tmp_path).tolist() == [[1.0, 1.0, 1.0]]
    assert pre.read(["yes"] * 9 + ["circle"], tmp_path).tolist() == [
        [0.0, 1.0, 1.0],
        [1.0, answer_accuracy("circle", ["yes"] * 9 + ["circle"]), 0.0],
    ]
    csv_cell = pre.read('["yes", "no"]', tmp_path)  # a CSV cell: JSON text of the list
    assert csv_cell.tolist() == [[0.0, 1 / 6, 1.0]]  # (0 + 1/3) / 2
    assert pre.read("maybe", tmp_path).shape == (0, 3)  # outside the vocabulary


def test_collate_pads_candidates_and_keeps_absent_rows(tmp_path: Path):
    pre = fitted("a", "b")
    values, lengths = pre.collate([pre.read(["a", "b", "b"], tmp_path), None])
    assert values.shape == (2, 2, 3) and values.dtype == torch.float64
    assert lengths.tolist() == [2, 0] and not values[1].any()


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (42, "bad answers"),
        ({"answer": "yes"}, "bad answers"),
        ([], "bad answers"),
        (["yes", 3], "bad answers"),
        ([["yes"]], "bad answers"),
        ("[yes, no", "malformed list"),
    ],
)
def test_a_cell_of_the_wrong_type_is_a_row_error(tmp_path: Path, value: object, reason: str):
    pre = fitted("yes")
    with pytest.raises(RowError) as err:
        pre.read(value, tmp_path)
    assert err.value.reason == reason
    assert human_answers("yes") == ["yes"] and consensus(["no", "yes", "Yes"]) == "yes"


def test_bad_cells_are_quarantined_and_absent_ones_masked(tmp_path: Path):
    rows = [
        {"answer": ["yes"] * 10, "split": "train"},
        {"answer": "no", "split": "train"},
        {"answer": None, "split": "train"},
        {"answer": 7, "split": "train"},
        {"split": "train"},
    ]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    fields = {"answer": FieldSpec(kind="answers", role="target")}
    data = prepare_data(DataConfig(manifest=manifest, fields=fields))
    dataset = data.splits["train"]
    read = [dataset[i] for i in range(len(dataset))]
    bad = [item for item in read if isinstance(item, QuarantinedRow)]
    assert [(b.line, b.reason, b.field) for b in bad] == [(4, "bad answers", "answer")]
    batch = data.preprocessor.collate(read)
    assert batch.present["answer"].tolist() == [True, True, False, False]
    assert data.preprocessor.fields["answer"].answers == ["no", "yes"]  # type: ignore[attr-defined]


def test_schema_inference_and_saved_state(tmp_path: Path):
    rows = [{"image": "a.png", "answers": ["yes", "no"], "answer": "yes"}]
    inferred = infer_schema(rows)
    assert inferred.fields["answers"].kind == "answers"  # a list of strings
    assert inferred.fields["answer"].kind == "label"  # a string, unless a task reads answers
    assert infer_schema(rows, {"answer": "answers"}).fields["answer"].kind == "answers"
    schema = Schema({"answer": FieldSpec(kind="answers", role="target")})
    pre = Preprocessor.build(schema, DataConfig(manifest=tmp_path / "m.jsonl"))
    pre.fit([{"answer": "yes"}, {"answer": "no"}, {"answer": "yes"}])
    pre.save(tmp_path)
    loaded = Preprocessor.load(tmp_path).fields["answer"]
    assert isinstance(loaded, AnswersPreprocessor) and loaded.answers == ["yes", "no"]
