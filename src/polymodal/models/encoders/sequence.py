"""Time-series encoders over (B, steps, channels) with lengths in steps."""

from __future__ import annotations

import torch
from torch import nn

from polymodal.models.encoders.base import Encoded
from polymodal.models.encoders.blocks import Cell, PackedRNN, TokenTransformer, valid_mask


class SequenceRNN(PackedRNN):
    """A (bidirectional) GRU or LSTM reading the channels of each valid step (its input weights
    are the input projection); each step's states projected to ``dim``; pooled is their masked
    mean."""

    def __init__(
        self,
        channels: int,
        dim: int = 64,
        hidden: int = 64,
        layers: int = 1,
        bidirectional: bool = True,
        dropout: float = 0.1,
        cell: Cell = "gru",
    ) -> None:
        super().__init__(channels, dim, hidden, layers, bidirectional, dropout, cell)


class SequenceTransformer(TokenTransformer):
    """Each step's channels projected to ``dim``, learned positions, pre-norm transformer
    layers over the valid steps; pooled is the masked mean of the steps."""

    def __init__(
        self,
        channels: int,
        max_length: int,
        dim: int = 64,
        layers: int = 2,
        heads: int = 4,
        dropout: float = 0.1,
    ) -> None:
        super().__init__(dim, layers, heads, dropout, max_length)
        self.project = nn.Linear(channels, dim)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> Encoded:
        valid = valid_mask(lengths, *x.shape[:2], x.device)
        return self.encoded(self.project(x), valid)
