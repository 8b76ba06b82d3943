"""VQA accuracy against values derived by hand from the official evaluation's rules."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from polymodal.evaluate.vqa import (
    answer_accuracy,
    normalize_prediction,
    process_digit_article,
    process_punctuation,
    vqa_scores,
    vqa_scores_from_files,
)


def ten(answer: str) -> list[str]:
    return [answer] * 10


@pytest.mark.parametrize(
    ("prediction", "human", "expected"),
    [
        ("Two", "2", 1.0),  # lower-cased, then number words become digits
        ("a dog", "dog", 1.0),  # articles go
        ("yes.", "yes", 1.0),  # a period not followed by a digit goes
        ("cant", "can't", 1.0),  # the contractions map
        ("can't", "can't", 1.0),  # "'" is not punctuation to the official code
        ("The  Dog ", "dog", 1.0),
        ("yes\n", "yes", 1.0),
        ("none", "0", 1.0),
        # Human answers are never lower-cased, digit-mapped, article-stripped or contracted.
        ("2", "two", 0.0),
        ("dog", "a dog", 0.0),
        ("yes", "Yes", 0.0),
        ("can't", "cant", 0.0),
        # Ten identical human answers are not even punctuation-processed: "1,000" stays, while
        # the prediction becomes "1000".
        ("1,000", "1,000", 0.0),
    ],
)
def test_normalisation_when_all_ten_humans_agree(
    prediction: str, human: str, expected: float
) -> None:
    assert answer_accuracy(prediction, ten(human)) == expected


@pytest.mark.parametrize(
    ("matches", "expected"),
    [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)],
)
def test_leave_one_out(matches: int, expected: float) -> None:
    # With m of 10 humans matching: leaving out one of the m leaves m - 1 matches, leaving out
    # one of the others leaves m; each subset scores min(1, matches / 3).
    # m = 1: (1 * 0 + 9 * 1/3) / 10 = 0.3.  m = 2: (2 * 1/3 + 8 * 2/3) / 10 = 0.6.
    # m = 3: (3 * 2/3 + 7 * 1) / 10 = 0.9.  m = 4: (4 * 1 + 6 * 1) / 10 = 1.
    answers = ["cat"] * matches + ["dog"] * (10 - matches)
    assert answer_accuracy("cat", answers) == pytest.approx(expected)


def test_human_answers_are_punctuation_processed_only_when_they_differ() -> None:
    # Nine "1,000" and one "1000" differ, so "1,000" becomes "1000": all ten match.
    assert answer_accuracy("1000", ["1,000"] * 9 + ["1000"]) == 1.0
    assert answer_accuracy("1,000", ["1,000"] * 9 + ["1000"]) == 1.0
    assert answer_accuracy("1000", ten("1,000")) == 0.0
    # "yes!" becomes "yes " (the "!" turns into a space, which nothing strips from human
    # answers), so only the two plain "yes" match: 0.6. Ten identical "yes!" stay as they are
    # while the prediction "yes!" becomes "yes": 0.
    assert answer_accuracy("yes", ["yes"] * 2 + ["yes!"] * 8) == pytest.approx(0.6)
    assert answer_accuracy("yes!", ten("yes!")) == 0.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("yes.", "yes"),
        ("2.5", "2.5"),
        ("5.", "5"),  # "(?!<=\d)" is not a lookbehind: a period after a digit goes too
        ("t-shirt", "t shirt"),  # a mark away from spaces becomes a space...
        ("red, white", "red white"),  # ...one next to a space is deleted
        ("1,000", "1000"),  # a comma between digits deletes every mark in the text
        ("t-shirt 1,5", "tshirt 15"),
        ("what's up?", "what's up "),
        ("x: y", "x: y"),  # ":" is not in the list
        ("a" + "." * 40, "a" + "." * 8),  # re.UNICODE (32) passed as sub()'s count
    ],
)
def test_process_punctuation(text: str, expected: str) -> None:
    assert process_punctuation(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The TWO dogs", "2 dogs"),
        ("an  apple", "apple"),
        ("a the an", ""),
        ("didnt", "didn't"),
        ("Im", "im"),  # the map's capitalised keys never match lower-cased words
        ("somebody'd", "somebodyd"),  # the map's entry runs backwards
    ],
)
def test_process_digit_article(text: str, expected: str) -> None:
    assert process_digit_article(text) == expected


def test_normalize_prediction() -> None:
    assert normalize_prediction("\tThe Two\tdogs.\n") == "2 dogs"


def vqa_files() -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """Four questions of three answer types; annotations shaped like the VQA v2 files."""
    specs = [
        (1, "yes/no", "is the", ten("yes"), "Yes."),  # 1.0
        (2, "yes/no", "is the", ["no"] * 7 + ["yes"] * 3, "yes"),  # 3 matches: 0.9
        (3, "number", "how many", ["2"] + ["3"] * 9, "two"),  # 1 match: 0.3
        (4, "other", "what color", ["red"] * 2 + ["blue"] * 8, "a red"),  # 2 matches: 0.6
    ]
    questions = {
        "questions": [
            {"question_id": qid, "image_id": 7, "question": f"{kind}?"}
            for qid, _, kind, _, _ in specs
        ]
    }
    annotations = {
        "annotations": [
            {
                "question_id": qid,
                "image_id": 7,
                "answer_type": answer_type,
                "question_type": kind,
                "answers": [
                    {"answer": a, "answer_confidence": "yes", "answer_id": i + 1}
                    for i, a in enumerate(answers)
                ],
            }
            for qid, answer_type, kind, answers, _ in specs
        ]
    }
    results = [{"question_id": qid, "answer": answer} for qid, _, _, _, answer in specs]
    return questions, annotations, results


def test_vqa_scores() -> None:
    questions, annotations, results = vqa_files()
    original = copy.deepcopy(annotations)
    scores = vqa_scores(questions, annotations, results)
    # overall (1 + 0.9 + 0.3 + 0.6) / 4 = 0.7; yes/no (1 + 0.9) / 2 = 0.95.
    assert set(scores) == {"overall", "per_question", "per_answer_type", "per_question_type"}
    assert scores["overall"] == pytest.approx(0.7)
    assert scores["per_question"] == pytest.approx({1: 1.0, 2: 0.9, 3: 0.3, 4: 0.6})
    assert scores["per_answer_type"] == pytest.approx({"yes/no": 0.95, "number": 0.3, "other": 0.6})
    assert scores["per_question_type"] == pytest.approx(
        {"is the": 0.95, "how many": 0.3, "what color": 0.6}
    )
    assert annotations == original  # the official code rewrites human answers in place


def test_vqa_scores_from_files(tmp_path: Path) -> None:
    paths = [tmp_path / name for name in ("questions.json", "annotations.json", "results.json")]
    for path, data in zip(paths, vqa_files(), strict=True):
        path.write_text(json.dumps(data), encoding="utf-8")
    assert vqa_scores_from_files(*paths) == vqa_scores(*vqa_files())
    questions, annotations, results = paths
    with pytest.raises(ValueError, match=f"{results}: no answer for 1 of 4 annotated questions"):
        results.write_text(json.dumps(vqa_files()[2][:3]), encoding="utf-8")
        vqa_scores_from_files(*paths)
    annotations.write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match=f"{annotations}: not valid JSON"):
        vqa_scores_from_files(*paths)
    questions.unlink()
    with pytest.raises(FileNotFoundError, match=f"{questions} does not exist"):
        vqa_scores_from_files(*paths)


def test_errors() -> None:
    questions, annotations, results = vqa_files()
    with pytest.raises(ValueError, match=r"predictions: no answer for 2 of 4 .* \(3, 4\)"):
        vqa_scores(questions, annotations, results[:2])
    with pytest.raises(ValueError, match=r"predictions: 1 question ids are not in annotations"):
        vqa_scores(questions, annotations, [*results, {"question_id": 9, "answer": "yes"}])
    with pytest.raises(ValueError, match="predictions: question_id 1 appears twice"):
        vqa_scores(questions, annotations, [*results, results[0]])
    with pytest.raises(ValueError, match="question_id 2 has no 'answer' string"):
        vqa_scores(questions, annotations, [*results[:1], {"question_id": 2}, *results[2:]])
    with pytest.raises(ValueError, match="annotations: 1 annotated question ids are not in"):
        vqa_scores({"questions": questions["questions"][1:]}, annotations, results)
    with pytest.raises(ValueError, match="questions: expected an object with a 'questions' list"):
        vqa_scores(questions["questions"], annotations, results)
    with pytest.raises(ValueError, match="predictions: expected a list of objects, got dict"):
        vqa_scores(questions, annotations, {"results": results})
    with pytest.raises(ValueError, match="annotations: entry 0 is not an object with a question"):
        vqa_scores(questions, {"annotations": [{"id": 1}]}, results)
    with pytest.raises(ValueError, match="annotations: no annotations to score"):
        vqa_scores(questions, {"annotations": []}, [])
    broken = copy.deepcopy(annotations)
    broken["annotations"][0]["answers"] = []
    with pytest.raises(ValueError, match="question_id 1 has no 'answers' list"):
        vqa_scores(questions, broken, results)
    del broken["annotations"][1]["answer_type"]
    broken["annotations"][0]["answers"] = [{"answer": "yes"}]
    with pytest.raises(ValueError, match="question_id 2 has no 'answer_type' string"):
        vqa_scores(questions, broken, results)
    with pytest.raises(ValueError, match="no human answers"):
        answer_accuracy("yes", [])
