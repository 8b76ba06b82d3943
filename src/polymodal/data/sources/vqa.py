"""VQA v2: the official questions and annotations files (and the complementary pairs file), and
the official results file.

One row per question: ``question_id``, ``split``, ``image``, ``image_id``, ``question``; with
annotations also ``answer`` (the annotation's ``multiple_choice_answer``), ``answers`` (the ten
human answers, in file order), ``question_type`` and ``answer_type``; with a pairs file also
``complement``, the id of the question asked of a similar image with another answer. A split
without an annotations file (test-dev, test) gets rows without answers, to predict.

Images are named as COCO names them: ``COCO_{data_subtype}_{image_id:012d}.jpg`` in the split's
images folder, ``data_subtype`` ("train2014") taken from the questions file; another
``image_pattern`` may use ``{image_id}``, ``{data_subtype}`` and ``{split}``.
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from polymodal.data.quarantine import Quarantine
from polymodal.data.sources.convert import (
    Conversion,
    ImageFiles,
    PathLike,
    folder_for,
    lacking,
    read_lists,
    skip,
    write_manifest,
)
from polymodal.data.sources.manifest import Row
from polymodal.errors import DataError
from polymodal.io import read_json, write_json

IMAGE_PATTERN = "COCO_{data_subtype}_{image_id:012d}.jpg"
PATTERN_FIELDS = ("image_id", "data_subtype", "split")
QUESTION_FIELDS = {"question_id": int, "image_id": int, "question": str}
ANNOTATION_FIELDS = {
    "question_id": int,
    "multiple_choice_answer": str,
    "answers": list,
    "question_type": str,
    "answer_type": str,
}


def convert_vqa(
    out_dir: PathLike,
    questions: Mapping[str, PathLike],
    images: PathLike | Mapping[str, PathLike],
    annotations: Mapping[str, PathLike] | None = None,
    pairs: Sequence[PathLike] = (),
    image_pattern: str | None = None,
    check_images: bool = True,
) -> Conversion:
    """Write out_dir/manifest.jsonl from VQA v2 files: ``questions`` and ``annotations`` are
    {split: file}, ``pairs`` complementary pairs files (lists of [question_id, question_id]).

    ``image_pattern`` names the image files (default ``IMAGE_PATTERN``). Left out, with their
    reasons: malformed entries, questions of an annotated split without an annotation,
    annotations without a question, images not on disk (unless ``check_images`` is off).
    Annotations that answer none of their split's questions are an error: the files are from
    different splits.
    """
    image_pattern = image_pattern or IMAGE_PATTERN
    _check_pattern(image_pattern)
    annotations = annotations or {}
    if unknown := sorted(set(annotations) - set(questions)):
        raise DataError(
            f"annotations for split(s) {', '.join(unknown)}, which no questions file has"
        )
    skipped = Quarantine()
    reader = _Reader(_partners(pairs, skipped), image_pattern, ImageFiles(out_dir, check_images))
    rows = (
        row
        for split, path in questions.items()
        for row in reader.rows(
            path, split, annotations.get(split), folder_for(images, split, "images"), skipped
        )
    )
    return write_manifest(out_dir, rows, skipped, "vqa")


def _check_pattern(pattern: str) -> None:
    fields = [name for _, name, _, _ in string.Formatter().parse(pattern) if name is not None]
    if unknown := [name for name in fields if name not in PATTERN_FIELDS]:
        raise DataError(
            f"image pattern {pattern!r}: unknown field {{{unknown[0]}}}; "
            f"it may use {', '.join('{' + f + '}' for f in PATTERN_FIELDS)}"
        )
    try:
        pattern.format(image_id=1, data_subtype="train2014", split="train")
    except ValueError as err:
        raise DataError(f"image pattern {pattern!r}: {err}") from None


@dataclass
class _Reader:
    """What every split's questions are read with: the complementary pairs, how images are
    named and where they are found."""

    partners: dict[int, int]
    pattern: str
    files: ImageFiles

    def rows(
        self,
        path: PathLike,
        split: str,
        annotation_path: PathLike | None,
        folder: Path,
        skipped: Quarantine,
    ) -> Iterator[Row]:
        """One split's rows, from its questions and (if any) its annotations file."""
        data = read_lists(path, ("questions",), "VQA questions")
        subtype = data.get("data_subtype")
        if not isinstance(subtype, str) and "{data_subtype" in self.pattern:
            raise DataError(
                f"VQA questions file {path}: no 'data_subtype' string (such as \"train2014\"), "
                f"which the image names need ({self.pattern}); add it, or give an image pattern "
                "without {data_subtype}"
            )
        answered, index_of = _annotations(annotation_path, skipped) if annotation_path else ({}, {})
        asked: set[int] = set()
        source = f"{path}:questions"
        for index, entry in enumerate(data["questions"]):
            if why := lacking(entry, QUESTION_FIELDS):
                skip(skipped, source, index, "malformed entry", why)
                continue
            qid, image_id = entry["question_id"], entry["image_id"]
            asked.add(qid)
            if annotation_path and qid not in answered:
                detail = f"question {qid} has no annotation in {annotation_path}"
                skip(skipped, source, index, "no annotation", detail, "question_id")
                continue
            name = self.pattern.format(image_id=image_id, data_subtype=subtype, split=split)
            image = self.files.locate(folder / name)
            if image is None:
                detail = f"{folder / name} is not a file"
                skip(skipped, source, index, "missing image", detail, "image")
                continue
            row = {"question_id": qid, "split": split, "image": image, "image_id": image_id}
            row["question"] = entry["question"]
            if qid in answered:
                row |= _answer_columns(answered[qid])
            if qid in self.partners:
                row["complement"] = self.partners[qid]
            yield row
        if annotation_path:
            _check_answered(path, annotation_path, answered, index_of, asked, skipped)


