"""An MLP encoder for a tabular field (numeric columns, then categorical ids)."""

from __future__ import annotations

import torch
from torch import nn

from polymodal.models.encoders.base import Encoded


class TabularMLP(nn.Module):
    """Categorical columns are embedded, numeric ones passed through, then a two-layer MLP."""

    def __init__(
        self,
        num_numeric: int,
        cardinalities: list[int],
        dim: int = 64,
        hidden: int = 128,
        embedding_dim: int = 16,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.num_numeric = num_numeric
        self.embeddings = nn.ModuleList(nn.Embedding(n, embedding_dim) for n in cardinalities)
        width = num_numeric + embedding_dim * len(cardinalities)
        self.mlp = nn.Sequential(
            nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, dim)
        )
        self.output_dim = dim

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> Encoded:
        parts = [x[:, : self.num_numeric]]
        ids = x[:, self.num_numeric :].long()
        parts += [emb(ids[:, i]) for i, emb in enumerate(self.embeddings)]
        pooled = self.mlp(torch.cat(parts, dim=-1))
        tokens = pooled.unsqueeze(1)
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=x.device)
        return Encoded(tokens, mask, pooled)
