"""Cross-modal retrieval metrics from a similarity matrix: recall at K, ranks and mAP."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

TIES = ("stable", "optimistic", "pessimistic")
CHUNK_ELEMENTS = 1 << 22  # similarity entries compared at once: bounds temporary memory
SORT_ABOVE = 16  # AP of rows with more relevant items comes from a sort, not a pass per item


def _count(mask: torch.Tensor) -> torch.Tensor:
    """True entries per row (int32 sums are several times faster than int64 on CPU)."""
    return mask.sum(dim=1, dtype=torch.int32)


def _chunk_ranks(
    scores: torch.Tensor, relevant: torch.Tensor | None, start: int, ties: str
) -> torch.Tensor:
    """1-based rank of each row's best-ranked relevant column, for rows ``start`` onwards.

    Under every tie rule the best-ranked relevant item is the relevant item with the highest
    score (the earliest in gallery order among equals), so each row is compared against one
    score. Items tied with it only matter for "stable", and only rows with ties are re-examined.
    """
    n_gallery = scores.shape[1]
    if relevant is None:  # one-to-one: query i matches gallery item i
        best_score = scores.diagonal(offset=start)[:, None]
    else:
        best_score = torch.where(relevant, scores, -torch.inf).amax(dim=1, keepdim=True)
    rank = _count(scores > best_score) + 1
    if ties != "optimistic":
        tied = _count(scores == best_score) - 1  # other items scored equal to the best
        if ties == "pessimistic":
            rank += tied
        else:
            positions = torch.arange(n_gallery, device=scores.device)
            rows = tied.nonzero().squeeze(1)
            equal = scores[rows] == best_score[rows]
            if relevant is None:
                first = rows + start
            else:
                candidates = relevant[rows] & equal
                first = torch.where(candidates, positions, n_gallery).amin(dim=1)
            rank[rows] += _count(equal & (positions < first[:, None]))
    return rank


def _chunks(n_queries: int, n_gallery: int) -> range:
    """Start rows of chunks of at most CHUNK_ELEMENTS similarity entries (at least one row)."""
    return range(0, n_queries, max(1, CHUNK_ELEMENTS // n_gallery))


def _query_ranks(
    similarity: torch.Tensor, relevance: torch.Tensor | None, ties: str
) -> torch.Tensor:
    """1-based rank of each row's best-ranked relevant column, rows processed in chunks."""
    starts = _chunks(*similarity.shape)
    ranks = []
    for start in starts:
        scores = similarity[start : start + starts.step]
        relevant = None if relevance is None else relevance[start : start + starts.step]
        ranks.append(_chunk_ranks(scores, relevant, start, ties))
    return torch.cat(ranks)


def _ahead(
    scores: torch.Tensor, threshold: torch.Tensor, place: torch.Tensor, ties: str
) -> torch.Tensor:
    """Items ranked ahead of the item at column ``place`` scored ``threshold``, per row."""
    if ties == "pessimistic":
        return _count(scores >= threshold) - 1
    ahead = _count(scores > threshold)
    if ties == "stable":  # tied items earlier in gallery order too; only rows with ties
        rows = (_count(scores == threshold) > 1).nonzero().squeeze(1)
        positions = torch.arange(scores.shape[1], device=scores.device)
        earlier = (scores[rows] == threshold[rows]) & (positions < place[rows])
        ahead[rows] += _count(earlier)
    return ahead


