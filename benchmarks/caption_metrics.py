"""Caption metrics: polymodal against pycocoevalcap (the official COCO caption evaluation).

Both run in the same process on the same synthetic COCO-like captions (5 references and one
candidate per image; a seeded generator varies vocabulary, punctuation, numbers and
contractions). The baseline is what COCOEvalCap does: PTBTokenizer (Java) on references and
candidates, then its BLEU, ROUGE-L and CIDEr-D scorers; METEOR (the same jar for both) is
timed separately. Every corpus and per-image score must agree before any time is reported.

    python benchmarks/caption_metrics.py [--images 5000] [--repeats 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

from polymodal.metrics import ptb_tokenizer
from polymodal.metrics.captioning import caption_scores
from polymodal.metrics.meteor import meteor_scores

REFERENCES_PER_IMAGE = 5


def words(text: str) -> list[str]:
    return text.split()


TOLERANCE = 1e-9
NGRAM_METRICS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr")

DETERMINERS = words("a the two some an three one many several this")
ADJECTIVES = words(
    """young old small large red blue white black wooden happy brown tall little yellow green
    dirty clean crowded empty colorful big cute busy open parked striped grassy snowy sunny dark
    bright furry modern old-fashioned double-decker"""
)
NOUNS = [
    *words(
        """man woman dog cat child boy girl group skateboarder surfer person couple player chef
        bird horse giraffe elephant train bus plate pizza kitchen bathroom zebra table street
        field beach kite frisbee laptop phone umbrella bench truck car bike motorcycle sandwich
        cake donut banana clock tower building room couch bed wave snowboard sign boat airplane
        sheep cow bear toilet sink window door"""
    ),
    *["teddy bear", "tennis racket", "fire hydrant"],
]
VERBS = [
    *words("riding holding eating flying carrying throwing watching near"),
    *["sitting on", "standing next to", "looking at", "walking down", "playing with"],
    *["laying on", "jumping over", "parked near", "sitting in", "covered in", "filled with"],
    *["on top of", "in front of", "next to"],
]
PLACES = [
    *["in the background", "on a sunny day", "at night", "near a building", "in the snow"],
    *["on the grass", "in the water", "on a table", "in a field", "by the ocean", "in a city"],
    *["on the side of the road", "during the day"],
]
EXTRAS = [
    *[" - outdoors", " ... maybe", " & friends", " w/ hat", " 50% off", " in the U.S."],
    *[" at 10:30 a.m.", " (in color)", " (left)", ' called "Joe\'s"', " that isn't moving"],
]


def caption(rng: random.Random) -> str:
    """A COCO-like caption: mostly plain words and a period, sometimes more."""
    words = [rng.choice(DETERMINERS)]
    if rng.random() < 0.6:
        words.append(rng.choice(ADJECTIVES))
    words += [rng.choice(NOUNS), rng.choice(VERBS), rng.choice(DETERMINERS)]
    if rng.random() < 0.4:
        words.append(rng.choice(ADJECTIVES))
    words.append(rng.choice(NOUNS))
    if rng.random() < 0.35:
        words.append(rng.choice(PLACES))
    text = " ".join(words)
    kind = rng.random()
    if kind < 0.06:
        text = text.replace(words[2], words[2] + " that's", 1)
    elif kind < 0.12:
        text = text.replace(words[2], words[2] + ",", 1)
    elif kind < 0.17:
        text = text.replace(words[0], rng.choice(["2", "3", "10", "1,000", "3.5"]), 1)
    elif kind < 0.20:
        text = text.replace(words[2], words[2] + "'s " + rng.choice(NOUNS), 1)
    elif kind < 0.26:
        text += rng.choice(EXTRAS)
    if rng.random() < 0.85:
        text = text[0].upper() + text[1:]
    end = rng.random()
    return text + ("." if end < 0.72 else "" if end < 0.86 else " ." if end < 0.93 else "!")


def dataset(images: int, seed: int) -> tuple[dict[int, list[str]], dict[int, str]]:
    rng = random.Random(seed)
    references = {i: [caption(rng) for _ in range(REFERENCES_PER_IMAGE)] for i in range(images)}
    candidates = {i: caption(rng) for i in range(images)}
    return references, candidates


def baseline(references: dict[int, list[str]], candidates: dict[int, str]) -> dict:
    """COCOEvalCap's steps without METEOR: Java tokenizer, then BLEU, ROUGE-L, CIDEr-D."""
    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({i: [{"caption": c} for c in refs] for i, refs in references.items()})
    res = tokenizer.tokenize({i: [{"caption": candidates[i]}] for i in references})
    corpus, per_item = {}, {i: {} for i in gts}
    for scorer, names in (
        (Bleu(4), NGRAM_METRICS[:4]),
        (Rouge(), ["ROUGE_L"]),
        (Cider(), ["CIDEr"]),
    ):
        score, scores = (
            scorer.compute_score(gts, res, verbose=0)
            if names[0] == "Bleu_1"
            else scorer.compute_score(gts, res)
        )
        if len(names) == 1:
            score, scores = [score], [scores]
        for name, value, values in zip(names, score, scores, strict=True):
            corpus[name] = float(value)
            for image, item in zip(gts, values, strict=True):
                per_item[image][name] = float(item)
    return {"corpus": corpus, "per_item": per_item, "tokenized": (gts, res)}


