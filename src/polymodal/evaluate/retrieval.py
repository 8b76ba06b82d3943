"""Cross-modal retrieval metrics (recall at K, median and mean rank) from a similarity matrix."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

TIES = ("stable", "optimistic", "pessimistic")
CHUNK_ELEMENTS = 1 << 22  # similarity entries compared at once: bounds temporary memory


def _count(mask: torch.Tensor) -> torch.Tensor:
    """True entries per row (int32 sums are several times faster than int64 on CPU)."""
    return mask.sum(dim=1, dtype=torch.int32)


def _query_ranks(
    similarity: torch.Tensor, relevance: torch.Tensor | None, ties: str
) -> torch.Tensor:
    """1-based rank of each row's best-ranked relevant column, rows processed in chunks.

    Under every tie rule the best-ranked relevant item is the relevant item with the highest
    score (the earliest in gallery order among equals), so each row is compared against one
    score. Items tied with it only matter for "stable", and only rows with ties are re-examined.
    """
    n_queries, n_gallery = similarity.shape
    positions = torch.arange(n_gallery, device=similarity.device)
    rows_per_chunk = max(1, CHUNK_ELEMENTS // n_gallery)
    ranks = []
    for start in range(0, n_queries, rows_per_chunk):
        scores = similarity[start : start + rows_per_chunk]
        if relevance is None:  # one-to-one: query i matches gallery item i
            best_score = scores.diagonal(offset=start)[:, None]
        else:
            relevant = relevance[start : start + rows_per_chunk]
            best_score = torch.where(relevant, scores, -torch.inf).amax(dim=1, keepdim=True)
        rank = _count(scores > best_score) + 1
        if ties != "optimistic":
            tied = _count(scores == best_score) - 1  # other items scored equal to the best
            if ties == "pessimistic":
                rank += tied
            else:
                rows = tied.nonzero().squeeze(1)
                equal = scores[rows] == best_score[rows]
                if relevance is None:
                    first = rows + start
                else:
                    candidates = relevant[rows] & equal
                    first = torch.where(candidates, positions, n_gallery).amin(dim=1)
                rank[rows] += _count(equal & (positions < first[:, None]))
        ranks.append(rank)
    return torch.cat(ranks)


def _summary(ranks: torch.Tensor, ks: Sequence[int]) -> dict[str, float]:
    """R@K for each K, median and mean of the ranks."""
    values = ranks.cpu().numpy()
    scores = {f"R@{k}": float(np.mean(values <= k)) for k in ks}
    scores["median_rank"] = float(np.median(values))
    scores["mean_rank"] = float(np.mean(values))
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
    """Recall at each K, median and mean rank, image->text (rows) and text->image (columns).

    ``relevance`` is a boolean (n_images, n_texts) matrix; None means row i matches column i.
    A query's rank is that of its best-ranked relevant item. ``ties`` decides where items
    scored equal to it go: "stable" ahead if earlier in gallery order, "optimistic" behind,
    "pessimistic" ahead.
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
        "image_to_text": _summary(_query_ranks(similarity, relevance, ties), ks),
        "text_to_image": _summary(_query_ranks(similarity.T, relevance_t, ties), ks),
        "gallery_size": {"images": n_images, "texts": n_texts},
    }
