"""Text encoders over token ids with a padding mask: a transformer, a GRU/LSTM, a bag."""

from __future__ import annotations

import torch
from torch import nn

from polymodal.models.encoders.base import Encoded
from polymodal.models.encoders.blocks import (
    Cell,
    PackedRNN,
    TokenTransformer,
    masked_mean,
    valid_mask,
    zero_padding,
)


class TextTransformer(TokenTransformer):
    """Token + position embeddings, pre-norm transformer layers, masked-mean pooled output."""

    def __init__(
        self,
        vocab_size: int,
        pad_id: int = 0,
        max_length: int = 64,
        dim: int = 64,
        layers: int = 2,
        heads: int = 4,
        dropout: float = 0.1,
    ) -> None:
        super().__init__(dim, layers, heads, dropout, max_length)
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=pad_id)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor | None = None) -> Encoded:
        valid = valid_mask(lengths, *ids.shape, ids.device)
        return self.encoded(self.embed(ids), valid)


class TextRNN(PackedRNN):
    """Token embeddings (``dim``) read by a (bidirectional) GRU or LSTM over the valid tokens;
    each token's states projected to ``dim``; pooled is their masked mean."""

    def __init__(
        self,
        vocab_size: int,
        pad_id: int = 0,
        dim: int = 64,
        hidden: int = 64,
        layers: int = 1,
        bidirectional: bool = True,
        dropout: float = 0.1,
        cell: Cell = "gru",
    ) -> None:
        super().__init__(dim, dim, hidden, layers, bidirectional, dropout, cell)
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=pad_id)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor | None = None) -> Encoded:
        return super().forward(self.dropout(self.embed(ids)), lengths)


class TextBag(nn.Module):
    """A bag of embeddings (fastText-like): tokens are the token embeddings (with dropout),
    pooled is their masked mean."""

    def __init__(
        self, vocab_size: int, pad_id: int = 0, dim: int = 64, dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=pad_id)
        self.dropout = nn.Dropout(dropout)
        self.output_dim = dim

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor | None = None) -> Encoded:
        valid = valid_mask(lengths, *ids.shape, ids.device)
        tokens = zero_padding(self.dropout(self.embed(ids)), valid)
        return Encoded(tokens, valid, masked_mean(tokens, valid))
