"""Greedy and beam search over any next-token scorer: batched, with a length penalty, a
maximum length and a no-repeat n-gram ban.

A sequence is scored by the sum of its tokens' log-probabilities, the closing end token
included, divided by ``length ** length_penalty`` (its words plus the end token): 0 keeps the
plain sum (short captions win ties), 1 the mean per token. After ``max_length`` words only the
end token may follow, so every sequence ends with one. Banned tokens (padding, the start token)
and a token that would repeat an n-gram get log-probability -inf; the others are not
renormalised.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch


class Scorer(Protocol):
    """Next-token log-probabilities for rows of token prefixes; what it keeps per row (a
    key/value cache, the memory it attends to) follows ``select``."""

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        """(N, V) log-probabilities of the token after each row of ``tokens`` (N, t), whose
        first column is the start token."""
        ...

    def select(self, index: torch.Tensor) -> None:
        """Keep the rows ``index`` (in that order, repeats allowed) of what the scorer holds."""
        ...


@dataclass(frozen=True)
class Vocab:
    """The token ids decoding treats specially; ``banned`` are never generated."""

    bos: int
    eos: int
    pad: int
    banned: tuple[int, ...] = ()


@dataclass(frozen=True)
class SearchOptions:
    """How sequences are searched: greedy when ``beam_size`` is 1."""

    beam_size: int = 1
    max_length: int = 30
    length_penalty: float = 0.0
    no_repeat_ngram: int = 0


@dataclass
class Decoded:
    """``tokens`` (N, max_length) without the start and end tokens, padded; each row's word
    count in ``lengths`` and its length-penalised log-probability in ``scores``."""

    tokens: torch.Tensor
    lengths: torch.Tensor
    scores: torch.Tensor


def repeated_ngrams(words: torch.Tensor, n: int, vocab_size: int) -> torch.Tensor:
    """(N, V) True for each token that would complete an n-gram already in ``words`` (N, t)."""
    banned = torch.zeros(len(words), vocab_size, dtype=torch.bool, device=words.device)
    steps = words.shape[1]
    if n <= 0 or steps < n:
        return banned
    windows = words.unfold(1, n, 1)  # (N, steps - n + 1, n): every n-gram so far
    tail = words[:, steps - n + 1 :]  # the last n - 1 words, which the next one extends
    rows, starts = (windows[:, :, :-1] == tail[:, None, :]).all(-1).nonzero(as_tuple=True)
    banned[rows, windows[rows, starts, -1]] = True
    return banned


def _next(
    scorer: Scorer, prefix: torch.Tensor, vocab: Vocab, options: SearchOptions
) -> torch.Tensor:
    """The scorer's (N, V) log-probabilities after ``prefix`` with the disallowed tokens -inf."""
    logp = scorer(prefix).float()
    words = prefix[:, 1:]
    if words.shape[1] >= options.max_length:  # only the end token may follow
        closed = torch.full_like(logp, float("-inf"))
        closed[:, vocab.eos] = logp[:, vocab.eos]
        return closed
    logp[:, list(vocab.banned)] = float("-inf")
    if options.no_repeat_ngram:
        ban = repeated_ngrams(words, options.no_repeat_ngram, logp.shape[1])
        logp = logp.masked_fill(ban, float("-inf"))
    return logp


def _penalised(total: torch.Tensor, length: int | torch.Tensor, penalty: float) -> torch.Tensor:
    if isinstance(length, int):
        return total / float(length) ** penalty
    return total / length.to(total.dtype) ** penalty


def search(
    scorer: Scorer, rows: int, vocab: Vocab, options: SearchOptions, device: torch.device
) -> Decoded:
    """Greedy search when ``options.beam_size`` is 1, else beam search."""
    if options.beam_size == 1:
        return greedy(scorer, rows, vocab, options, device)
    return beam_search(scorer, rows, vocab, options, device)


