"""VQA accuracy against the official evaluation, GT-Vision-Lab/VQA vqaEval.py at a013f00.

Three kinds of reference: cases whose values the official script gives (run under Python 2.7
at commit a013f0043c1e2cdc995922dfe257f7149aa9af06, each also derived by hand in its comment),
a Python 3 port of the official ``evaluate`` loop as an oracle for randomised files, and a
checksum of the official data tables.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import operator
import random
import re
from pathlib import Path
from typing import Any

import pytest

from polymodal.errors import DataError
from polymodal.metrics.vqa import (
    ARTICLES,
    CONTRACTIONS,
    MANUAL_MAP,
    PUNCTUATION,
    answer_accuracy,
    clean_answer,
    normalize_answer,
    process_digit_article,
    process_punctuation,
    vqa_scores,
    vqa_scores_from_files,
)


def ten(answer: str) -> list[str]:
    return [answer] * 10


def test_tables_are_the_official_ones() -> None:
    # sha256 of the contractions, manualMap, articles and punct literals of the official file
    # at a013f00, read with ast.literal_eval, in this JSON form.
    tables = [list(CONTRACTIONS.items()), list(MANUAL_MAP.items()), list(ARTICLES)]
    digest = hashlib.sha256(json.dumps([*tables, list(PUNCTUATION)]).encode()).hexdigest()
    assert digest == "dbb2cef5c49f16e9b3694a99a531f21071ec5299b5f7e11a66912b6d5eb58739"
    assert len(CONTRACTIONS) == 120


@pytest.mark.parametrize(
    ("prediction", "human", "expected"),
    [
        # Ten identical human answers: only tabs, newlines and surrounding whitespace are
        # touched, on both sides; the rest must match character for character.
        ("2", ten("2"), 1.0),
        ("2.", ten("2"), 0.0),
        ("Two", ten("2"), 0.0),
        ("two", ten("2"), 0.0),
        ("  2\n", ten("2"), 1.0),
        ("2", ten(" 2\t"), 1.0),
        ("yes", ten("Yes"), 0.0),
        ("yes!", ten("yes!"), 1.0),
        ("1,000", ten("1,000"), 1.0),
        ("1000", ten("1,000"), 0.0),
        ("a dog", ten("dog"), 0.0),
        ("dont", ten("don't"), 0.0),
        # Identical once stripped, so still not normalised.
        ("Yes", ["yes"] * 9 + ["yes "], 0.0),
        # Human answers differ: prediction and humans are normalised alike.
        ("2.", ["2"] * 3 + ["3"] * 7, 0.9),  # a trailing period goes
        ("yes.", ["yes"] + ["no"] * 9, 0.3),
        ("5.", ["5"] * 2 + ["6"] * 8, 0.6),  # even after a digit
        ("3.5", ["3.5"] * 3 + ["3"] * 7, 0.9),  # but not before one
        ("two", ["2"] * 3 + ["3"] * 7, 0.9),  # number words become digits
        ("2", ["two", "Two"] + ["3"] * 8, 0.6),  # in human answers too
        ("none", ["0"] * 4 + ["1"] * 6, 1.0),
        ("dont", ["don't"] * 2 + ["no"] * 8, 0.6),  # contractions without apostrophes
        ("don't", ["dont", "Dont"] + ["no"] * 8, 0.6),
        ("yes/no", ["yes no"] * 3 + ["yes"] * 7, 0.9),  # a slash between words: a space
        ("yes / no", ["yes/no"] + ["no"] * 9, 0.3),  # one next to a space: deleted
        ("a dog", ["dog"] * 2 + ["cat"] * 8, 0.6),  # articles go
        ("dog", ["the dog", "The Dog", "a dog", "dog"] + ["cat"] * 6, 1.0),
        ("Yes", ["yes"] * 3 + ["no"] * 7, 0.9),  # lower-cased
        ("yes", ["yes"] * 2 + ["yes!"] * 8, 1.0),  # "yes!" -> "yes " -> "yes"
        ("1000", ["1,000"] * 9 + ["1000"], 1.0),  # a comma between digits goes
        ("t shirt", ["t-shirt"] * 2 + ["tshirt"] * 8, 0.6),
        ("Im", ["I'm", "I'm", "Im"] + ["no"] * 7, 0.3),  # capitalised keys never match: "im"
        ("somebody'd", ["somebodyd"] + ["x"] * 9, 0.3),  # the map's entry runs backwards
        ("1.\uff15", ["1\uff15"] + ["x"] * 9, 0.3),  # "\d" is ASCII: the period goes
    ],
)
def test_official_cases(prediction: str, human: list[str], expected: float) -> None:
    assert answer_accuracy(prediction, human) == pytest.approx(expected)


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


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("yes.", "yes"),
        ("2.5", "2.5"),
        ("5.", "5"),  # "(?!<=\d)" is not a lookbehind: a period after a digit goes too
        ("1.\uff15", "1\uff15"),  # a full-width digit is no "\d" to Python 2's byte patterns
        ("t-shirt", "t shirt"),  # a mark away from spaces becomes a space...
        ("red, white", "red white"),  # ...one next to a space is deleted
        ("1,000", "1000"),  # a comma between digits deletes every mark in the text
        ("\uff11,\uff12-x", "\uff11 \uff12 x"),  # not between ASCII digits
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


def test_clean_and_normalize_answer() -> None:
    assert clean_answer("\tThe Two\tdogs.\n") == "The Two dogs."
    assert normalize_answer("\tThe Two\tdogs.\n") == "2 dogs"


def annotation(qid: int, answer_type: str, question_type: str, answers: list[Any]) -> dict:
    """A VQA v2 annotation; answers given as strings get their own answer_id each."""
    records = [
        {"answer": a, "answer_confidence": "yes", "answer_id": i + 1} if isinstance(a, str) else a
        for i, a in enumerate(answers)
    ]
    return {
        "question_id": qid,
        "image_id": 7,
        "answer_type": answer_type,
        "question_type": question_type,
        "answers": records,
    }


def files(
    annotations: list[dict], answers: dict[int, str]
) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """Question, annotation and result files for the annotations and {qid: prediction}."""
    questions = [
        {"question_id": a["question_id"], "image_id": 7, "question": "?"} for a in annotations
    ]
    results = [{"question_id": qid, "answer": answer} for qid, answer in answers.items()]
    return {"questions": questions}, {"annotations": annotations}, results


def vqa_files() -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """Four questions of three answer types."""
    annotations = [
        annotation(1, "yes/no", "is the", ten("yes")),  # "Yes." against ten "yes": 0
        annotation(2, "yes/no", "is the", ["no"] * 7 + ["yes"] * 3),  # 3 matches: 0.9
        annotation(3, "number", "how many", ["2"] + ["3"] * 9),  # "two" -> "2", 1 match: 0.3
        annotation(4, "other", "what color", ["red"] * 2 + ["blue"] * 8),  # 2 matches: 0.6
    ]
    return files(annotations, {1: "Yes.", 2: "yes", 3: "two", 4: "a red"})


def test_vqa_scores() -> None:
    questions, annotations, results = vqa_files()
    original = copy.deepcopy(annotations)
    scores = vqa_scores(questions, annotations, results)
    # overall (0 + 0.9 + 0.3 + 0.6) / 4 = 0.45; yes/no (0 + 0.9) / 2 = 0.45.
    assert set(scores) == {"overall", "per_question", "per_answer_type", "per_question_type"}
    assert scores["overall"] == pytest.approx(0.45)
    assert scores["per_question"] == pytest.approx({1: 0.0, 2: 0.9, 3: 0.3, 4: 0.6})
    assert scores["per_answer_type"] == pytest.approx({"yes/no": 0.45, "number": 0.3, "other": 0.6})
    assert scores["per_question_type"] == pytest.approx(
        {"is the": 0.45, "how many": 0.3, "what color": 0.6}
    )
    assert annotations == original  # the official code rewrites human answers in place


def test_type_scores_average_the_question_scores() -> None:
    # Both questions score 0.9 (three of ten say "yes"). The official code of 2015 (07aecec)
    # averaged each one's last leave-one-out value instead: 2/3 for question 1, whose last
    # human said "yes", and 1 for question 2, giving 0.8333 for the type.
    annotations = [
        annotation(1, "yes/no", "is it", ["no"] * 7 + ["yes"] * 3),
        annotation(2, "yes/no", "is it", ["yes"] * 3 + ["no"] * 7),
        annotation(3, "other", "what", ["red"] * 10),
    ]
    scores = vqa_scores(*files(annotations, {1: "yes", 2: "yes", 3: "red"}))
    assert scores["per_question"] == pytest.approx({1: 0.9, 2: 0.9, 3: 1.0})
    assert scores["per_answer_type"] == pytest.approx({"yes/no": 0.9, "other": 1.0})
    assert scores["per_question_type"] == pytest.approx({"is it": 0.9, "what": 1.0})
    assert scores["overall"] == pytest.approx(2.8 / 3)


def test_equal_answer_objects_are_left_out_together() -> None:
    # The official leaves out every answer object equal to the one left out. Without ids, four
    # equal {"answer": "yes"} all go at once: a "yes" left out leaves 0 matches, a "no" 4.
    # Normalised answers are compared: "Yes!" becomes "yes", equal to the three others.
    no_ids = [{"answer": "yes"}] * 3 + [{"answer": "Yes!"}] + [{"answer": "no"}] * 6
    same_id = [{"answer": "yes", "answer_id": 1}] * 4 + [{"answer": "no", "answer_id": 2}] * 6
    annotations = [
        annotation(1, "yes/no", "is", no_ids),
        annotation(2, "yes/no", "is", [{"answer": "yes"}] * 10),  # nothing left to match
        annotation(3, "yes/no", "is", same_id),
        annotation(4, "yes/no", "is", ["yes"] * 4 + ["no"] * 6),  # own ids: one at a time
    ]
    scores = vqa_scores(*files(annotations, {1: "yes", 2: "yes", 3: "yes", 4: "yes"}))
    assert scores["per_question"] == pytest.approx({1: 0.6, 2: 0.0, 3: 0.6, 4: 1.0})
    assert answer_accuracy("yes", ten("yes")) == 1.0  # plain strings: each its own answer


# A Python 3 port of VQAEval.evaluate at a013f00, kept close to the official statements, with
# what Python 2 did spelled out: "\d" of a byte pattern is ASCII, sum() adds left to right, and
# re.UNICODE is what the official passes as sub()'s count. It uses the module's data tables,
# which test_tables_are_the_official_ones pins.
OFFICIAL_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)", re.ASCII)
OFFICIAL_COMMA_STRIP = re.compile(r"(\d)(\,)(\d)", re.ASCII)


def official_process_punctuation(in_text: str) -> str:
    out_text = in_text
    for p in PUNCTUATION:
        if (p + " " in in_text or " " + p in in_text) or (
            re.search(OFFICIAL_COMMA_STRIP, in_text) is not None
        ):
            out_text = out_text.replace(p, "")
        else:
            out_text = out_text.replace(p, " ")
    return OFFICIAL_PERIOD_STRIP.sub("", out_text, count=int(re.UNICODE))


def official_process_digit_article(in_text: str, manual_map: dict[str, str]) -> str:
    out_text = []
    for word in in_text.lower().split():
        word = manual_map.setdefault(word, word)
        if word not in ARTICLES:
            out_text.append(word)
    for word_id, word in enumerate(out_text):
        if word in CONTRACTIONS:
            out_text[word_id] = CONTRACTIONS[word]
    return " ".join(out_text)


def python2_sum(values: list[float]) -> float:
    return functools.reduce(operator.add, values, 0)


def official_evaluate(annotations: list[dict], results: list[dict]) -> dict[str, Any]:
    """Unrounded fractions where the official reports round(100 * x, 2)."""
    manual_map = dict(MANUAL_MAP)
    gts = {a["question_id"]: copy.deepcopy(a) for a in annotations}
    res = {r["question_id"]: r for r in results}
    acc_qa, acc_ques_type, acc_ans_type, eval_qa = [], {}, {}, {}
    for ques_id, gt in gts.items():
        for ans_dic in gt["answers"]:
            ans_dic["answer"] = ans_dic["answer"].replace("\n", " ").replace("\t", " ").strip()
        res_ans = res[ques_id]["answer"].replace("\n", " ").replace("\t", " ").strip()
        gt_answers = [ans["answer"] for ans in gt["answers"]]
        if len(set(gt_answers)) > 1:
            for ans_dic in gt["answers"]:
                ans_dic["answer"] = official_process_punctuation(ans_dic["answer"])
                ans_dic["answer"] = official_process_digit_article(ans_dic["answer"], manual_map)
            res_ans = official_process_punctuation(res_ans)
            res_ans = official_process_digit_article(res_ans, manual_map)
        gt_acc = []
        for gt_ans_datum in gt["answers"]:
            other_gt_ans = [item for item in gt["answers"] if item != gt_ans_datum]
            matching_ans = [item for item in other_gt_ans if item["answer"] == res_ans]
            gt_acc.append(min(1, len(matching_ans) / 3))
        avg_gt_acc = python2_sum(gt_acc) / len(gt_acc)
        acc_qa.append(avg_gt_acc)
        acc_ques_type.setdefault(gt["question_type"], []).append(avg_gt_acc)
        acc_ans_type.setdefault(gt["answer_type"], []).append(avg_gt_acc)
        eval_qa[ques_id] = avg_gt_acc
    return {
        "overall": python2_sum(acc_qa) / len(acc_qa),
        "per_question": eval_qa,
        "per_answer_type": {k: python2_sum(v) / len(v) for k, v in acc_ans_type.items()},
        "per_question_type": {k: python2_sum(v) / len(v) for k, v in acc_ques_type.items()},
    }


VOCABULARY = [
    *("2", "two", "Two", "2.", " 2", "ten", "10", "none", "0", "zero", "3.5", "5.", "-1", "#1"),
    *("yes", "Yes", "yes.", "yes!", "no", "No.", "\tyes\n", "yes\t", "yes\nno", "yes/no"),
    *("yes / no", "a dog", "dog", "the dog", "The Dog", "an apple", "apple", "The", "a  b"),
    *("dont", "don't", "Dont", "Im", "I'm", "im", "somebody'd", "somebodyd", "thats", "that's"),
    *("Ive", "youre", "twas", "'twas", "y'allll", "ow's'at", "oclock", "o'clock", "it's", "its"),
    *("1,000", "1000", "10,5", "2,", "1 - 2", "1;2", "t-shirt", "t shirt", "tshirt", "a-b c"),
    *("red, white", "red white", "what's up?", "whats up", "x: y", "(a)", '"quoted"', "[x]"),
    *("a_b", "\\", "@home", "`x`", "<3", "+", "a" + "." * 40, "   ", "", "caf\u00e9"),
    *("CAF\u00c9", "\uff15", "1.\uff15", "\uff11,\uff12-x"),
]


def random_files(seed: int, count: int) -> tuple[dict, dict, list]:
    """Questions whose humans pick from a few tricky answers; answer objects with their own
    ids, without ids, or with repeated ids."""
    rng = random.Random(seed)
    annotations, predictions = [], {}
    for qid in range(1, count + 1):
        pool = rng.sample(VOCABULARY, rng.choice([1, 1, 2, 2, 3, 4]))
        answers = [rng.choice(pool) for _ in range(rng.choice([10, 10, 10, 3, 1]))]
        kind = rng.random()
        if kind < 0.75:
            records = answers
        elif kind < 0.9:
            records = [{"answer": a, "answer_confidence": rng.choice("yyn")} for a in answers]
        else:
            records = [{"answer": a, "answer_id": rng.choice([1, 2])} for a in answers]
        answer_type = rng.choice(["yes/no", "number", "other"])
        question_type = rng.choice(["what is", "how many", "is the"])
        annotations.append(annotation(qid, answer_type, question_type, records))
        predictions[qid] = rng.choice(pool if rng.random() < 0.6 else VOCABULARY)
    return files(annotations, predictions)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_the_official_port_on_random_files(seed: int) -> None:
    questions, annotations, results = random_files(seed, 2000)
    expected = official_evaluate(annotations["annotations"], results)
    assert vqa_scores(questions, annotations, results) == expected  # bit for bit
    scored = [value for value in expected["per_question"].values() if value > 0]
    assert len(scored) > 500 and len(set(scored)) > 10  # the draw reaches every branch


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
    with pytest.raises(DataError, match=f"annotations file {annotations} is not valid JSON"):
        vqa_scores_from_files(*paths)
    questions.unlink()
    with pytest.raises(DataError, match=f"questions file {questions} does not exist"):
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
