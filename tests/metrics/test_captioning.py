"""Caption metrics against pycocoevalcap itself: its Java tokenizer and its scorers.

The tokenizer is compared on thousands of generated captions in one run of the Java
tokenizer; the scores (BLEU-1..4, METEOR, ROUGE-L, CIDEr-D, corpus and per image) on edge
cases and random captions. pycocoevalcap needs Java for its tokenizer and for METEOR.
"""

from __future__ import annotations

import json
import random
import shutil
import string
from pathlib import Path

import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

from polymodal.errors import DataError
from polymodal.metrics import captioning, meteor, ptb_tokenizer
from polymodal.metrics.captioning import METRICS, caption_scores, load_coco_captions

requires_java = pytest.mark.skipif(
    shutil.which("java") is None, reason="pycocoevalcap runs Java (tokenizer, METEOR); no java"
)
TOLERANCE = 1e-6


def words(text: str) -> list[str]:
    return text.split()


NOUNS = [
    *words(
        "man woman dog cat child skateboarder giraffe train pizza kitchen street beach kite"
        " frisbee laptop umbrella"
    ),
    "teddy bear",
]
ADJECTIVES = words("young old small red wooden happy double-decker snowy")
VERBS = [
    *words("riding holding eating flying"),
    "sitting on",
    "standing next to",
    "looking at",
    "walking down",
    "parked near",
    "jumping over",
]
FRAGMENTS = [
    *words(
        r"""
        a A the The It I x J U S man MAN dog Inc Corp Calif Ark ark etc al Mr Mrs Dr St vs
        No Jan Sept gonna cannot wanna y l d o n t em U.S a.m e.g www com http e co AT T S&P
        C.D.s pro anti café naïve Über 日本 Москва ελληνικά ﬁ İstanbul ΣΟΦΟΣ straße can't
        won't it's I'm we'll they're you've he'd don't isn't ain't y'all o'clock l'amour
        rock'n'roll Dunkin' ol' 'em '90s '99 cont'd c'mon ma'am more'n 3 10 3.5 1,000
        1.000.000 -3 +4 10:30 1/2 12-3-2014 555 4567 (555) +1 ½ ² ₂ $ US$ £ € ¢ # @ @user
        #tag % & &amp; &lt; &quot; &apos; &nbsp; &eacute; :) :-( ;) :D =] <3 <b> </b> <br/>
        << >> < > [ ] { } ( ) . , ; : ! ? ?! ... .. … - -- --- — – _ * \* / = ' '' ` `` " “
        ” ‘ ’ « » ¿ ¡ • → © ° × § | ~ ^ \ www.google.com google.com/a?b=1 http://x.com/a?b=1
        a@b.com e-mail x-ray TRS-80 mid-90s and/or w/ 😀 Ph.D a.k.a U.S.-U.K Japan-U.S Cap'n
        AT&T R&D A+B don'ts d'ye 'tis 'twas 1980's n't 's 're file.txt 9.x c# C++ ^_^ (^_^)
        Inc. Calif. No. Fig. p. Ph.D. pro-ain't dog., Pte. Adj. Rt. google.com/😀 U.S. J.
        a.m. Mr. etc. vs. Dept. tel. Az.
        """
    ),
    *[". . .", "soft\xadhyphen", "\u200b", "\x7f", "\xa0", "\u2003", "\u3000", "\t"],
]
SEPARATORS = [" "] * 10 + [""] * 5 + ["  ", "\u00a0", "\t", " . ", ", ", "-", "/", "'", "."]
# pycocoevalcap writes one caption per line, but the Java tokenizer also ends lines at these
# characters, which shifts every later caption; they are left out of the comparisons.
LINE_BREAKS = "\r\x0b\x0c\x85\u2028\u2029"
SOUP = (
    string.ascii_letters
    + string.digits
    + " .,;:'\"-_()[]{}<>/\\@#$%&*+=!?`~^|"
    + "\u00a0\u2019\u2018\u201c\u201d\u2014\u2013\u2026\u00e9\u00bd\u00b2\u00ad\u2003\u03a3"
    + "\u0416\u4e2d\u0660\u00a3\u20ac\u00a2\x92\x93\x96"
)


EXTRAS = ["", "", "", ", and a dog", " that isn't moving", " (in color)", " & co", " 5 1/2 ft"]
EXTRAS += [" at 10:30 a.m.", " in the U.S.", ' called "Joe\'s"']


