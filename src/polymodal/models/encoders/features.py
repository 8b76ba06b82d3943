"""Precomputed feature vectors (B, D) or feature sequences (B, T, D) with lengths."""

from __future__ import annotations

import torch
from torch import nn

from polymodal.models.encoders.base import Encoded
from polymodal.models.encoders.blocks import masked_mean, valid_mask, zero_padding


class FeaturesPassthrough(nn.Module):
    """The features as they are, or through one ``nn.Linear`` to ``dim`` when it is set.

    A vector is one token and its own pooled value; a sequence's tokens are masked by its
    lengths and pooled by their masked mean.
    """

    def __init__(self, input_dim: int, dim: int | None = None) -> None:
        super().__init__()
        self.project = nn.Identity() if dim is None else nn.Linear(input_dim, dim)
        self.output_dim = input_dim if dim is None else dim

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> Encoded:
        x = self.project(x)
        if x.dim() == 2:
            mask = torch.ones(len(x), 1, dtype=torch.bool, device=x.device)
            return Encoded(x.unsqueeze(1), mask, x)
        valid = valid_mask(lengths, *x.shape[:2], x.device)
        tokens = zero_padding(x, valid)
        return Encoded(tokens, valid, masked_mean(tokens, valid))
