"""VQA v2 accuracy exactly as the official evaluation computes it.

Reproduces ``PythonEvaluationTools/vqaEvaluation/vqaEval.py`` of GT-Vision-Lab/VQA at commit
a013f0043c1e2cdc995922dfe257f7149aa9af06 ("Fixed processing answers bug", 2021), the newest on
its master branch, quirks included:

- The prediction and every human answer get tabs and newlines turned into spaces and are
  stripped. If the human answers are then all identical, nothing else happens: the prediction
  must equal them character for character ("Two", "two" and "2." score 0 against ten "2").
  Otherwise the prediction and the human answers all get ``process_punctuation`` and then
  ``process_digit_article`` (lower-case, number words to digits, articles out, contractions).
- ``CONTRACTIONS`` has keys with capitals that never match a lower-cased word, and maps
  "somebody'd" to "somebodyd"; ``PERIOD_STRIP`` and ``PERIOD_STRIP_COUNT`` copy two regex
  slips (see their comments).
- A human answer left out is left out with every answer object equal to it: objects are
  compared whole, so with distinct ``answer_id`` values (every VQA v2 file) exactly one goes,
  while equal objects without ids all go together.
- A question's accuracy is the mean of its leave-one-out scores; overall, per-answer-type and
  per-question-type accuracies are means of the per-question accuracies, summed in the
  annotation file's order without compensation, as Python 2's ``sum`` did.

The official code runs on Python 2.7, where the ``\\d`` of its byte-string patterns matches
ASCII digits only (reproduced with ``re.ASCII``). Case mapping and whitespace of non-ASCII text
follow Python 3's ``str`` methods; Python 2.7's Unicode 5.2 tables differ from them for U+0130,
a word-final capital sigma, U+180E and about 400 letters added to Unicode since.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from polymodal.io import read_json

CONTRACTIONS = {
    "aint": "ain't",
    "arent": "aren't",
    "cant": "can't",
    "couldve": "could've",
    "couldnt": "couldn't",
    "couldn'tve": "couldn't've",
    "couldnt've": "couldn't've",
    "didnt": "didn't",
    "doesnt": "doesn't",
    "dont": "don't",
    "hadnt": "hadn't",
    "hadnt've": "hadn't've",
    "hadn'tve": "hadn't've",
    "hasnt": "hasn't",
    "havent": "haven't",
    "hed": "he'd",
    "hed've": "he'd've",
    "he'dve": "he'd've",
    "hes": "he's",
    "howd": "how'd",
    "howll": "how'll",
    "hows": "how's",
    "Id've": "I'd've",
    "I'dve": "I'd've",
    "Im": "I'm",
    "Ive": "I've",
    "isnt": "isn't",
    "itd": "it'd",
    "itd've": "it'd've",
    "it'dve": "it'd've",
    "itll": "it'll",
    "let's": "let's",
    "maam": "ma'am",
    "mightnt": "mightn't",
    "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've",
    "mightve": "might've",
    "mustnt": "mustn't",
    "mustve": "must've",
    "neednt": "needn't",
    "notve": "not've",
    "oclock": "o'clock",
    "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at",
    "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at",
    "shant": "shan't",
    "shed've": "she'd've",
    "she'dve": "she'd've",
    "she's": "she's",
    "shouldve": "should've",
    "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've",
    "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've",
    "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll",
    "somebodys": "somebody's",
    "someoned": "someone'd",
    "someoned've": "someone'd've",
    "someone'dve": "someone'd've",
    "someonell": "someone'll",
    "someones": "someone's",
    "somethingd": "something'd",
    "somethingd've": "something'd've",
    "something'dve": "something'd've",
    "somethingll": "something'll",
    "thats": "that's",
    "thered": "there'd",
    "thered've": "there'd've",
    "there'dve": "there'd've",
    "therere": "there're",
    "theres": "there's",
    "theyd": "they'd",
    "theyd've": "they'd've",
    "they'dve": "they'd've",
    "theyll": "they'll",
    "theyre": "they're",
    "theyve": "they've",
    "twas": "'twas",
    "wasnt": "wasn't",
    "wed've": "we'd've",
    "we'dve": "we'd've",
    "weve": "we've",
    "werent": "weren't",
    "whatll": "what'll",
    "whatre": "what're",
    "whats": "what's",
    "whatve": "what've",
    "whens": "when's",
    "whered": "where'd",
    "wheres": "where's",
    "whereve": "where've",
    "whod": "who'd",
    "whod've": "who'd've",
    "who'dve": "who'd've",
    "wholl": "who'll",
    "whos": "who's",
    "whove": "who've",
    "whyll": "why'll",
    "whyre": "why're",
    "whys": "why's",
    "wont": "won't",
    "wouldve": "would've",
    "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've",
    "yall": "y'all",
    "yall'll": "y'all'll",
    "y'allll": "y'all'll",
    "yall'd've": "y'all'd've",
    "y'alld've": "y'all'd've",
    "y'all'dve": "y'all'd've",
    "youd": "you'd",
    "youd've": "you'd've",
    "you'dve": "you'd've",
    "youll": "you'll",
    "youre": "you're",
    "youve": "you've",
}
MANUAL_MAP = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}
ARTICLES = ("a", "an", "the")
PUNCTUATION = tuple(';/[]"{}()=+\\_-><@`,?!')  # in the official order; not "'", ":" or "."
# "(?!<=\d)" is a lookahead for the text "<=" and a digit, not the lookbehind "(?<!\d)" it was
# meant to be, so every period not followed by a digit goes ("5." becomes "5"). The official
# patterns are Python 2 byte strings, where "\d" is [0-9] only: hence re.ASCII.
PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)", re.ASCII)
# The official passes re.UNICODE (32) as sub()'s third positional argument, which is ``count``.
PERIOD_STRIP_COUNT = 32
COMMA_STRIP = re.compile(r"(\d)(,)(\d)", re.ASCII)  # only ever searched for, never substituted


def process_punctuation(text: str) -> str:
    """The official ``processPunctuation``.

    Each mark in ``PUNCTUATION`` is deleted if the original text has it next to a space or has
    a comma between digits anywhere ("1,000" -> "1000"), else replaced by a space
    ("t-shirt" -> "t shirt"); then periods not followed by a digit go, 32 at most.
    """
    out = text
    has_digit_comma = COMMA_STRIP.search(text) is not None
    for mark in PUNCTUATION:
        if mark + " " in text or " " + mark in text or has_digit_comma:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return PERIOD_STRIP.sub("", out, count=PERIOD_STRIP_COUNT)


def process_digit_article(text: str) -> str:
    """The official ``processDigitArticle``: lower-case, number words to digits, articles out,
    contractions mapped, words joined by single spaces."""
    words = [MANUAL_MAP.get(word, word) for word in text.lower().split()]
    return " ".join(CONTRACTIONS.get(word, word) for word in words if word not in ARTICLES)


def clean_answer(answer: str) -> str:
    """What the official code does to every answer first: tabs and newlines to spaces, then
    surrounding whitespace stripped."""
    return answer.replace("\n", " ").replace("\t", " ").strip()


def normalize_answer(answer: str) -> str:
    """An answer as the official code compares it when the human answers disagree:
    ``clean_answer``, ``process_punctuation``, then ``process_digit_article``."""
    return process_digit_article(process_punctuation(clean_answer(answer)))


def _plain_sum(values: Iterable[float]) -> float:
    """Left-to-right float sum, as Python 2's ``sum`` (Python 3.12's compensates)."""
    total = 0.0
    for value in values:
        total += value
    return total


def _mean(values: Sequence[float]) -> float:
    return _plain_sum(values) / len(values)


def mean_accuracy(values: Sequence[float]) -> float:
    """Per-question accuracies averaged as the official averages them (a plain left-to-right
    sum), so a score computed elsewhere matches ``vqa_scores`` to the last bit."""
    return _mean(values)


def _distinct(records: Sequence[Mapping[str, Any]]) -> bool:
    """Whether every record has its own ``answer_id``, so that no two records are equal."""
    try:
        ids = {record["answer_id"] for record in records}
    except (KeyError, TypeError):  # no id, or one that cannot be hashed
        return False
    return len(ids) == len(records)


def _accuracy(
    prediction: str, answers: Sequence[str], records: Sequence[Mapping[str, Any]] | None
) -> float:
    """``answer_accuracy``; with ``records`` (the answer objects), a left-out answer takes
    every record equal to it (answer compared after processing) with it, as the official."""
    if not answers:
        raise ValueError("no human answers to score against")
    answers = [clean_answer(answer) for answer in answers]
    predicted = clean_answer(prediction)
    if len(set(answers)) > 1:
        answers = [normalize_answer(answer) for answer in answers]
        predicted = normalize_answer(predicted)
    matching = [answer == predicted for answer in answers]
    if records is None or _distinct(records):
        total = sum(matching)
        others = [total - match for match in matching]
    else:
        rows = [
            {**record, "answer": answer} for record, answer in zip(records, answers, strict=True)
        ]
        others = [
            sum(match for other, match in zip(rows, matching, strict=True) if other != row)
            for row in rows
        ]
    return _mean([min(1, count / 3) for count in others])


def answer_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """Accuracy of one predicted answer against the human answers (ten in VQA v2).

    Each human is left out in turn and the prediction scores min(1, matches among the
    others / 3); the result is the mean. With ten answers, 1, 2, 3 and 4+ matches give 0.3,
    0.6, 0.9 and 1. Answers are compared after ``clean_answer`` only when the humans all agree,
    after ``normalize_answer`` (prediction and humans alike) when they do not.

    >>> answer_accuracy("Two", ["2"] * 9 + ["two"])  # they disagree: both sides normalised
    1.0
    >>> answer_accuracy("Two", ["2"] * 10)  # they agree: compared as typed
    0.0
    """
    return _accuracy(prediction, answers, None)


def _entries(data: Any, key: str | None, source: str) -> list[Mapping[str, Any]]:
    """``data[key]`` (or ``data`` itself) as a list of objects, each with a question_id."""
    if key is not None:
        if not isinstance(data, Mapping) or key not in data:
            raise ValueError(f"{source}: expected an object with a {key!r} list")
        data = data[key]
    if not isinstance(data, list):
        raise ValueError(f"{source}: expected a list of objects, got {type(data).__name__}")
    for index, entry in enumerate(data):
        if not isinstance(entry, Mapping) or "question_id" not in entry:
            raise ValueError(f"{source}: entry {index} is not an object with a question_id")
    return data


def _by_id(entries: list[Mapping[str, Any]], source: str) -> dict[Any, Mapping[str, Any]]:
    """Entries keyed by question id; a repeated id is an error."""
    by_id: dict[Any, Mapping[str, Any]] = {}
    for entry in entries:
        if entry["question_id"] in by_id:
            raise ValueError(f"{source}: question_id {entry['question_id']!r} appears twice")
        by_id[entry["question_id"]] = entry
    return by_id


def _some(ids: Sequence[Any]) -> str:
    """A few ids for an error message."""
    shown = ", ".join(repr(i) for i in ids[:5])
    return f"{shown}, ..." if len(ids) > 5 else shown


def _human_answers(annotation: Mapping[str, Any], source: str) -> list[Mapping[str, Any]]:
    """The answer records of one annotation, checked along with its two type fields."""
    qid = annotation["question_id"]
    answers = annotation.get("answers")
    if not isinstance(answers, list) or not answers:
        raise ValueError(f"{source}: question_id {qid!r} has no 'answers' list")
    if not all(isinstance(a, Mapping) and isinstance(a.get("answer"), str) for a in answers):
        raise ValueError(f"{source}: question_id {qid!r} has an answer without an 'answer' string")
    for field in ("answer_type", "question_type"):
        if not isinstance(annotation.get(field), str):
            raise ValueError(f"{source}: question_id {qid!r} has no {field!r} string")
    return answers


def _scores(
    questions: Any, annotations: Any, predictions: Any, sources: tuple[str, str, str]
) -> dict[str, Any]:
    """``vqa_scores`` with each input's name (or file) for its error messages."""
    question_source, annotation_source, prediction_source = sources
    asked = _by_id(_entries(questions, "questions", question_source), question_source)
    annotated = _by_id(_entries(annotations, "annotations", annotation_source), annotation_source)
    predicted = _by_id(_entries(predictions, None, prediction_source), prediction_source)
    if not annotated:
        raise ValueError(f"{annotation_source}: no annotations to score")
    unasked = [qid for qid in annotated if qid not in asked]
    if unasked:
        raise ValueError(
            f"{annotation_source}: {len(unasked)} annotated question ids are not in "
            f"{question_source} ({_some(unasked)}); are the files from the same split?"
        )
    missing = [qid for qid in annotated if qid not in predicted]
    if missing:
        raise ValueError(
            f"{prediction_source}: no answer for {len(missing)} of {len(annotated)} annotated "
            f"questions ({_some(missing)})"
        )
    unknown = [qid for qid in predicted if qid not in annotated]
    if unknown:
        raise ValueError(
            f"{prediction_source}: {len(unknown)} question ids are not in {annotation_source} "
            f"({_some(unknown)})"
        )
    per_question: dict[Any, float] = {}
    per_answer_type: dict[str, list[float]] = {}
    per_question_type: dict[str, list[float]] = {}
    for qid, annotation in annotated.items():
        records = _human_answers(annotation, annotation_source)
        prediction = predicted[qid].get("answer")
        if not isinstance(prediction, str):
            raise ValueError(f"{prediction_source}: question_id {qid!r} has no 'answer' string")
        answers = [record["answer"] for record in records]
        accuracy = _accuracy(prediction, answers, records)
        per_question[qid] = accuracy
        per_answer_type.setdefault(annotation["answer_type"], []).append(accuracy)
        per_question_type.setdefault(annotation["question_type"], []).append(accuracy)
    return {
        "overall": _mean(list(per_question.values())),
        "per_question": per_question,
        "per_answer_type": {name: _mean(values) for name, values in per_answer_type.items()},
        "per_question_type": {name: _mean(values) for name, values in per_question_type.items()},
    }