def realistic(rng: random.Random) -> str:
    """A COCO-like caption with occasional punctuation, numbers and contractions."""
    parts = [rng.choice(["A", "a", "The", "Two", "An", "3", "Some"])]
    if rng.random() < 0.5:
        parts.append(rng.choice(ADJECTIVES))
    parts += [rng.choice(NOUNS), rng.choice(VERBS), "a", rng.choice(NOUNS)]
    ending = rng.choice([".", ".", "", " .", "!", ". ", "..."])
    return " ".join(parts) + rng.choice(EXTRAS) + ending


def word_mix(rng: random.Random) -> str:
    parts = []
    for _ in range(rng.randint(0, 9)):
        parts += [rng.choice(FRAGMENTS), rng.choice(SEPARATORS)]
    line = "".join(parts)
    return (line.strip() if rng.random() < 0.5 else line) + rng.choice(["", ".", ". ", "!"])


def soup(rng: random.Random) -> str:
    return "".join(rng.choice(SOUP) for _ in range(rng.randint(0, 24)))


def number(rng: random.Random) -> str:
    parts = []
    for _ in range(rng.randint(1, 5)):
        parts.append("".join(rng.choice(string.digits) for _ in range(rng.randint(1, 5))))
        parts.append(rng.choice(["", ".", ",", ":", "-", "/", " ", "\u00a0", "(", ")", "%", "."]))
    return rng.choice(["", "x ", "$", "(", "+"]) + "".join(parts) + rng.choice(["", " y", "."])


def abbreviation_end(rng: random.Random) -> str:
    """A line whose last token depends on the next line (capital letter, follower word...)."""
    return (
        rng.choice(["x", "A", "The"])
        + " "
        + rng.choice(
            ["Inc.", "U.S.", "etc.", "Mr.", "J.", "Calif.", "No.", "a.m.", ":)", "'99", "Ph.D."]
        )
        + rng.choice(["", " ", "  ", "\u00a0"])
    )


