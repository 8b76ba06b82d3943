"""Losses as pure functions."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce(query: torch.Tensor, gallery: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP) over L2-normalised embeddings; row i of each is a positive pair."""
    logits = logit_scale * F.normalize(query, dim=-1) @ F.normalize(gallery, dim=-1).T
    targets = torch.arange(len(query), device=query.device)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2
