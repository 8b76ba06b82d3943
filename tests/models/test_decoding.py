"""Greedy and beam search against exhaustive search over a tiny vocabulary."""

from __future__ import annotations

import itertools
import math
from functools import cache

import pytest
import torch

from polymodal.models.decoding import (
    Decoded,
    SearchOptions,
    Vocab,
    beam_search,
    greedy,
    repeated_ngrams,
    search,
)

BOS, EOS, PAD = 0, 1, 2
VOCAB = Vocab(BOS, EOS, PAD, banned=(BOS, PAD))
SIZE = 6  # BOS, EOS, PAD and three words
WORDS = (3, 4, 5)
CPU = torch.device("cpu")


@cache
def toy_logp(row: int, prefix: tuple[int, ...], sharpness: float) -> torch.Tensor:
    """Next-token log-probabilities drawn (seeded by the row and the whole prefix)."""
    generator = torch.Generator().manual_seed(hash((row, prefix)) % 2**31)
    return (torch.randn(SIZE, generator=generator) * sharpness).log_softmax(-1)


class ToyScorer:
    """A scorer whose distribution depends on the whole prefix, for a few rows."""

    def __init__(self, rows: int, sharpness: float = 1.5) -> None:
        self.rows = torch.arange(rows)
        self.sharpness = sharpness

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.stack(
            [
                toy_logp(int(row), tuple(prefix.tolist()), self.sharpness)
                for row, prefix in zip(self.rows, tokens, strict=True)
            ]
        )

    def select(self, index: torch.Tensor) -> None:
        self.rows = self.rows[index]


class TableScorer:
    """Probabilities given per prefix (of words); ``default`` after any other prefix."""

    def __init__(
        self,
        table: dict[tuple[int, ...], dict[int, float]],
        default: dict[int, float] | None = None,
    ) -> None:
        self.table, self.default = table, default or {EOS: 1.0}

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        rows = []
        for prefix in tokens.tolist():
            probs = torch.full((SIZE,), 1e-6)
            for token, p in self.table.get(tuple(prefix[1:]), self.default).items():
                probs[token] = p
            rows.append((probs / probs.sum()).log())
        return torch.stack(rows)

    def select(self, index: torch.Tensor) -> None:
        pass


def has_repeat(words: tuple[int, ...], n: int) -> bool:
    grams = [words[i : i + n] for i in range(len(words) - n + 1)]
    return n > 0 and len(grams) != len(set(grams))


def sequence_score(
    row: int, words: tuple[int, ...], options: SearchOptions, sharpness: float
) -> float:
    """The penalised log-probability of ``words`` and the end token under ``toy_logp``."""
    prefix, total = (BOS,), 0.0
    for token in (*words, EOS):
        total += float(toy_logp(row, prefix, sharpness)[token])
        prefix += (token,)
    return total / (len(words) + 1) ** options.length_penalty


def exhaustive(row: int, options: SearchOptions, sharpness: float) -> tuple[tuple[int, ...], float]:
    """The best sequence (and its score) among every one the options allow."""
    candidates = (
        words
        for n in range(options.max_length + 1)
        for words in itertools.product(WORDS, repeat=n)
        if not has_repeat(words, options.no_repeat_ngram)
    )
    scored = ((words, sequence_score(row, words, options, sharpness)) for words in candidates)
    return max(scored, key=lambda item: item[1])


def found(decoded: Decoded, row: int) -> tuple[int, ...]:
    return tuple(decoded.tokens[row, : decoded.lengths[row]].tolist())


@pytest.mark.parametrize("length_penalty", [0.0, 0.6, 1.0, 2.0, -0.5])
@pytest.mark.parametrize("no_repeat_ngram", [0, 2])
def test_a_beam_as_wide_as_every_prefix_finds_the_exhaustive_best(
    length_penalty: float, no_repeat_ngram: int
) -> None:
    options = SearchOptions(3**4, 4, length_penalty, no_repeat_ngram)
    decoded = beam_search(ToyScorer(4), 4, VOCAB, options, CPU)
    for row in range(4):
        words, score = exhaustive(row, options, 1.5)
        assert found(decoded, row) == words
        assert float(decoded.scores[row]) == pytest.approx(score, abs=1e-5)


@pytest.mark.parametrize("beam_size", [2, 3, 5])
def test_a_narrow_beam_scores_what_it_returns_and_never_beats_exhaustive(beam_size: int) -> None:
    options = SearchOptions(beam_size, 4, 1.0, 0)
    decoded = beam_search(ToyScorer(6, sharpness=1.0), 6, VOCAB, options, CPU)
    for row in range(6):
        words = found(decoded, row)
        assert float(decoded.scores[row]) == pytest.approx(
            sequence_score(row, words, options, 1.0), abs=1e-5
        )
        assert float(decoded.scores[row]) <= exhaustive(row, options, 1.0)[1] + 1e-6