def generated_lines(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    makers = [realistic, word_mix, word_mix, soup, number, abbreviation_end]
    lines = []
    for _ in range(count):
        lines.append(rng.choice(makers)(rng))
        if rng.random() < 0.1:  # what follows an abbreviation matters
            lines.append(rng.choice(["", " ", "The end", "the end", "<b>x", "5", "An x", "Mr. X"]))
    return ["".join(" " if c in LINE_BREAKS else c for c in line) for line in lines]


def java_tokenized(lines: list[str]) -> list[str]:
    """pycocoevalcap's PTBTokenizer output, all lines in one Java run."""
    result = PTBTokenizer().tokenize({i: [{"caption": line}] for i, line in enumerate(lines)})
    return [result[i][0] for i in range(len(lines))]


@requires_java
def test_tokenizer_matches_pycocoevalcap_on_generated_captions() -> None:
    lines = generated_lines(12000, seed=7)
    expected = java_tokenized(lines)
    got = ptb_tokenizer.tokenize(lines)
    differing = [(line, e, g) for line, e, g in zip(lines, expected, got, strict=True) if e != g]
    assert not differing, f"{len(differing)} of {len(lines)} differ, e.g. {differing[:3]}"


@pytest.mark.parametrize(
    ("caption", "tokens"),
    [
        ("A man's dog isn't here; they're gone.", "a man 's dog is n't here they 're gone"),
        ("A cat (on the left) sits.", "a cat -lrb- on the left -rrb- sits"),
        ("It costs $3.50, or 1,000 yen!", "it costs $ 3.50 or 1,000 yen"),
        ("He gonna stay... cannot leave", "he gon na stay can not leave"),
        ("In the U.S. The man works at Acme Inc.", "in the u.s. the man works at acme inc."),
        ('She said "hi" -- twice', "she said hi twice"),
        ("Café naïve über 日本語", "café naïve über 日本語"),
        ("5 1/2 ft, call (555) 123-4567", "5\u00a01/2 ft call -lrb-555-rrb-\u00a0123-4567"),
        ("", ""),
        ("...!?", "!?"),
    ],
)
def test_tokenizer_examples(caption: str, tokens: str) -> None:
    assert ptb_tokenizer.tokenize([caption]) == [tokens]


def test_line_breaks_inside_a_caption_are_spaces() -> None:
    assert ptb_tokenizer.tokenize(["a dog\non\rthe\u2028grass", "next"]) == [
        "a dog on the grass",
        "next",
    ]


def edge_case_images() -> tuple[dict[object, list[str]], dict[object, str]]:
    """Images covering the awkward cases, then random COCO-like ones (ids of mixed types)."""
    long_caption = " ".join(["a", "very", "long", "caption", "about", "a", "dog"] * 12) + "."
    cases = [
        ([""], ["A dog.", "A black dog runs."]),
        ("", ["", "x"]),
        (".", ["A dog on grass.", "."]),
        ("!!! ??? ...", ["Wow!", "what?!"]),
        ("dog", ["dog"]),
        ("dog dog dog dog dog dog", ["a dog and a dog", "dog", "the dogs play"]),
        ("Café naïve über 日本語 🙂", ["Un café naïve", "über 日本語", "emoji 🙂 here"]),
        ("3.5 1,000 (555) 123-4567 5 1/2", ["3.5 and 1,000", "call (555) 123-4567 now", "5 1/2"]),
        ("(a man) [riding] {a} horse", ["A man (riding) a horse.", "a [horse] {ridden}"]),
        (long_caption, ["A dog.", long_caption, long_caption[:-1] + " again."]),
        ("A man's dog isn't here.", ["The man's dog isn't there.", "A dog is here."]),
        ("In the U.S. Inc. etc.", ["U.S. Inc. etc. The end", "Inc. Corp."]),
        ("\"quoted\" 'single' `tick`", ['"Quoted" words', "single 'quotes'"]),
        ("a\u00a0b c\u3000d", ["a b c d", "a\u00a0b"]),
        ("A train.", ["A train.", "A train.", "A train.", "A train.", "A train.", "A train."]),
    ]
    candidates: dict[object, str] = {}
    references: dict[object, list[str]] = {}
    for index, (candidate, refs) in enumerate(cases):
        image = f"case-{index}" if index % 2 else index
        candidate = candidate[0] if isinstance(candidate, list) else candidate
        candidates[image] = candidate
        references[image] = refs
    rng = random.Random(3)
    for image in range(1000, 1250):
        references[image] = [realistic(rng) for _ in range(rng.randint(1, 6))]
        candidates[image] = realistic(rng) if rng.random() < 0.9 else word_mix(rng)
    return references, candidates


def pycocoevalcap_scores(references, candidates, with_meteor: bool):
    """Corpus and per-image scores from pycocoevalcap's own tokenizer and scorers."""
    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({i: [{"caption": c} for c in refs] for i, refs in references.items()})
    res = tokenizer.tokenize({i: [{"caption": candidates[i]}] for i in references})
    scorers = [(Bleu(4), ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4"]), (Rouge(), ["ROUGE_L"])]
    scorers.append((Cider(), ["CIDEr"]))
    if with_meteor:
        scorers.append((Meteor(), ["METEOR"]))
    corpus, per_item = {}, {i: {} for i in gts}
    for scorer, names in scorers:
        score, scores = scorer.compute_score(gts, res)
        if len(names) == 1:
            score, scores = [score], [scores]
        for name, value, values in zip(names, score, scores, strict=True):
            corpus[name] = value
            for image, item_value in zip(gts, values, strict=True):
                per_item[image][name] = item_value
    return corpus, per_item


@requires_java
def test_scores_match_pycocoevalcap() -> None:
    references, candidates = edge_case_images()
    expected_corpus, expected_items = pycocoevalcap_scores(references, candidates, True)
    got = caption_scores(references, candidates)
    assert "unavailable" not in got
    assert list(got["corpus"]) == list(METRICS)
    for metric in METRICS:
        assert got["corpus"][metric] == pytest.approx(expected_corpus[metric], abs=TOLERANCE)
        for image in references:
            assert got["per_item"][image][metric] == pytest.approx(
                expected_items[image][metric], abs=TOLERANCE
            ), (metric, image)


@requires_java
@pytest.mark.parametrize(
    ("references", "candidates"),
    [
        # every candidate empty (a model early in training)
        ({0: ["a cat sits on the mat"], 1: ["a dog runs in the park"]}, {0: "", 1: ""}),
        # no reference has a 3-gram, a candidate does
        ({0: ["a cat"], 1: ["a dog"]}, {0: "a a a a a a", 1: ""}),
        ({0: ["dog"]}, {0: "x y z w"}),
    ],
    ids=["empty-candidates", "short-references", "one-word-reference"],
)
def test_degenerate_corpora_match_pycocoevalcap(references, candidates) -> None:
    expected_corpus, expected_items = pycocoevalcap_scores(references, candidates, False)
    got = caption_scores(references, candidates, meteor=False)
    for metric in expected_corpus:
        assert got["corpus"][metric] == pytest.approx(expected_corpus[metric], abs=TOLERANCE)
        for image in references:
            assert got["per_item"][image][metric] == pytest.approx(
                expected_items[image][metric], abs=TOLERANCE
            ), (metric, image)


def test_meteor_unavailable_without_java(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(meteor.shutil, "which", lambda name: None)
    got = caption_scores({1: ["a dog runs"], 2: ["a cat"]}, {1: "a dog", 2: "a cat sits"})
    assert got["corpus"]["METEOR"] is None
    assert got["per_item"][1]["METEOR"] is None
    assert "java" in got["unavailable"]["METEOR"]
    assert got["corpus"]["Bleu_1"] > 0


def test_meteor_unavailable_without_jar(tmp_path: Path) -> None:
    with pytest.raises(meteor.MeteorUnavailable, match="does not exist"):
        meteor.meteor_scores([["a dog"]], ["a dog"], jar=tmp_path / "missing.jar")


@requires_java
def test_meteor_process_failure_is_reported(tmp_path: Path) -> None:
    broken = tmp_path / meteor.JAR_NAME
    broken.write_bytes(b"not a jar")
    with pytest.raises(meteor.MeteorUnavailable, match="METEOR failed"):
        meteor.meteor_scores([["a dog"]], ["a dog"], jar=broken)


def test_meteor_can_be_skipped() -> None:
    got = caption_scores({1: ["a dog"]}, {1: "a dog"}, meteor=False)
    assert got["corpus"]["METEOR"] is None
    assert got["unavailable"] == {"METEOR": "not computed: meteor=False"}
    assert got["corpus"]["Bleu_1"] == pytest.approx(1.0)


def test_mismatched_ids_are_named() -> None:
    with pytest.raises(ValueError, match=r"no candidate: 2.*no references: 'x'"):
        caption_scores({1: ["a"], 2: ["b"]}, {1: "a", "x": "c"}, meteor=False)


@pytest.mark.parametrize(
    ("references", "candidates", "message"),
    [
        ({}, {}, "no images"),
        ({1: []}, {1: "a"}, "non-empty list"),
        ({1: "a dog"}, {1: "a"}, "non-empty list"),
        ({1: ["a", 3]}, {1: "a"}, "non-string"),
        ({1: ["a"]}, {1: None}, "not a string"),
    ],
)
def test_bad_inputs(references, candidates, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        caption_scores(references, candidates, meteor=False)


def write(path: Path, value: object) -> Path:
    path.write_text(value if isinstance(value, str) else json.dumps(value), encoding="utf-8")
    return path


def test_load_coco_captions(tmp_path: Path) -> None:
    annotations = write(
        tmp_path / "captions.json",
        {
            "images": [],
            "annotations": [
                {"image_id": 1, "id": 10, "caption": "A dog."},
                {"image_id": 2, "id": 11, "caption": "A cat."},
                {"image_id": 1, "id": 12, "caption": "The dog runs."},
            ],
        },
    )
    results = write(
        tmp_path / "results.json",
        [{"image_id": 2, "caption": "a cat"}, {"image_id": 1, "caption": "a dog"}],
    )
    references, candidates = load_coco_captions(annotations, results)
    assert references == {1: ["A dog.", "The dog runs."], 2: ["A cat."]}
    assert candidates == {2: "a cat", 1: "a dog"}
    assert caption_scores(references, candidates, meteor=False)["per_item"][1]["Bleu_1"] > 0


@pytest.mark.parametrize(
    ("annotations", "results", "message"),
    [
        (None, [], r"annotations file .*missing\.json does not exist"),
        ("{not json", [], "annotations file .* is not valid JSON"),
        ([], [], 'expected an object with an "annotations" list'),
        ({"annotations": [{"caption": "a"}]}, [], 'entry 0 has no "image_id"'),
        ({"annotations": [{"image_id": 1, "caption": 5}]}, [], "entry 0 has caption 5"),
        ({"annotations": [{"image_id": [1], "caption": "a"}]}, [], "expected an integer or string"),
        ({"annotations": ["x"]}, [], "entry 0 is not an object"),
        ({"annotations": []}, {"image_id": 1}, "results file .*: expected a list"),
        ({"annotations": []}, [{"image_id": 1}], 'results file .*entry 0 has no "caption"'),
        (
            {"annotations": []},
            [{"image_id": 1, "caption": "a"}, {"image_id": 1, "caption": "b"}],
            "entry 1 repeats image_id 1",
        ),
    ],
)
def test_load_coco_captions_errors(tmp_path: Path, annotations, results, message: str) -> None:
    annotations_path = tmp_path / "missing.json"
    if annotations is not None:
        annotations_path = write(tmp_path / "annotations.json", annotations)
    results_path = write(tmp_path / "results.json", results)
    with pytest.raises(DataError, match=message):
        load_coco_captions(annotations_path, results_path)


def test_scores_are_plain_floats() -> None:
    got = captioning.caption_scores({"a": ["a dog runs"]}, {"a": "a dog runs"}, meteor=False)
    assert all(type(v) is float for k, v in got["corpus"].items() if k != "METEOR")
    assert got["corpus"]["CIDEr"] == pytest.approx(0.0)  # one image: idf is zero