def vqa_scores(questions: Any, annotations: Any, predictions: Any) -> dict[str, Any]:
    """VQA accuracy overall, per question, per answer type and per question type.

    ``questions`` and ``annotations`` are the loaded VQA v2 question and annotation files
    ({"questions": [...]}, {"annotations": [...]}), ``predictions`` the results list
    [{"question_id", "answer"}]. Scores are fractions in [0, 1], unrounded (the official code
    reports percentages rounded to two decimals); the per-type scores are means of the
    per-question scores. As there, every annotated question needs a prediction and no
    prediction may name another question; an id given twice is refused (the official keeps
    the last one). A left-out human answer takes every answer object equal to it along, as the
    official compares whole objects: only itself in VQA v2 files, where each has its own
    answer_id.
    """
    return _scores(questions, annotations, predictions, ("questions", "annotations", "predictions"))


def vqa_scores_from_files(
    questions_path: str | Path, annotations_path: str | Path, results_path: str | Path
) -> dict[str, Any]:
    """``vqa_scores`` of the three JSON files; every error names the file at fault."""
    return _scores(
        read_json(questions_path, "questions"),
        read_json(annotations_path, "annotations"),
        read_json(results_path, "results"),
        (str(questions_path), str(annotations_path), str(results_path)),
    )
