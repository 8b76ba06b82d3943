"""Word error rate: known cases, computed by hand."""

from __future__ import annotations

import pytest

from polymodal.metrics.wer import word_edits, word_error_rate, words


def test_words_ignore_case_and_punctuation_but_keep_inner_apostrophes():
    assert words("Turn on the lights.") == ["turn", "on", "the", "lights"]
    assert words("'Don't' -- STOP!") == ["don't", "stop"]


@pytest.mark.parametrize(
    ("reference", "hypothesis", "edits"),
    [
        ("the cat sat", "the cat sat", 0),
        ("the cat sat", "the sat", 1),  # a deletion
        ("the cat sat", "the cat sat down", 1),  # an insertion
        ("the cat sat", "the dog sat", 1),  # a substitution
        ("the cat sat", "a cat sat down", 2),
        ("a b", "c d e f", 4),  # two substitutions, two insertions
        ("a b c", "", 3),
        ("", "a b", 2),
    ],
)
def test_word_edits_are_the_levenshtein_distance_over_words(reference, hypothesis, edits):
    assert word_edits(reference.split(), hypothesis.split()) == edits


def test_the_word_error_rate_is_the_corpus_edits_over_the_reference_words():
    assert word_error_rate(["Turn on the lights!"], ["turn on the lights"]) == 0.0
    assert word_error_rate(["the cat sat"], ["the sat"]) == pytest.approx(1 / 3)
    assert word_error_rate(["a b"], ["c d e f"]) == 2.0  # more errors than words
    assert word_error_rate(["a b c"], [""]) == 1.0
    # 2 edits over 5 words, not the mean of the rows' rates (1/3 and 1/2)
    assert word_error_rate(["a b c", "d e"], ["a x c", "d e f"]) == pytest.approx(0.4)


def test_an_undefined_rate_is_an_error():
    with pytest.raises(ValueError, match="no words"):
        word_error_rate(["", "..."], ["a", "b"])
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        word_error_rate(["a", "b"], ["a"])
