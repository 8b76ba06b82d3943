"""BLEU-1..4, ROUGE-L and CIDEr-D on tokenized captions, as pycocoevalcap computes them.

The formulas, smoothing constants and quirks are those of pycocoevalcap's bleu_scorer.py,
rouge.py and cider_scorer.py; the counting is vectorised with numpy instead of done with
Python dictionaries per image. Scores agree with pycocoevalcap up to floating-point rounding
(sums are taken in a different order).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import chain, repeat
from typing import NamedTuple

import numpy as np

MAX_N = 4
BLEU_TINY = 1e-15  # bleu_scorer.py: "so that if guess is 0 still return 0"
BLEU_SMALL = 1e-9
ROUGE_BETA = 1.2
CIDER_SIGMA = 6.0
WORD_BITS = 64  # ROUGE-L's LCS runs bit-parallel on 64-bit words; longer candidates use ints
LCS_BATCH = 1 << 17  # reference tokens per LCS task


class Corpus:
    """One tokenized candidate and its tokenized references per image, as flat id arrays.

    ``references`` holds every image's references, image after image, ``refs_per_image`` how
    many each image has. Sentences are numbered references first, then candidates (image
    order); their words are ``str.split(separator)`` pieces (BLEU and CIDEr split on any white
    space). Sentences are tokenized captions: words joined by single spaces.
    """

    def __init__(
        self,
        references: Sequence[str],
        refs_per_image: Sequence[int],
        candidates: Sequence[str],
        separator: str | None = None,
    ) -> None:
        self.references, self.candidates = references, candidates
        self.sentences = [*references, *candidates]
        words = _words(self.sentences, separator)
        flat, self.lengths = words
        vocabulary = dict.fromkeys(flat, 0)
        for index, word in enumerate(vocabulary):
            vocabulary[word] = index
        self.vocabulary_size = max(len(vocabulary), 1)
        self.ids = np.fromiter(map(vocabulary.__getitem__, flat), np.int64, len(flat))
        self.starts = np.cumsum(self.lengths) - self.lengths
        self.images = len(candidates)
        self.refs_per_image = np.asarray(refs_per_image, np.int64)
        self.n_refs = int(self.refs_per_image.sum())
        self.ref_image = np.repeat(np.arange(self.images), self.refs_per_image)
        self.ref_lengths = self.lengths[: self.n_refs]
        self.cand_lengths = self.lengths[self.n_refs :]
        sentence = np.repeat(np.arange(len(self.lengths)), self.lengths)
        tokens_left = self.lengths[sentence] - (np.arange(len(self.ids)) - self.starts[sentence])
        self._positions = (sentence, tokens_left)
        # CIDEr-D's length penalty per reference; its "length" counts bigrams.
        delta = np.maximum(self.cand_lengths - 1, 0)[self.ref_image] - np.maximum(
            self.ref_lengths - 1, 0
        )
        self.penalty = np.e ** (-(delta.astype(float) ** 2) / (2 * CIDER_SIGMA**2))

    def ngrams(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(key, sentence) of every n-gram occurrence; equal keys mean equal n-grams."""
        sentence, left = self._positions
        valid = np.flatnonzero(left >= n)
        key = self.ids[valid]
        large = not _fits(self.vocabulary_size**n, max(self.n_refs, self.images))
        for k in range(1, n):
            key = key * self.vocabulary_size + self.ids[valid + k]
            if large:  # renumber the n-grams as they grow, so that keys stay small
                key = np.unique(key, return_inverse=True)[1].reshape(-1)
        return key, sentence[valid]


def _words(sentences: list[str], separator: str | None) -> tuple[list[str], np.ndarray]:
    """All sentences' words in one list, and each sentence's word count."""
    text = " ".join(sentences)
    if separator is None and text.isprintable():  # no white space but single spaces: count
        spaces = np.fromiter(map(str.count, sentences, repeat(" ")), np.int64, len(sentences))
        filled = np.fromiter(map(bool, sentences), bool, len(sentences))
        return text.split(), spaces + filled
    split = [sentence.split(separator) for sentence in sentences]
    return list(chain.from_iterable(split)), np.fromiter(map(len, split), np.int64, len(split))


def _fits(*factors: int) -> bool:
    return math.prod(factors) < 2**62


def _runs(*columns: np.ndarray) -> np.ndarray:
    """Start of each run of equal rows in sorted columns."""
    size = len(columns[0])
    if size == 0:
        return np.zeros(0, np.int64)
    change = np.zeros(size, bool)
    change[0] = True
    for column in columns:
        change[1:] |= column[1:] != column[:-1]
    return np.flatnonzero(change)


