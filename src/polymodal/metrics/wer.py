"""Word error rate of transcripts against references.

Written here rather than imported: jiwer, the usual library, is not among polymodal's
dependencies (nor installed with it), and the measure is a word-level edit distance of a dozen
lines. Texts are compared as jiwer does after its usual normalisation (lower case, punctuation
removed, whitespace collapsed), so "Turn on the lights." matches "turn on the lights".

>>> word_error_rate(["the cat sat"], ["the cat sat down"])
0.3333333333333333
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_PUNCTUATION = re.compile(r"[^\w\s']|(?<!\w)'|'(?!\w)")  # apostrophes inside words stay


def words(text: str) -> list[str]:
    """The words of ``text``: lower case, without punctuation."""
    return _PUNCTUATION.sub(" ", text.lower()).split()


def word_edits(reference: Sequence[str], hypothesis: Sequence[str]) -> int:
    """Fewest word substitutions, deletions and insertions turning ``reference`` into
    ``hypothesis`` (Levenshtein distance over words)."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref in enumerate(reference, start=1):
        current = [i]
        for j, hyp in enumerate(hypothesis, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref != hyp)))
        previous = current
    return previous[-1]


def word_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus word error rate: all the edits over all the reference words (as jiwer computes
    it over a list), so a long reference weighs more than a short one."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    pairs = [(words(r), words(h)) for r, h in zip(references, hypotheses, strict=True)]
    total = sum(len(reference) for reference, _ in pairs)
    if not total:
        raise ValueError("the references hold no words; the word error rate is undefined")
    return sum(word_edits(reference, hypothesis) for reference, hypothesis in pairs) / total
