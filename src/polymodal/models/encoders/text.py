"""A small transformer text encoder with a padding mask."""

from __future__ import annotations

import torch
from torch import nn

from polymodal.models.encoders.base import Encoded


class TextTransformer(nn.Module):
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
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=pad_id)
        self.position = nn.Parameter(torch.randn(max_length, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(
            dim, heads, 4 * dim, dropout, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.output_dim = dim

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor | None = None) -> Encoded:
        steps = ids.shape[1]
        if lengths is None:
            lengths = torch.full((ids.shape[0],), steps, device=ids.device)
        # An absent row has length 0; keep one position so attention has something to attend to.
        valid = torch.arange(steps, device=ids.device)[None, :] < lengths.clamp(min=1)[:, None]
        x = self.embed(ids) + self.position[:steps]
        tokens = self.norm(self.encoder(x, src_key_padding_mask=~valid))
        weights = valid.unsqueeze(-1).to(tokens.dtype)
        pooled = (tokens * weights).sum(1) / weights.sum(1)
        return Encoded(tokens, valid, pooled)