def _answer_columns(annotation: Mapping[str, Any]) -> Row:
    return {
        "answer": annotation["multiple_choice_answer"],
        "answers": [a["answer"] for a in annotation["answers"]],
        "question_type": annotation["question_type"],
        "answer_type": annotation["answer_type"],
    }


def _annotations(
    path: PathLike, skipped: Quarantine
) -> tuple[dict[int, Mapping[str, Any]], dict[int, int]]:
    """The usable annotations by question id, and each one's index in the file."""
    entries = read_lists(path, ("annotations",), "VQA annotations")["annotations"]
    source = f"{path}:annotations"
    by_id: dict[int, Mapping[str, Any]] = {}
    index_of: dict[int, int] = {}
    for index, entry in enumerate(entries):
        why = lacking(entry, ANNOTATION_FIELDS)
        if why is None and any(lacking(a, {"answer": str}) for a in entry["answers"]):
            why = "an answer without an 'answer' string"
        if why:
            skip(skipped, source, index, "malformed entry", why)
        elif entry["question_id"] in by_id:
            detail = f"question {entry['question_id']} annotated again"
            skip(skipped, source, index, "duplicate id", detail, "question_id")
        else:
            by_id[entry["question_id"]] = entry
            index_of[entry["question_id"]] = index
    if entries and not by_id:
        last = skipped.rows[-1]
        raise DataError(
            f"VQA annotations file {path}: no usable annotation (entry {last.line}: {last.detail})"
        )
    return by_id, index_of


def _check_answered(
    questions_path: PathLike,
    path: PathLike,
    answered: Mapping[int, Mapping[str, Any]],
    index_of: Mapping[int, int],
    asked: set[int],
    skipped: Quarantine,
) -> None:
    """Annotations of no question are left out; if none has its question, the files do not
    belong together."""
    if asked and not asked & answered.keys():
        raise DataError(
            f"VQA annotations file {path} answers none of the questions of {questions_path}; "
            "are the two files from the same split?"
        )
    for qid in sorted(answered.keys() - asked, key=index_of.__getitem__):
        detail = f"question {qid} is not in {questions_path}"
        skip(skipped, f"{path}:annotations", index_of[qid], "no question", detail, "question_id")


def _partners(paths: Iterable[PathLike], skipped: Quarantine) -> dict[int, int]:
    """Each question id of a complementary pair mapped to the other's."""
    partners: dict[int, int] = {}
    for path in paths:
        pairs = read_json(path, "VQA complementary pairs")
        if not isinstance(pairs, list):
            raise DataError(
                f"VQA complementary pairs file {path}: expected a list of "
                f"[question_id, question_id] pairs, got a {type(pairs).__name__}"
            )
        for index, pair in enumerate(pairs):
            if not _is_pair(pair):
                detail = f"pair: expected [question_id, question_id], got {pair!r:.60}"
                skip(skipped, path, index, "malformed entry", detail)
                continue
            partners[pair[0]], partners[pair[1]] = pair[1], pair[0]
    return partners


def _is_pair(pair: Any) -> bool:
    return (
        isinstance(pair, list)
        and len(pair) == 2
        and all(isinstance(q, int) and not isinstance(q, bool) for q in pair)
    )


def write_vqa_results(predictions: Mapping[Any, str], path: PathLike) -> Path:
    """The official VQA results file, ``[{"question_id": ..., "answer": ...}]``, from
    {question_id: answer}; what ``polymodal eval vqa`` and the official evaluation read."""
    results = []
    for qid, answer in predictions.items():
        if not isinstance(answer, str):
            raise DataError(f"question {qid!r}: the answer must be a string, got {answer!r:.60}")
        results.append({"question_id": qid, "answer": answer})
    return write_json(path, results)