def _compared(
    scores: torch.Tensor, relevant: torch.Tensor, counts: torch.Tensor, ties: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank and AP of each row from one pass over the row per relevant item (few per row)."""
    n_rows, n_gallery = scores.shape
    rows, columns = relevant.nonzero(as_tuple=True)  # row by row, columns in order
    slots = torch.arange(len(rows), device=scores.device) - (counts.cumsum(0) - counts)[rows]
    place = torch.full((n_rows, int(counts.max())), n_gallery, device=scores.device)
    place[rows, slots] = columns  # each row's relevant columns; n_gallery pads shorter rows
    valid = place < n_gallery
    value = scores.gather(1, place.clamp(max=n_gallery - 1))
    ahead = torch.stack(
        [_ahead(scores, value[:, [k]], place[:, [k]], ties) for k in range(place.shape[1])], 1
    )
    # Relevant items ahead of each relevant item, by the same rule, among the row's own.
    mine, other = value[:, :, None], value[:, None, :]
    if ties == "stable":
        tied_ahead = (other == mine) & (place[:, None, :] < place[:, :, None])
    elif ties == "pessimistic":
        tied_ahead = (other == mine) & (place[:, None, :] != place[:, :, None])
    else:
        tied_ahead = torch.zeros_like(other == mine)
    relevant_ahead = (((other > mine) | tied_ahead) & valid[:, None, :]).sum(2)
    precision = (relevant_ahead + 1).double() / (ahead + 1)
    rank = ahead.masked_fill(~valid, n_gallery).amin(dim=1) + 1
    return rank, (precision * valid).sum(1) / counts


def _sorted_precision(
    scores: torch.Tensor, relevant: torch.Tensor, counts: torch.Tensor, ties: str
) -> torch.Tensor:
    """AP of each row from the row sorted by score, ties in gallery order (many relevant)."""
    n_gallery = scores.shape[1]
    ordered, order = scores.sort(dim=1, descending=True, stable=True)
    hits = relevant.gather(1, order)
    found = hits.cumsum(1).double()  # relevant items up to and including each position
    index = torch.arange(n_gallery, device=scores.device)
    if ties == "stable":
        precision = found / (index + 1)
    else:
        differs = ordered[:, 1:] != ordered[:, :-1]
        edge = torch.ones_like(ordered[:, :1], dtype=torch.bool)
        if ties == "optimistic":  # ahead: only the items before the run of ties
            start = torch.where(torch.cat([edge, differs], 1), index, 0).cummax(1).values
            precision = ((found - hits.double()).gather(1, start) + 1) / (start + 1)
        else:  # pessimistic: the whole run of ties is ahead
            end = torch.where(torch.cat([differs, edge], 1), index, n_gallery - 1)
            end = end.flip(1).cummin(1).values.flip(1)
            precision = found.gather(1, end) / (end + 1)
    return (precision * hits).sum(1) / counts


def _query_ranks_and_precision(
    similarity: torch.Tensor, relevance: torch.Tensor | None, ties: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ranks as ``_query_ranks`` and each row's average precision over its relevant columns.

    Each relevant item scores (relevant items ahead of it + 1) / (items ahead of it + 1), the
    tie rule deciding which items scored equal to it are ahead, as for ranks. With one relevant
    item that is 1 / rank; rows with up to SORT_ABOVE relevant items get one pass per item,
    rows with more are sorted.
    """
    if relevance is None:
        ranks = _query_ranks(similarity, None, ties)
        return ranks, 1.0 / ranks.double()
    starts = _chunks(*similarity.shape)
    ranks, precisions = [], []
    for start in starts:
        scores = similarity[start : start + starts.step]
        relevant = relevance[start : start + starts.step]
        counts = _count(relevant)
        widest = int(counts.max())
        if 1 < widest <= SORT_ABOVE:
            rank, precision = _compared(scores, relevant, counts, ties)
        else:
            rank = _chunk_ranks(scores, relevant, start, ties)
            if widest == 1:
                precision = 1.0 / rank.double()
            else:
                precision = _sorted_precision(scores, relevant, counts, ties)
        ranks.append(rank)
        precisions.append(precision)
    return torch.cat(ranks), torch.cat(precisions)


def _direction(
    similarity: torch.Tensor, relevance: torch.Tensor | None, ks: Sequence[int], ties: str
) -> dict[str, float]:
    """R@K for each K, median and mean rank, and mAP of the rows as queries."""
    ranks, precision = _query_ranks_and_precision(similarity, relevance, ties)
    values = ranks.cpu().numpy()
    scores = {f"R@{k}": float(np.mean(values <= k)) for k in ks}
    scores["median_rank"] = float(np.median(values))
    scores["mean_rank"] = float(np.mean(values))
    scores["mAP"] = float(precision.mean())
    return scores


def _check_relevance(relevance: torch.Tensor) -> None:
    """Every image needs a relevant text and every text a relevant image."""
    for axis, query, item in ((1, "image", "text"), (0, "text", "image")):
        missing = int((~relevance.any(dim=axis)).sum())
        if missing:
            total = relevance.shape[1 - axis]
            raise ValueError(f"{missing} of {total} {query}s have no relevant {item} in relevance")


def retrieval_scores(
    similarity: Any,
    relevance: Any = None,
    ks: Sequence[int] = (1, 5, 10),
    ties: str = "stable",
) -> dict[str, Any]:
    """Recall at each K, median and mean rank and mAP, image->text (rows) and text->image
    (columns).

    ``relevance`` is a boolean (n_images, n_texts) matrix; None means row i matches column i.
    A query's rank is that of its best-ranked relevant item. ``ties`` decides where items
    scored equal to it go: "stable" ahead if earlier in gallery order, "optimistic" behind,
    "pessimistic" ahead. "mAP" is the mean over queries of average precision: the mean over
    a query's relevant items of (relevant items ahead of it + 1) / (items ahead of it + 1),
    with ties placed by the same rule. Under "stable" that is the AP of the ranking by score
    then gallery order; under "pessimistic" it equals sklearn's average_precision_score,
    where tied items share one threshold.
    """
    if ties not in TIES:
        raise ValueError(f"ties must be one of {', '.join(TIES)}, got {ties!r}")
    if any(int(k) != k or k < 1 for k in ks):
        raise ValueError(f"ks must be positive integers, got {list(ks)}")
    similarity = torch.as_tensor(similarity).detach()
    if similarity.ndim != 2 or 0 in similarity.shape:
        shape = tuple(similarity.shape)
        raise ValueError(f"similarity must be a non-empty (n_images, n_texts) matrix, got {shape}")
    if not similarity.is_floating_point():
        similarity = similarity.double()
    if torch.isnan(similarity).any():
        raise ValueError("similarity contains NaN")
    n_images, n_texts = similarity.shape
    if relevance is None:
        if n_images != n_texts:
            raise ValueError(
                f"relevance=None pairs image i with text i and needs a square similarity matrix, "
                f"got {n_images} images x {n_texts} texts; pass a relevance matrix"
            )
        relevance_t = None
    else:
        relevance = torch.as_tensor(relevance, device=similarity.device).bool()
        if relevance.shape != similarity.shape:
            raise ValueError(
                f"relevance has shape {tuple(relevance.shape)} but similarity has "
                f"{tuple(similarity.shape)}"
            )
        _check_relevance(relevance)
        relevance_t = relevance.T
    return {
        "image_to_text": _direction(similarity, relevance, ks, ties),
        "text_to_image": _direction(similarity.T, relevance_t, ks, ties),
        "gallery_size": {"images": n_images, "texts": n_texts},
    }