def check_equal(ours: dict, theirs: dict, metrics: tuple[str, ...]) -> float:
    """Largest absolute difference; fails if any exceeds TOLERANCE."""
    worst = 0.0
    for metric in metrics:
        worst = max(worst, abs(ours["corpus"][metric] - theirs["corpus"][metric]))
        for image, item in theirs["per_item"].items():
            worst = max(worst, abs(ours["per_item"][image][metric] - item[metric]))
    assert worst <= TOLERANCE, f"scores differ by {worst}"
    return worst


def median_seconds(fn, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def java_version() -> str:
    try:
        done = subprocess.run(["java", "-version"], capture_output=True, text=True, check=False)
    except OSError:
        return "unavailable"
    return (
        (done.stderr or done.stdout).splitlines()[0] if (done.stderr or done.stdout) else "unknown"
    )


def run(images: int, repeats: int, meteor_repeats: int) -> dict:
    references, candidates = dataset(images, seed=images)
    ours = caption_scores(references, candidates, meteor=False)
    theirs = baseline(references, candidates)
    worst = check_equal(ours, theirs, NGRAM_METRICS)
    polymodal_seconds, _ = median_seconds(
        lambda: caption_scores(references, candidates, meteor=False), repeats
    )
    tokenize_seconds, _ = median_seconds(
        lambda: (
            ptb_tokenizer.tokenize([c for refs in references.values() for c in refs]),
            ptb_tokenizer.tokenize(list(candidates.values())),
        ),
        repeats,
    )
    baseline_seconds, _ = median_seconds(lambda: baseline(references, candidates), repeats)
    print(
        f"{images} images x {REFERENCES_PER_IMAGE} references, tokenize+BLEU+ROUGE-L+CIDEr-D: "
        f"pycocoevalcap {baseline_seconds:.3f} s, polymodal {polymodal_seconds:.3f} s "
        f"(tokenizer {tokenize_seconds:.3f} s), {baseline_seconds / polymodal_seconds:.1f}x "
        f"faster (medians of {repeats}; max difference {worst:.1e})"
    )

    gts, res = theirs["tokenized"]
    tokenized_refs = [gts[i] for i in references]
    tokenized_cands = [res[i][0] for i in references]

    def their_meteor() -> tuple[float, list[float]]:
        scorer = Meteor()  # starts the JVM, as COCOEvalCap does for each evaluation
        score, scores = scorer.compute_score(gts, res)
        del scorer
        return score, scores

    their_meteor_seconds, (their_corpus, their_items) = median_seconds(their_meteor, meteor_repeats)
    our_meteor_seconds, (our_corpus, our_items) = median_seconds(
        lambda: meteor_scores(tokenized_refs, tokenized_cands), meteor_repeats
    )
    meteor_worst = max(
        abs(our_corpus - their_corpus),
        float(np.max(np.abs(np.array(our_items) - np.array(their_items)))),
    )
    assert meteor_worst <= TOLERANCE, f"METEOR differs by {meteor_worst}"
    print(
        f"METEOR (Java, JVM start included): pycocoevalcap {their_meteor_seconds:.2f} s, "
        f"polymodal {our_meteor_seconds:.2f} s (medians of {meteor_repeats}; "
        f"max difference {meteor_worst:.1e})"
    )
    return {
        "benchmark": "caption_metrics",
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "numpy": np.__version__,
            "pycocoevalcap": version("pycocoevalcap"),
            "java": java_version(),
        },
        "images": images,
        "references_per_image": REFERENCES_PER_IMAGE,
        "repeats": repeats,
        "meteor_repeats": meteor_repeats,
        "max_abs_difference": worst,
        "tokenize_bleu_rouge_cider": {
            "pycocoevalcap_seconds": round(baseline_seconds, 4),
            "polymodal_seconds": round(polymodal_seconds, 4),
            "polymodal_tokenizer_seconds": round(tokenize_seconds, 4),
            "speedup": round(baseline_seconds / polymodal_seconds, 1),
        },
        "meteor": {
            "pycocoevalcap_seconds": round(their_meteor_seconds, 3),
            "polymodal_seconds": round(our_meteor_seconds, 3),
            "max_abs_difference": meteor_worst,
            "corpus_meteor": our_corpus,
        },
        "corpus_scores": {k: v for k, v in ours["corpus"].items() if v is not None},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--meteor-repeats", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/caption_metrics.json")
    args = parser.parse_args()
    report = run(args.images, args.repeats, args.meteor_repeats)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
