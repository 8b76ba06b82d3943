"""Losses as pure functions, and thin ``nn.Module`` wrappers that own their learned values."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from polymodal.config import RetrievalLoss

MAX_LOGIT_SCALE = math.log(100.0)  # a learned temperature never goes below 0.01 (as CLIP)


def info_nce(query: torch.Tensor, gallery: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP) over L2-normalised embeddings; row i of each is a positive pair."""
    logits = logit_scale * F.normalize(query, dim=-1) @ F.normalize(gallery, dim=-1).T
    targets = torch.arange(len(query), device=query.device)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2


def _world_size() -> int:
    """Ranks in the default process group; 1 when none is initialised."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class _AllGather(torch.autograd.Function):
    """Forward: every rank's rows in rank order. Backward: this rank's slice of the summed grad."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        ctx.rows = len(tensor)
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone(memory_format=torch.contiguous_format)  # all_reduce writes in place
        dist.all_reduce(grad)
        start = dist.get_rank() * ctx.rows
        return grad[start : start + ctx.rows]


def all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's ``tensor`` concatenated along dim 0 in rank order (one process: ``tensor``).

    Every rank must pass the same shape. The gradient of each rank's slice is the sum over ranks
    of the gradients reaching it, so each rank's parameters see the gradient of the sum of all
    ranks' losses; DDP's average over ranks then makes it the gradient of their mean. Lives here,
    not in ``polymodal.train.distributed`` (which re-exports it), so that losses can gather.
    """
    if _world_size() == 1:
        return tensor
    return _AllGather.apply(tensor)


def info_nce_gathered(
    query: torch.Tensor, gallery: torch.Tensor, logit_scale: torch.Tensor
) -> torch.Tensor:
    """:func:`info_nce` with negatives from every rank; equal to it in a single process.

    Local queries are scored against the galleries of all ranks and local galleries against
    all queries. The loss is a mean over local rows, so with equal row counts the mean over
    ranks (what DDP's gradient average computes) is the InfoNCE of the global batch. Ranks may
    hold different counts (rows left out of a batch), even none: rows are padded to the
    largest count for the gather and the padding is masked out. Every rank must call it at
    every step, since the gather is a collective.
    """
    if _world_size() == 1:
        return info_nce(query, gallery, logit_scale) if len(query) else query.sum() * 0.0
    counts = torch.tensor([len(query)], device=query.device)
    sizes = [torch.empty_like(counts) for _ in range(_world_size())]
    dist.all_gather(sizes, counts)
    width = int(max(sizes))
    valid = torch.cat([torch.arange(width, device=query.device) < size for size in sizes])
    pad = (0, 0, 0, width - len(query))
    query = F.pad(F.normalize(query, dim=-1), pad)
    gallery = F.pad(F.normalize(gallery, dim=-1), pad)
    all_query, all_gallery = all_gather_with_grad(query), all_gather_with_grad(gallery)
    rows = int(counts)
    if rows == 0:  # nothing to score here, but the gather's backward must still run
        return (all_query.sum() + all_gallery.sum()) * 0.0
    targets = torch.arange(rows, device=query.device) + dist.get_rank() * width
    masked = torch.finfo(query.dtype).min
    query_logits = (logit_scale * query[:rows] @ all_gallery.T).masked_fill(~valid, masked)
    gallery_logits = (logit_scale * gallery[:rows] @ all_query.T).masked_fill(~valid, masked)
    query_loss = F.cross_entropy(query_logits, targets)
    gallery_loss = F.cross_entropy(gallery_logits, targets)
    return (query_loss + gallery_loss) / 2


def hinge_triplet(
    query: torch.Tensor, gallery: torch.Tensor, margin: float = 0.2, hardest: bool = False
) -> torch.Tensor:
    """VSE hinge-triplet loss (Faghri et al. 2018) on cosine similarities; row i is a pair.

    Each query is ranked against every other gallery item and each gallery item against every
    other query, with hinge ``max(0, margin - s(q, g) + s(negative))``. ``hardest=False`` sums
    the hinge over all negatives (VSE0); ``hardest=True`` keeps only the hardest negative per
    query and per gallery item (VSE++). The two directions are added; the result is their
    mean over rows.
    """
    if len(query) < 2:
        return query.sum() * 0.0
    scores = F.normalize(query, dim=-1) @ F.normalize(gallery, dim=-1).T
    positive = scores.diag()
    negative = torch.eye(len(scores), dtype=torch.bool, device=scores.device).logical_not()
    to_gallery = (margin - positive[:, None] + scores).clamp(min=0) * negative
    to_query = (margin - positive[None, :] + scores).clamp(min=0) * negative
    if hardest:
        return (to_gallery.amax(dim=1) + to_query.amax(dim=0)).mean()
    return (to_gallery.sum(dim=1) + to_query.sum(dim=0)).mean()


def siglip(
    query: torch.Tensor,
    gallery: torch.Tensor,
    logit_scale: torch.Tensor,
    logit_bias: torch.Tensor,
) -> torch.Tensor:
    """Sigmoid loss (SigLIP, Zhai et al. 2023) over L2-normalised embeddings; row i is a pair.

    Every (query, gallery) cell is a binary problem on ``scale * cosine + bias``, positive on
    the diagonal; the summed ``-log sigmoid`` over all cells is divided by the number of rows.
    One row is a lone positive pair and is scored as such; no rows give zero.
    """
    if not len(query):
        return query.sum() * 0.0
    logits = logit_scale * F.normalize(query, dim=-1) @ F.normalize(gallery, dim=-1).T + logit_bias
    labels = 2 * torch.eye(len(logits), dtype=logits.dtype, device=logits.device) - 1
    return -F.logsigmoid(labels * logits).sum() / len(logits)


def label_smoothing_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, smoothing: float = 0.0
) -> torch.Tensor:
    """Mean cross-entropy of (N, C) ``logits`` against class ids smoothed towards uniform.

    The target distribution puts ``1 - smoothing`` on the true class plus ``smoothing / C`` on
    every class (Szegedy et al. 2016); ``smoothing=0`` is plain cross-entropy. No rows give
    zero, with a graph.
    """
    if not len(logits):
        return logits.sum() * 0.0
    return F.cross_entropy(logits, targets, label_smoothing=smoothing)


class LearnedTemperature(nn.Module):
    """A loss on ``logit_scale * cosine`` whose scale is learned as its log, ``log_scale``.

    It starts at ``1 / temperature`` and is clamped to [1, 100], so the temperature stays in
    [0.01, 1] (as CLIP); at a bound the clamp passes no gradient.
    """

    def __init__(self, temperature: float) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)))

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.log_scale.clamp(0.0, MAX_LOGIT_SCALE).exp()

    @property
    def temperature(self) -> float:
        return float(1.0 / self.logit_scale.detach())


class InfoNCELoss(LearnedTemperature):
    """:func:`info_nce` with a learned temperature (initially ``temperature``).

    It runs :func:`info_nce_gathered`: equal in one process; under DDP its negatives come from
    every rank, so every rank must call it at every step.
    """

    def __init__(self, temperature: float = 0.07) -> None:
        super().__init__(temperature)

    def forward(self, query: torch.Tensor, gallery: torch.Tensor) -> torch.Tensor:
        return info_nce_gathered(query, gallery, self.logit_scale)


class SigLIPLoss(LearnedTemperature):
    """:func:`siglip` with a learned scale and bias; by default scale 10 (temperature 0.1) and
    bias -10, the paper's initial values."""

    def __init__(self, temperature: float = 0.1, bias: float = -10.0) -> None:
        super().__init__(temperature)
        self.logit_bias = nn.Parameter(torch.tensor(bias))

    def forward(self, query: torch.Tensor, gallery: torch.Tensor) -> torch.Tensor:
        return siglip(query, gallery, self.logit_scale, self.logit_bias)


class HingeTripletLoss(nn.Module):
    """:func:`hinge_triplet`: VSE0 (summed over negatives) or VSE++ (``hardest``)."""

    def __init__(self, margin: float = 0.2, hardest: bool = False) -> None:
        super().__init__()
        self.margin, self.hardest = margin, hardest

    def forward(self, query: torch.Tensor, gallery: torch.Tensor) -> torch.Tensor:
        return hinge_triplet(query, gallery, self.margin, self.hardest)


class LabelSmoothingCrossEntropy(nn.Module):
    """:func:`label_smoothing_cross_entropy` with a fixed ``smoothing``."""

    def __init__(self, smoothing: float = 0.0) -> None:
        super().__init__()
        self.smoothing = smoothing

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return label_smoothing_cross_entropy(logits, targets, self.smoothing)


def retrieval_loss(
    name: RetrievalLoss, temperature: float = 0.07, margin: float = 0.2
) -> nn.Module:
    """The loss module a retrieval task's ``loss`` names: InfoNCE starts at ``temperature``,
    SigLIP at the paper's scale and bias, the hinge losses use ``margin``."""
    if name == "info_nce":
        return InfoNCELoss(temperature)
    if name == "siglip":
        return SigLIPLoss()
    return HingeTripletLoss(margin, hardest=name == "hinge_hardest")