def _pair_counts(
    keys: np.ndarray, owners: np.ndarray, n_owners: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct (key, owner) pairs, sorted by key then owner, and how often each occurs."""
    pairs = keys * n_owners + owners
    if len(pairs) and int(pairs.max()) < 2**31:  # smaller numbers sort faster
        pairs = pairs.astype(np.int32)
    pairs = np.sort(pairs).astype(np.int64, copy=False)
    starts = _runs(pairs)
    counts = np.diff(np.append(starts, len(pairs)))
    return pairs[starts] // n_owners, pairs[starts] % n_owners, counts


class _Order(NamedTuple):
    """What one n-gram order contributes: BLEU's clipped matches per image, CIDEr's sums."""

    correct: np.ndarray  # per image
    cider: np.ndarray  # per image: sum over its references of the penalised cosine


def _order(corpus: Corpus, n: int) -> _Order:
    """Count one order's n-grams per reference and per candidate, then score them.

    Rows are distinct (n-gram, sentence) pairs sorted by n-gram then sentence; since
    references are numbered image by image, images ascend within each n-gram's rows.
    """
    key, sentence = corpus.ngrams(n)
    is_ref = sentence < corpus.n_refs
    ref_key, ref, ref_count = _pair_counts(key[is_ref], sentence[is_ref], corpus.n_refs)
    cand_key, cand, cand_count = _pair_counts(
        key[~is_ref], sentence[~is_ref] - corpus.n_refs, corpus.images
    )
    ref_image = corpus.ref_image[ref]
    # Document frequency: images whose references hold the n-gram.
    groups = _runs(ref_key)
    new_image = np.ones(len(ref_key), np.int64)
    new_image[1:] = (ref_image[1:] != ref_image[:-1]) | (ref_key[1:] != ref_key[:-1])
    group_df = np.add.reduceat(new_image, groups) if len(groups) else new_image
    ref_df = np.repeat(group_df, np.diff(np.append(groups, len(ref_key))))
    found, where = _lookup(ref_key[groups], cand_key)
    cand_df = (
        np.where(found, group_df[np.minimum(where, len(groups) - 1)], 0)
        if len(groups)
        else np.zeros(len(cand_key), np.int64)  # no reference holds an n-gram of this order
    )
    # (n-gram, image) of each row, comparable as one number.
    ref_slot = ref_key * corpus.images + ref_image
    cand_slot = cand_key * corpus.images + cand
    return _Order(
        _clipped_matches(corpus, ref_slot, ref_count, cand_slot, cand, cand_count),
        _cider_sums(corpus, ref, ref_slot, ref_count, ref_df, cand, cand_slot, cand_count, cand_df),
    )


def _clipped_matches(corpus, ref_slot, ref_count, cand_slot, cand, cand_count) -> np.ndarray:
    """BLEU's matches per image: candidate counts clipped by the most in one reference."""
    slots = _runs(ref_slot)
    if len(slots) == 0:
        return np.zeros(corpus.images)
    most = np.maximum.reduceat(ref_count, slots)
    found, where = _lookup(ref_slot[slots], cand_slot)
    limit = most[np.minimum(where, len(slots) - 1)]
    clipped = np.where(found, np.minimum(cand_count, limit), 0)
    return np.bincount(cand, clipped, minlength=corpus.images)


def _cider_sums(
    corpus, ref, ref_slot, ref_count, ref_df, cand, cand_slot, cand_count, cand_df
) -> np.ndarray:
    """Per image, the sum over its references of CIDEr-D's clipped, penalised cosine."""
    log_images = np.log(float(corpus.images))
    ref_weight = ref_count * (log_images - np.log(np.maximum(1.0, ref_df)))
    cand_weight = cand_count * (log_images - np.log(np.maximum(1.0, cand_df)))
    ref_norm = np.sqrt(np.bincount(ref, ref_weight**2, minlength=corpus.n_refs))
    cand_norm = np.sqrt(np.bincount(cand, cand_weight**2, minlength=corpus.images))
    # Each candidate n-gram meets the rows of the same n-gram in its image's references.
    low = np.searchsorted(ref_slot, cand_slot, "left")
    meets = np.searchsorted(ref_slot, cand_slot, "right") - low
    cand_rows = np.repeat(np.arange(len(meets)), meets)
    ref_rows = np.repeat(low - np.cumsum(meets) + meets, meets) + np.arange(int(meets.sum()))
    shared = ref_weight[ref_rows]
    value = np.minimum(cand_weight[cand_rows], shared) * shared
    dot = np.bincount(ref[ref_rows], value, minlength=corpus.n_refs).astype(float)
    norms = cand_norm[corpus.ref_image] * ref_norm
    dot = np.divide(dot, norms, out=dot, where=norms != 0)
    return np.bincount(corpus.ref_image, dot * corpus.penalty, minlength=corpus.images)


def _lookup(sorted_values: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    where = np.searchsorted(sorted_values, queries)
    inside = where < len(sorted_values)
    found = np.zeros(len(queries), bool)
    found[inside] = sorted_values[where[inside]] == queries[inside]
    return found, where


def scores(corpus: Corpus) -> tuple[list[float], np.ndarray, np.ndarray, np.ndarray]:
    """(corpus BLEU-1..4, per-image BLEU (images x 4), per-image ROUGE-L, per-image CIDEr-D).

    numpy releases the GIL while it sorts and searches, so two threads share the work: one
    task per n-gram order, and ROUGE-L's LCS in batches of references.
    """
    rouge_corpus = _rouge_corpus(corpus)
    cand_rows = _candidate_rows(rouge_corpus)
    with ThreadPoolExecutor(max_workers=2) as pool:
        orders = [pool.submit(_order, corpus, n) for n in range(1, MAX_N + 1)]
        batches = [
            pool.submit(_lcs_batch, rouge_corpus, cand_rows, first, last)
            for first, last in _lcs_batches(rouge_corpus)
        ]
        correct = np.stack([order.result().correct for order in orders], axis=1)
        cider_items = sum(order.result().cider for order in orders)
        lcs = np.concatenate([batch.result() for batch in batches] + [np.zeros(0)])
    cider_items = cider_items / MAX_N / corpus.refs_per_image * 10.0
    bleu_corpus, bleu_items = bleu(corpus, correct)
    return bleu_corpus, bleu_items, rouge_l(rouge_corpus, lcs), cider_items


def bleu(corpus: Corpus, correct: np.ndarray) -> tuple[list[float], np.ndarray]:
    """Corpus BLEU-1..4 and per-image BLEU, the reference length being the 'closest'."""
    test = corpus.cand_lengths
    # The reference length closest to the candidate's, the shorter one on a tie.
    base = int(corpus.ref_lengths.max(initial=0)) + 1
    choice = np.abs(corpus.ref_lengths - test[corpus.ref_image]) * base + corpus.ref_lengths
    firsts = np.cumsum(corpus.refs_per_image) - corpus.refs_per_image
    reflen = np.minimum.reduceat(choice, firsts) % base
    guess = np.maximum(test[:, None] - np.arange(MAX_N)[None, :], 0).astype(float)
    per_image = _bleu_scores(correct, guess, test.astype(float), reflen.astype(float))
    totals = _bleu_scores(
        correct.sum(0, keepdims=True),
        guess.sum(0, keepdims=True),
        np.array([float(test.sum())]),
        np.array([float(reflen.sum())]),
    )
    return [float(v) for v in totals[0]], per_image


def _bleu_scores(
    correct: np.ndarray, guess: np.ndarray, test: np.ndarray, ref: np.ndarray
) -> np.ndarray:
    """bleu_scorer.py's formula, row by row: geometric means of smoothed precisions."""
    scores = np.empty(correct.shape)
    running = np.ones(len(correct))
    for k in range(MAX_N):
        running = running * ((correct[:, k] + BLEU_TINY) / (guess[:, k] + BLEU_SMALL))
        scores[:, k] = running ** (1.0 / (k + 1))
    ratio = (test + BLEU_TINY) / (ref + BLEU_SMALL)
    short = ratio < 1
    scores[short] *= np.exp(1 - 1 / ratio[short])[:, None]
    return scores


def _rouge_corpus(corpus: Corpus) -> Corpus:
    """The corpus as rouge.py splits it: on single spaces. An empty caption is then one empty
    token, and white space other than a space stays inside tokens; otherwise it is the same."""
    if all(s and s.isprintable() for s in corpus.sentences):
        return corpus
    return Corpus(corpus.references, corpus.refs_per_image, corpus.candidates, separator=" ")


def rouge_l(corpus: Corpus, lcs: np.ndarray) -> np.ndarray:
    """Per-image ROUGE-L (LCS-based F-measure, beta 1.2, best precision and recall), from the
    LCS length of each reference with its image's candidate."""
    lcs = lcs.copy()
    for ref in np.flatnonzero(corpus.cand_lengths[corpus.ref_image] > WORD_BITS):
        cand = corpus.n_refs + int(corpus.ref_image[ref])
        lcs[ref] = _lcs_python(_sentence_ids(corpus, cand), _sentence_ids(corpus, int(ref)))
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.nan_to_num(lcs / corpus.cand_lengths[corpus.ref_image])
        recall = np.nan_to_num(lcs / corpus.ref_lengths)
    firsts = np.cumsum(corpus.refs_per_image) - corpus.refs_per_image
    return _f_measure(np.maximum.reduceat(precision, firsts), np.maximum.reduceat(recall, firsts))


def _f_measure(precision: np.ndarray, recall: np.ndarray) -> np.ndarray:
    beta2 = ROUGE_BETA**2
    both = (precision != 0) & (recall != 0)
    denominator = np.where(both, recall + beta2 * precision, 1.0)
    return np.where(both, ((1 + beta2) * precision * recall) / denominator, 0.0)


def _lcs_python(a: Sequence[object], b: Sequence[object]) -> int:
    """LCS length with Python integers as bit vectors (Hyyrö's bit-parallel algorithm)."""
    masks: dict[object, int] = {}
    for i, token in enumerate(a):
        masks[token] = masks.get(token, 0) | (1 << i)
    full = (1 << len(a)) - 1
    row = full
    for token in b:
        match = row & masks.get(token, 0)
        row = ((row + match) | (row - match)) & full
    return len(a) - bin(row).count("1")


def _candidate_rows(corpus: Corpus) -> np.ndarray:
    """Each candidate's first WORD_BITS token ids as a row, padded with -1."""
    width = int(min(corpus.cand_lengths.max(initial=0), WORD_BITS))
    columns = np.arange(width)
    inside = columns[None, :] < corpus.cand_lengths[:, None]
    index = np.minimum(corpus.starts[corpus.n_refs :, None] + columns, max(len(corpus.ids) - 1, 0))
    return np.where(inside, corpus.ids[index] if len(corpus.ids) else -1, -1)


def _lcs_batches(corpus: Corpus) -> list[tuple[int, int]]:
    """Ranges of references holding about LCS_BATCH tokens each (bounding memory)."""
    ends = np.cumsum(corpus.ref_lengths)
    batches = []
    first = 0
    while first < corpus.n_refs:
        last = max(int(np.searchsorted(ends, ends[first] + LCS_BATCH, "right")), first + 1)
        batches.append((first, last))
        first = last
    return batches


def _sentence_ids(corpus: Corpus, sentence: int) -> list[int]:
    start = int(corpus.starts[sentence])
    return corpus.ids[start : start + int(corpus.lengths[sentence])].tolist()


def _lcs_batch(corpus: Corpus, cand_rows: np.ndarray, first: int, last: int) -> np.ndarray:
    """LCS lengths of references first..last-1 with their candidates, bit-parallel: candidates
    of up to 64 tokens are bit vectors in one uint64 and all references advance together, one
    token position per step (Hyyrö's algorithm). Longer candidates are redone in rouge_l."""
    lengths = corpus.ref_lengths[first:last]
    images = corpus.ref_image[first:last]
    owner = np.repeat(np.arange(last - first), lengths)
    start = int(corpus.starts[first])
    tokens = corpus.ids[start : start + int(lengths.sum())]
    # For each reference token, the positions of the same token in the candidate, as bits.
    equal = cand_rows[images[owner]] == tokens[:, None]
    packed = np.zeros((len(tokens), 8), np.uint8)
    packed[:, : (equal.shape[1] + 7) // 8] = np.packbits(equal, axis=1, bitorder="little")
    matches = np.zeros((int(lengths.max(initial=0)), last - first), np.uint64)
    position = np.arange(len(tokens)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    matches[position, owner] = packed.view("<u8").reshape(-1)
    row = np.full(last - first, np.iinfo(np.uint64).max, np.uint64)
    for step in matches:
        match = row & step
        row = (row + match) | (row - match)
    cand_lengths = np.minimum(corpus.cand_lengths[images], WORD_BITS)
    low = np.full(last - first, np.iinfo(np.uint64).max, np.uint64)
    short = cand_lengths < WORD_BITS
    low[short] = (np.uint64(1) << cand_lengths[short].astype(np.uint64)) - np.uint64(1)
    return (cand_lengths - _popcount(row & low)).astype(float)


def _popcount(values: np.ndarray) -> np.ndarray:
    """Set bits of each uint64."""
    v = values.copy()
    v = v - ((v >> np.uint64(1)) & np.uint64(0x5555555555555555))
    v = (v & np.uint64(0x3333333333333333)) + ((v >> np.uint64(2)) & np.uint64(0x3333333333333333))
    v = (v + (v >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return ((v * np.uint64(0x0101010101010101)) >> np.uint64(56)).astype(np.int64)