def greedy(
    scorer: Scorer, rows: int, vocab: Vocab, options: SearchOptions, device: torch.device
) -> Decoded:
    """The most likely token at each step, until the end token; finished rows leave the batch."""
    tokens = torch.full((rows, options.max_length), vocab.pad, dtype=torch.long, device=device)
    lengths = torch.zeros(rows, dtype=torch.long, device=device)
    totals = torch.zeros(rows, device=device)
    active = torch.arange(rows, device=device)  # the output row of each scorer row
    prefix = torch.full((rows, 1), vocab.bos, dtype=torch.long, device=device)
    for step in range(options.max_length + 1):
        best, token = _next(scorer, prefix, vocab, options).max(-1)
        totals[active] += best
        going = token != vocab.eos
        if step < options.max_length:
            tokens[active[going], step] = token[going]
            lengths[active[going]] += 1
        if not going.any():
            break
        if not going.all():
            keep = going.nonzero().squeeze(1)
            scorer.select(keep)
            active, prefix, token = active[keep], prefix[keep], token[keep]
        prefix = torch.cat([prefix, token[:, None]], 1)
    scores = _penalised(totals, lengths + 1, options.length_penalty)
    return Decoded(tokens, lengths, scores)


def _bound(alive: torch.Tensor, step: int, options: SearchOptions) -> torch.Tensor:
    """The best penalised score any continuation of the (n, K) ``alive`` sums could reach.

    Log-probabilities are at most 0, so a sum only falls; each of them has ``step + 1`` words
    and will end with at least one more token, at most ``max_length + 1`` in all.
    """
    best = alive.max(1).values
    if options.length_penalty >= 0:
        return _penalised(best, options.max_length + 1, options.length_penalty)
    return _penalised(best, step + 2, options.length_penalty)


def beam_search(
    scorer: Scorer, rows: int, vocab: Vocab, options: SearchOptions, device: torch.device
) -> Decoded:
    """Beam search: at each step the ``beam_size`` best extensions of a row's live sequences
    are kept; those ending with the end token are finished (the best one by penalised score
    is kept), the others live on. A row stops when no live sequence can still beat its best
    finished one, so a beam as wide as every prefix finds the best sequence exactly; beam
    size 1 is greedy search.
    """
    width = options.beam_size
    scorer.select(torch.arange(rows, device=device).repeat_interleave(width))
    tokens = torch.full((rows, options.max_length), vocab.pad, dtype=torch.long, device=device)
    lengths = torch.zeros(rows, dtype=torch.long, device=device)
    scores = torch.full((rows,), float("-inf"), device=device)
    active = torch.arange(rows, device=device)  # the output row of each live row
    alive = torch.full((rows, width), float("-inf"), device=device)  # each beam's log-prob sum
    alive[:, 0] = 0.0  # one start sequence per row
    words = torch.zeros((rows * width, 0), dtype=torch.long, device=device)
    for step in range(options.max_length + 1):
        n = len(active)
        prefix = torch.cat([words.new_full((n * width, 1), vocab.bos), words], 1)
        logp = _next(scorer, prefix, vocab, options)
        size = logp.shape[1]
        totals = (alive.reshape(-1, 1) + logp).view(n, width * size)
        values, picked = totals.topk(width, dim=1)
        parent, token = picked // size, picked % size
        finite = values > float("-inf")
        ended = finite & (token == vocab.eos)
        penalised = _penalised(values, step + 1, options.length_penalty)
        best, which = torch.where(ended, penalised, float("-inf")).max(1)
        better = best > scores[active]
        if better.any():
            at = better.nonzero().squeeze(1)
            out = active[at]
            chosen = words.view(n, width, step)[at, parent[at, which[at]]]
            tokens[out] = vocab.pad
            tokens[out, :step] = chosen
            lengths[out] = step
            scores[out] = best[at]
        alive = torch.where(finite & ~ended, values, float("-inf"))
        order = (torch.arange(n, device=device)[:, None] * width + parent).view(-1)
        words = torch.cat([words[order], token.view(-1, 1)], 1)
        going = (alive > float("-inf")).any(1) & (_bound(alive, step, options) > scores[active])
        if not going.any():
            break
        if not going.all():
            keep = going.nonzero().squeeze(1)
            beams = (keep[:, None] * width + torch.arange(width, device=device)).view(-1)
            order, words = order[beams], words[beams]
            active, alive = active[keep], alive[keep]
        scorer.select(order)
    return Decoded(tokens, lengths, scores)
