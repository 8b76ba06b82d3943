"""Caption metrics as the official COCO caption evaluation (pycocoevalcap) reports them.

Captions are tokenized like pycocoevalcap's PTBTokenizer (in Python, see ptb_tokenizer.py),
then scored with BLEU-1..4, METEOR (the METEOR 1.5 jar, when Java is available), ROUGE-L and
CIDEr-D. Each image has one candidate caption and one or more reference captions.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Mapping, Sequence
from itertools import accumulate
from pathlib import Path
from typing import Any

from polymodal.errors import DataError
from polymodal.io import read_json
from polymodal.metrics import caption_ngrams, ptb_tokenizer
from polymodal.metrics.meteor import MeteorProcess, MeteorUnavailable

METRICS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")
SHOWN_IDS = 10  # ids listed in an error message


def caption_scores(
    references: Mapping[Hashable, Sequence[str]],
    candidates: Mapping[Hashable, str],
    meteor: bool = True,
) -> dict[str, Any]:
    """Corpus and per-image scores of ``candidates`` against ``references``, keyed by image id.

    Returns ``{"corpus": {metric: score}, "per_item": {id: {metric: score}}}`` with the metrics
    in METRICS. When METEOR cannot run (no Java, no jar) or ``meteor`` is False, its scores are
    None and ``"unavailable": {"METEOR": reason}`` says why. Captions are tokenized as
    pycocoevalcap does: references in the order given (image by image), then candidates in
    the references' image order.
    """
    _check(references, candidates)
    ids = list(references)
    meteor_process: MeteorProcess | None = None
    unavailable = "not computed: meteor=False"
    if meteor:  # the JVM starts while the other metrics are computed
        try:
            meteor_process = MeteorProcess()
        except MeteorUnavailable as err:
            unavailable = str(err)
    try:
        counts = [len(references[i]) for i in ids]
        tokenized_refs = ptb_tokenizer.tokenize([c for i in ids for c in references[i]])
        tokenized_cands = ptb_tokenizer.tokenize([candidates[i] for i in ids])
        corpus = caption_ngrams.Corpus(tokenized_refs, counts, tokenized_cands)
        bleu_corpus, bleu_items, rouge_items, cider_items = caption_ngrams.scores(corpus)
        meteor_corpus: float | None = None
        meteor_items: list[float | None] = [None] * len(ids)
        if meteor_process is not None:
            try:
                grouped = [
                    tokenized_refs[a - n : a]
                    for a, n in zip(accumulate(counts), counts, strict=True)
                ]
                meteor_corpus, values = meteor_process.score(grouped, tokenized_cands)
                meteor_items = list(values)
            except MeteorUnavailable as err:
                unavailable = str(err)
    finally:
        if meteor_process is not None:
            meteor_process.close()
    bleu_names = [f"Bleu_{n + 1}" for n in range(caption_ngrams.MAX_N)]
    corpus_scores = dict(zip(bleu_names, bleu_corpus, strict=True))
    corpus_scores["METEOR"] = meteor_corpus
    corpus_scores["ROUGE_L"] = float(rouge_items.mean())
    corpus_scores["CIDEr"] = float(cider_items.mean())
    per_item = {
        image: {
            "Bleu_1": b1,
            "Bleu_2": b2,
            "Bleu_3": b3,
            "Bleu_4": b4,
            "METEOR": m,
            "ROUGE_L": r,
            "CIDEr": c,
        }
        for image, (b1, b2, b3, b4), m, r, c in zip(
            ids,
            bleu_items.tolist(),
            meteor_items,
            rouge_items.tolist(),
            cider_items.tolist(),
            strict=True,
        )
    }
    scores: dict[str, Any] = {"corpus": corpus_scores, "per_item": per_item}
    if meteor_corpus is None:
        scores["unavailable"] = {"METEOR": unavailable}
    return scores


def _check(
    references: Mapping[Hashable, Sequence[str]], candidates: Mapping[Hashable, str]
) -> None:
    """Same image ids on both sides, one candidate string and at least one reference each."""
    missing = [i for i in references if i not in candidates]
    extra = [i for i in candidates if i not in references]
    if missing or extra:
        parts = []
        if missing:
            parts.append(
                f"{len(missing)} image ids have references but no candidate: {_show(missing)}"
            )
        if extra:
            parts.append(
                f"{len(extra)} image ids have a candidate but no references: {_show(extra)}"
            )
        raise ValueError("; ".join(parts))
    if not references:
        raise ValueError("no images to score: references and candidates are empty")
    for image, captions in references.items():
        if not isinstance(captions, (list, tuple)) or not captions:
            raise ValueError(f"references for image {image!r} must be a non-empty list of strings")
    for image, captions in references.items():
        if not all(isinstance(c, str) for c in captions):
            raise ValueError(f"references for image {image!r} hold a non-string caption")
    for image, caption in candidates.items():
        if not isinstance(caption, str):
            raise ValueError(
                f"candidate for image {image!r} is {type(caption).__name__}, not a string"
            )


def _show(ids: list[Hashable]) -> str:
    shown = ", ".join(repr(i) for i in ids[:SHOWN_IDS])
    return shown + (f" and {len(ids) - SHOWN_IDS} more" if len(ids) > SHOWN_IDS else "")


def load_coco_captions(
    annotations: str | Path, results: str | Path
) -> tuple[dict[Hashable, list[str]], dict[Hashable, str]]:
    """(references, candidates) from a COCO annotations file and a COCO results file.

    The annotations file is ``{"annotations": [{"image_id": ..., "caption": ...}, ...]}``; the
    results file is ``[{"image_id": ..., "caption": ...}, ...]`` with one caption per image.
    """
    references: dict[Hashable, list[str]] = {}
    data = read_json(annotations, "annotations")
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise DataError(
            f'annotations file {annotations}: expected an object with an "annotations" list'
        )
    for _, image, caption in _entries(data["annotations"], annotations, "annotations"):
        references.setdefault(image, []).append(caption)
    candidates: dict[Hashable, str] = {}
    data = read_json(results, "results")
    if not isinstance(data, list):
        raise DataError(
            f'results file {results}: expected a list of {{"image_id", "caption"}} objects'
        )
    for index, image, caption in _entries(data, results, "results"):
        if image in candidates:
            raise DataError(
                f"results file {results}: entry {index} repeats image_id {image!r}; "
                "expected one caption per image"
            )
        candidates[image] = caption
    return references, candidates


def _entries(items: list[Any], path: str | Path, what: str) -> Iterator[tuple[int, Any, str]]:
    """(index, image id, caption) of each entry, checked."""
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise DataError(f"{what} file {path}: entry {index} is not an object")
        for field in ("image_id", "caption"):
            if field not in item:
                raise DataError(f'{what} file {path}: entry {index} has no "{field}"')
        image, caption = item["image_id"], item["caption"]
        if not isinstance(image, (int, str)) or isinstance(image, bool):
            raise DataError(
                f"{what} file {path}: entry {index} has image_id {image!r}; "
                "expected an integer or string"
            )
        if not isinstance(caption, str):
            raise DataError(
                f"{what} file {path}: entry {index} has caption {caption!r}; expected a string"
            )
        yield index, image, caption
