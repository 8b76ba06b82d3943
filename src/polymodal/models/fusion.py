"""Fusion methods: each maps ``{field: Encoded}`` + presence masks to one (B, dim) vector.

Every method works when any modality is absent for any row, and its output never depends on
an absent input's values. Fields are always visited in sorted order.
"""

from __future__ import annotations

import torch
from torch import nn

from polymodal.models.encoders.base import Encoded


class Concat(nn.Module):
    """Concatenate pooled vectors (zeroed where absent) and presence flags, then project."""

    def __init__(self, input_dims: dict[str, int], dim: int = 256, dropout: float = 0.1) -> None:
        super().__init__()
        self.fields = sorted(input_dims)
        width = sum(input_dims.values()) + len(self.fields)
        self.project = nn.Sequential(nn.Linear(width, dim), nn.ReLU(), nn.Dropout(dropout))
        self.output_dim = dim

    def forward(
        self, encoded: dict[str, Encoded], present: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        parts = []
        for name in self.fields:
            mask = present[name].unsqueeze(-1).to(encoded[name].pooled.dtype)
            parts += [encoded[name].pooled * mask, mask]
        return self.project(torch.cat(parts, dim=-1))


class Attention(nn.Module):
    """A weighted sum of projected pooled vectors, with learned weights over the present fields.

    ``modality_weights`` exposes the (B, M) weights (fields in sorted order; 0 for absent ones).
    A row with no field present fuses to zeros.
    """

    def __init__(self, input_dims: dict[str, int], dim: int = 256, dropout: float = 0.1) -> None:
        super().__init__()
        self.fields = sorted(input_dims)
        self.project = nn.ModuleDict({f: nn.Linear(input_dims[f], dim) for f in self.fields})
        self.score = nn.Sequential(nn.Linear(dim, dim), nn.Tanh(), nn.Linear(dim, 1, bias=False))
        self.out = nn.Sequential(nn.ReLU(), nn.Dropout(dropout))
        self.output_dim = dim

    def _project(self, encoded: dict[str, Encoded]) -> torch.Tensor:
        return torch.stack([self.project[f](encoded[f].pooled) for f in self.fields], dim=1)

    def _weights(self, projected: torch.Tensor, present: dict[str, torch.Tensor]) -> torch.Tensor:
        mask = torch.stack([present[f] for f in self.fields], dim=1)  # (B, M)
        scores = self.score(projected).squeeze(-1).masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, dim=1)
        return torch.nan_to_num(weights, nan=0.0)  # rows with nothing present: all -inf -> NaN

    def modality_weights(
        self, encoded: dict[str, Encoded], present: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        return self._weights(self._project(encoded), present)

    def forward(
        self, encoded: dict[str, Encoded], present: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        projected = self._project(encoded)
        mask = torch.stack([present[f] for f in self.fields], dim=1).unsqueeze(-1)
        projected = projected.masked_fill(~mask, 0.0)  # absent values cannot leak in
        weights = self._weights(projected, present)
        return self.out((weights.unsqueeze(-1) * projected).sum(1))


class LowRankTensor(nn.Module):
    """Low-rank multimodal fusion (Liu et al., 2018): a rank-``rank`` outer product of [h; 1].

    Each field's pooled vector, extended with a constant 1, is projected by ``rank`` factors;
    the projections are multiplied across fields and summed over the rank. The product lets one
    modality gate another (does the image hold what the text names?). An absent field enters as
    [0; 1], a learned constant, so its values cannot leak in.
    """

    def __init__(
        self, input_dims: dict[str, int], dim: int = 256, dropout: float = 0.1, rank: int = 8
    ) -> None:
        super().__init__()
        self.fields = sorted(input_dims)
        self.factors = nn.ParameterDict(
            {
                f: nn.Parameter(nn.init.xavier_normal_(torch.empty(rank, input_dims[f] + 1, dim)))
                for f in self.fields
            }
        )
        self.rank_weights = nn.Parameter(nn.init.xavier_normal_(torch.empty(1, rank)))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.out = nn.Sequential(nn.ReLU(), nn.Dropout(dropout))
        self.output_dim = dim

    def forward(
        self, encoded: dict[str, Encoded], present: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        product: torch.Tensor | None = None
        for name in self.fields:
            pooled = encoded[name].pooled
            mask = present[name].unsqueeze(-1).to(pooled.dtype)
            extended = torch.cat([pooled * mask, torch.ones_like(mask)], dim=-1)  # (B, d+1)
            projected = torch.einsum("bd,rdo->rbo", extended, self.factors[name])
            product = projected if product is None else product * projected
        assert product is not None
        fused = torch.einsum("r,rbo->bo", self.rank_weights[0], product) + self.bias
        return self.out(fused)


class CrossAttention(nn.Module):
    """Each field's tokens attend over the tokens of the other present fields, then pool.

    Per field: tokens are projected to ``dim`` with a learned modality embedding; a pre-norm
    multi-head cross-attention block (queries from the field, keys and values from the others)
    and a feed-forward block update them; a masked mean pools them. Keys always include a
    learned null token, so a row whose other fields are absent attends to it alone and absent
    values cannot leak in. Pooled vectors (zeroed where absent) and presence flags are
    concatenated and projected, as in ``Concat``.
    """

    def __init__(
        self, input_dims: dict[str, int], dim: int = 256, dropout: float = 0.1, heads: int = 4
    ) -> None:
        super().__init__()
        self.fields = sorted(input_dims)
        self.project = nn.ModuleDict({f: nn.Linear(input_dims[f], dim) for f in self.fields})
        self.modality = nn.ParameterDict(
            {f: nn.Parameter(torch.randn(dim) * 0.02) for f in self.fields}
        )
        self.null = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.query_norm = nn.LayerNorm(dim)
        self.key_norm = nn.LayerNorm(dim)
        self.attend = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.feed_forward = nn.Sequential(
            nn.LayerNorm(dim), nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim)
        )
        self.out = nn.Sequential(
            nn.Linear(len(self.fields) * (dim + 1), dim), nn.ReLU(), nn.Dropout(dropout)
        )
        self.output_dim = dim

    def forward(
        self, encoded: dict[str, Encoded], present: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        tokens = {f: self.project[f](encoded[f].tokens) + self.modality[f] for f in self.fields}
        valid = {f: encoded[f].token_mask & present[f].unsqueeze(-1) for f in self.fields}
        parts = []
        for name in self.fields:
            others = [f for f in self.fields if f != name]
            batch = tokens[name].shape[0]
            keys = torch.cat([self.null.expand(batch, 1, -1), *(tokens[f] for f in others)], 1)
            keep = torch.cat([valid[name].new_ones(batch, 1), *(valid[f] for f in others)], dim=1)
            keys = self.key_norm(keys)
            attended, _ = self.attend(
                self.query_norm(tokens[name]),
                keys,
                keys,
                key_padding_mask=~keep,
                need_weights=False,
            )
            updated = tokens[name] + attended
            updated = updated + self.feed_forward(updated)
            weights = valid[name].unsqueeze(-1).to(updated.dtype)
            pooled = (updated * weights).sum(1) / weights.sum(1).clamp(min=1.0)
            flag = present[name].unsqueeze(-1).to(pooled.dtype)
            parts += [pooled * flag, flag]
        return self.out(torch.cat(parts, dim=-1))


FUSIONS: dict[str, type[nn.Module]] = {
    "concat": Concat,
    "attention": Attention,
    "low_rank_tensor": LowRankTensor,
    "cross_attention": CrossAttention,
}