@pytest.mark.parametrize("length_penalty", [0.0, 1.0, 2.0])
def test_beam_size_one_is_greedy(length_penalty: float) -> None:
    options = SearchOptions(1, 5, length_penalty, 0)
    beam = beam_search(ToyScorer(8), 8, VOCAB, options, CPU)
    plain = greedy(ToyScorer(8), 8, VOCAB, options, CPU)
    assert torch.equal(beam.tokens, plain.tokens)
    assert torch.equal(beam.lengths, plain.lengths)
    assert torch.allclose(beam.scores, plain.scores)
    assert torch.equal(search(ToyScorer(8), 8, VOCAB, options, CPU).tokens, plain.tokens)


def test_greedy_takes_the_most_likely_token_at_each_step() -> None:
    decoded = greedy(ToyScorer(3), 3, VOCAB, SearchOptions(1, 4), CPU)
    for row in range(3):
        prefix = (BOS,)
        while True:
            logp = toy_logp(row, prefix, 1.5).clone()
            logp[[BOS, PAD]] = -math.inf
            if len(prefix) > 4:  # after max_length words only the end token may follow
                logp[list(WORDS)] = -math.inf
            token = int(logp.argmax())
            if token == EOS:
                break
            prefix += (token,)
        assert found(decoded, row) == prefix[1:]


def test_the_length_penalty_decides_between_a_short_and_a_long_text() -> None:
    # "" scores log 0.5; "3" scores log 0.5 + log 0.6: higher per token, lower in sum
    scorer = TableScorer({(): {EOS: 0.5, 3: 0.5}, (3,): {EOS: 0.6, 4: 0.4}}, {EOS: 0.05, 5: 0.95})
    short = beam_search(scorer, 1, VOCAB, SearchOptions(2, 2, 0.0), CPU)
    long = beam_search(scorer, 1, VOCAB, SearchOptions(2, 2, 1.0), CPU)
    assert found(short, 0) == ()
    assert found(long, 0) == (3,)
    assert float(short.scores[0]) == pytest.approx(math.log(0.5), abs=1e-4)
    assert float(long.scores[0]) == pytest.approx(math.log(0.5 * 0.6) / 2, abs=1e-4)


def test_max_length_closes_every_text() -> None:
    table = {prefix: {3: 0.9, EOS: 0.1} for prefix in [(3,) * n for n in range(10)]}
    for decode in (greedy, beam_search):
        decoded = decode(TableScorer(table), 1, VOCAB, SearchOptions(2, 3, 1.0), CPU)
        assert found(decoded, 0) == (3, 3, 3)
        assert decoded.tokens.shape == (1, 3)


@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize("beam_size", [1, 3])
def test_no_repeat_ngram_is_respected(n: int, beam_size: int) -> None:
    # the scorer always prefers word 3, then 4: without the ban it repeats them to the end
    scorer = TableScorer({}, default={3: 0.6, 4: 0.3, 5: 0.09, EOS: 0.01})
    options = SearchOptions(beam_size, 6, 0.0, n)
    words = found(search(scorer, 1, VOCAB, options, CPU), 0)
    assert len(words) > n and not has_repeat(words, n)
    unbanned = found(search(scorer, 1, VOCAB, SearchOptions(beam_size, 6), CPU), 0)
    assert has_repeat(unbanned, n)


def test_repeated_ngrams_bans_the_tokens_that_complete_a_seen_ngram() -> None:
    words = torch.tensor([[3, 4, 3], [3, 4, 5]])
    bigrams = repeated_ngrams(words, 2, SIZE)
    assert bigrams[0].nonzero().squeeze(1).tolist() == [4]  # "3 4" again
    assert not bigrams[1].any()
    assert repeated_ngrams(words, 1, SIZE)[1].nonzero().squeeze(1).tolist() == [3, 4, 5]
    assert not repeated_ngrams(words, 4, SIZE).any()


def test_rows_decode_as_they_would_alone() -> None:
    options = SearchOptions(3, 4, 1.0, 2)
    together = beam_search(ToyScorer(5), 5, VOCAB, options, CPU)
    for row in range(5):
        alone = ToyScorer(1)
        alone.rows = torch.tensor([row])
        single = beam_search(alone, 1, VOCAB, options, CPU)
        assert found(single, 0) == found(together, row)
