"""Fusion methods: each maps ``{field: Encoded}`` + presence masks to one (B, dim) vector.

Every method works when any modality is absent for any row, and its output never depends on
an absent input's values. Fields are always visited in sorted order.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import partial
from typing import Literal, get_args

import torch
from torch import nn
from torch.nn import functional as F

from polymodal.config import FusionConfig
from polymodal.errors import ConfigError
from polymodal.models.encoders.base import Encoded

Reduction = Literal["sum", "mean", "max", "product"]


def _mask(fields: list[str], present: dict[str, torch.Tensor]) -> torch.Tensor:
    """The (B, M) presence mask, fields in the given order."""
    return torch.stack([present[f] for f in fields], dim=1)


def _masked_concat(
    fields: list[str], encoded: dict[str, Encoded], present: dict[str, torch.Tensor]
) -> torch.Tensor:
    """Pooled vectors (zeroed where absent) and presence flags, concatenated per row."""
    parts = []
    for name in fields:
        mask = present[name].unsqueeze(-1).to(encoded[name].pooled.dtype)
        parts += [encoded[name].pooled * mask, mask]
    return torch.cat(parts, dim=-1)


def _masked_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax of (B, M) scores over the present fields; absent ones and empty rows get 0."""
    weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=1)
    return torch.nan_to_num(weights, nan=0.0)  # rows with nothing present: all -inf -> NaN


def _reduce(values: torch.Tensor, mask: torch.Tensor, reduction: Reduction) -> torch.Tensor:
    """Reduce (B, M, D) ``values`` over the present fields of ``mask`` (B, M) to (B, D).

    Absent values never enter; a row with nothing present reduces to zeros.
    """
    keep = mask.unsqueeze(-1)
    if reduction == "max":
        out = values.masked_fill(~keep, float("-inf")).amax(1)
    elif reduction == "product":
        out = values.masked_fill(~keep, 1.0).prod(1)
    else:
        out = values.masked_fill(~keep, 0.0).sum(1)
        if reduction == "mean":
            out = out / keep.sum(1).clamp(min=1)
    return out.masked_fill(~keep.any(1), 0.0)


def _valid_tokens(encoded: Encoded, present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A field's tokens zeroed where not valid, and the (B, T) valid mask: a token is valid
    where ``token_mask`` holds and the field is present. Zeroing keeps any value out (0 * NaN
    would be NaN)."""
    valid = encoded.token_mask & present.unsqueeze(-1)
    return encoded.tokens.masked_fill(~valid.unsqueeze(-1), 0.0), valid


def _masked_mean(tokens: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Mean of (B, T, D) ``tokens`` over the positions ``keep`` (B, T) holds; none: zeros."""
    weights = keep.unsqueeze(-1).to(tokens.dtype)
    return (tokens * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def _some_key(keep: torch.Tensor) -> torch.Tensor:
    """``keep`` (B, T), except that a row keeping nothing keeps everything: attention over no
    key at all is NaN. Callers discard such rows' outputs."""
    return keep | ~keep.any(1, keepdim=True)


def _transformer(width: int, heads: int, layers: int, dropout: float) -> nn.TransformerEncoder:
    """``layers`` pre-norm self-attention layers (feed-forward twice as wide), a final norm."""
    layer = nn.TransformerEncoderLayer(
        width, heads, 2 * width, dropout, activation="gelu", batch_first=True, norm_first=True
    )
    return nn.TransformerEncoder(
        layer, layers, norm=nn.LayerNorm(width), enable_nested_tensor=False
    )


class _CrossBlock(nn.Module):
    """Pre-norm cross-attention (queries attend to keys), then a feed-forward; both residual."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.query_norm = nn.LayerNorm(dim)
        self.key_norm = nn.LayerNorm(dim)
        self.attend = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.feed_forward = nn.Sequential(
            nn.LayerNorm(dim), nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim)
        )

    def attend_to(
        self, queries: torch.Tensor, keys: torch.Tensor, keep: torch.Tensor
    ) -> torch.Tensor:
        """``queries`` (B, T, D) updated from ``keys`` (B, S, D) where ``keep`` (B, S) holds;
        every row must keep at least one key."""
        keys = self.key_norm(keys)
        attended, _ = self.attend(
            self.query_norm(queries), keys, keys, key_padding_mask=~keep, need_weights=False
        )
        updated = queries + attended
        return updated + self.feed_forward(updated)


class _Projection(nn.ModuleDict):
    """One linear map per field (``self[field]`` projects that field's tokens); calling it
    stacks the projected pooled vectors (B, M, width)."""

    def __init__(self, input_dims: dict[str, int], width: int) -> None:
        super().__init__({f: nn.Linear(input_dims[f], width) for f in sorted(input_dims)})

    def forward(self, encoded: dict[str, Encoded]) -> torch.Tensor:
        return torch.stack([self[f](encoded[f].pooled) for f in self], dim=1)


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
        return self.project(_masked_concat(self.fields, encoded, present))


class Attention(nn.Module):
    """A weighted sum of projected pooled vectors, with learned weights over the present fields.

    ``modality_weights`` exposes the (B, M) weights (fields in sorted order; 0 for absent ones).
    A row with no field present fuses to zeros.
    """

    def __init__(self, input_dims: dict[str, int], dim: int = 256, dropout: float = 0.1) -> None:
        super().__init__()
        self.fields = sorted(input_dims)
        self.project = _Projection(input_dims, dim)
        self.score = nn.Sequential(nn.Linear(dim, dim), nn.Tanh(), nn.Linear(dim, 1, bias=False))
        self.out = nn.Sequential(nn.ReLU(), nn.Dropout(dropout))
        self.output_dim = dim

    def _weights(self, projected: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return _masked_softmax(self.score(projected).squeeze(-1), mask)

    def modality_weights(
        self, encoded: dict[str, Encoded], present: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        return self._weights(self.project(encoded), _mask(self.fields, present))

    def forward(
        self, encoded: dict[str, Encoded], present: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        mask = _mask(self.fields, present)
        projected = self.project(encoded).masked_fill(~mask.unsqueeze(-1), 0.0)  # no leaks
        weights = self._weights(projected, mask)
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


class CrossAttention(_CrossBlock):
    """Each field's tokens attend over the tokens of the other present fields, then pool.

    Per field: tokens are projected to ``dim`` with a learned modality embedding; a pre-norm
    multi-head cross-attention block (queries from the field, keys and values from the others)
    and a feed-forward block update them; a masked mean pools them. Keys always include a
    learned null token, so a row whose other fields are absent attends to it alone and absent
    values cannot leak in. Pooled vectors (zeroed where absent) and presence flags are
    concatenated and projected, as in ``Concat``. The one block is shared by the fields.
    """

    def __init__(
        self, input_dims: dict[str, int], dim: int = 256, dropout: float = 0.1, heads: int = 4
    ) -> None:
        super().__init__(dim, heads, dropout)
        self.fields = sorted(input_dims)
        self.project = _Projection(input_dims, dim)
        self.modality = nn.ParameterDict(
            {f: nn.Parameter(torch.randn(dim) * 0.02) for f in self.fields}
        )
        self.null = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
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
            updated = self.attend_to(tokens[name], keys, keep)
            flag = present[name].unsqueeze(-1).to(updated.dtype)
            parts += [_masked_mean(updated, valid[name]) * flag, flag]
        return self.out(torch.cat(parts, dim=-1))


class EarlyTransformer(nn.Module):
    """Early fusion: one transformer over the tokens of every field (single-stream, as ViLT).

    Each field's tokens are projected to ``dim`` and tagged with a learned modality embedding;
    a learned CLS token leads the sequence, and ``layers`` pre-norm transformer layers with
    ``heads`` heads run over it. The key padding mask hides padded tokens and every token of
    an absent field, so the CLS output, the fused vector, never sees them. A row with nothing
    present fuses to a learned constant.
    """

    def __init__(
        self,
        input_dims: dict[str, int],
        dim: int = 256,
        dropout: float = 0.1,
        layers: int = 2,
        heads: int = 4,
    ) -> None:
        super().__init__()
        self.fields = sorted(input_dims)
        self.project = _Projection(input_dims, dim)
        self.modality = nn.ParameterDict(
            {f: nn.Parameter(torch.randn(dim) * 0.02) for f in self.fields}
        )
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.transformer = _transformer(dim, heads, layers, dropout)
        self.output_dim = dim

    def forward(
        self, encoded: dict[str, Encoded], present: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        first = present[self.fields[0]]
        tokens, keep = [self.cls.expand(len(first), 1, -1)], [first.new_ones(len(first), 1)]
        for name in self.fields:
            values, valid = _valid_tokens(encoded[name], present[name])
            tokens.append(self.project[name](values) + self.modality[name])
            keep.append(valid)
        hidden = self.transformer(torch.cat(tokens, 1), src_key_padding_mask=~torch.cat(keep, 1))
        return hidden[:, 0]


class MulT(nn.Module):
    """Multimodal transformer (MulT, Tsai et al., 2019), kept small.

    Tokens are projected to ``width`` (default: ``min(dim, 64)`` rounded down to a multiple of
    ``heads``). For each target field and each other (source) field, ``layers`` cross-modal
    blocks let the target's tokens attend to the source's projected tokens, plus a learned null
    key, so a row where the source is absent attends to the null alone. The target's streams
    are concatenated per token, ``layers`` self-attention layers run over the target's valid
    tokens, and a masked mean pools them. Pooled targets (zero where absent) and presence flags
    are concatenated and projected to ``dim``. A lone field is its own stream. Unlike the paper
    there are no temporal convolutions or positional embeddings: the encoders' tokens carry
    their positions.
    """

    def __init__(
        self,
        input_dims: dict[str, int],
        dim: int = 256,
        dropout: float = 0.1,
        layers: int = 2,
        heads: int = 4,
        width: int | None = None,
    ) -> None:
        super().__init__()
        self.fields = sorted(input_dims)
        width = heads * max(1, min(dim, 64) // heads) if width is None else width
        streams = max(1, len(self.fields) - 1)
        self.project = _Projection(input_dims, width)
        self.null = nn.Parameter(torch.randn(1, 1, width) * 0.02)
        self.cross = nn.ModuleDict(
            {
                target: nn.ModuleDict(
                    {
                        source: nn.ModuleList(
                            _CrossBlock(width, heads, dropout) for _ in range(layers)
                        )
                        for source in self.fields
                        if source != target
                    }
                )
                for target in self.fields
            }
        )
        self.self_attention = nn.ModuleDict(
            {f: _transformer(streams * width, heads, layers, dropout) for f in self.fields}
        )
        self.out = nn.Sequential(
            nn.Linear(len(self.fields) * (streams * width + 1), dim), nn.ReLU(), nn.Dropout(dropout)
        )
        self.output_dim = dim

    def forward(
        self, encoded: dict[str, Encoded], present: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        projected, valid = {}, {}
        for name in self.fields:
            values, valid[name] = _valid_tokens(encoded[name], present[name])
            projected[name] = self.project[name](values)
        parts = []
        for target in self.fields:
            streams = []
            for source, blocks in self.cross[target].items():
                batch = len(valid[source])
                keys = torch.cat([self.null.expand(batch, 1, -1), projected[source]], dim=1)
                keep = torch.cat([valid[source].new_ones(batch, 1), valid[source]], dim=1)
                stream = projected[target]
                for block in blocks:
                    stream = block.attend_to(stream, keys, keep)
                streams.append(stream)
            joined = torch.cat(streams or [projected[target]], dim=-1)
            # A row without valid target tokens pools to zeros whatever it attends to.
            hidden = self.self_attention[target](
                joined, src_key_padding_mask=~_some_key(valid[target])
            )
            flag = present[target].unsqueeze(-1).to(hidden.dtype)
            parts += [_masked_mean(hidden, valid[target]), flag]
        return self.out(torch.cat(parts, dim=-1))


class GraphFusion(nn.Module):
    """Fields as the nodes of a graph, fused by attention message passing.

    Graph attention (Veličković et al., 2018) over modality nodes, as in the dynamic fusion
    graph of Zadeh et al. (2018). A node starts as its field's pooled vector projected to
    ``dim`` (zero where absent) plus a learned modality embedding. Each of ``layers`` rounds
    is multi-head attention of every node over the present nodes and itself (a self-loop: an
    absent node hears only itself), then a residual and a LayerNorm. The readout is the mean
    and the max of the present nodes' states, concatenated and projected to ``dim``; a row
    with nothing present fuses to a learned constant.
    """

    def __init__(
        self,
        input_dims: dict[str, int],
        dim: int = 256,
        dropout: float = 0.1,
        layers: int = 2,
        heads: int = 4,
    ) -> None:
        super().__init__()
        self.fields = sorted(input_dims)
        self.heads = heads
        self.project = _Projection(input_dims, dim)
        self.modality = nn.Parameter(torch.randn(len(self.fields), dim) * 0.02)
        self.rounds = nn.ModuleList(
            nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
            for _ in range(layers)
        )
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(layers))
        self.out = nn.Sequential(nn.Linear(2 * dim, dim), nn.ReLU(), nn.Dropout(dropout))
        self.output_dim = dim

    def forward(
        self, encoded: dict[str, Encoded], present: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        mask = _mask(self.fields, present)
        nodes = self.project(encoded).masked_fill(~mask.unsqueeze(-1), 0.0) + self.modality
        loops = torch.eye(len(self.fields), dtype=torch.bool, device=mask.device)
        blocked = ~(mask.unsqueeze(1) | loops)  # (B, node, neighbour): True where cut
        blocked = blocked.repeat_interleave(self.heads, dim=0)
        for attend, norm in zip(self.rounds, self.norms, strict=True):
            messages, _ = attend(nodes, nodes, nodes, attn_mask=blocked, need_weights=False)
            nodes = norm(nodes + messages)
        readout = torch.cat([_reduce(nodes, mask, "mean"), _reduce(nodes, mask, "max")], dim=-1)
        return self.out(readout)


class Pooled(nn.Module):
    """Project each field to ``dim`` and reduce over the present fields, then ReLU.

    ``reduction`` is ``sum``, ``mean`` (over the fields present), ``max`` or ``product``; a row
    with nothing present fuses to zeros.
    """

    def __init__(
        self,
        input_dims: dict[str, int],
        dim: int = 256,
        dropout: float = 0.1,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__()
        self.fields = sorted(input_dims)
        self.reduction: Reduction = reduction
        self.project = _Projection(input_dims, dim)
        self.out = nn.Sequential(nn.ReLU(), nn.Dropout(dropout))
        self.output_dim = dim

    def forward(
        self, encoded: dict[str, Encoded], present: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        mask = _mask(self.fields, present)
        return self.out(_reduce(self.project(encoded), mask, self.reduction))


class Gated(nn.Module):
    """Gated multimodal unit (Arevalo et al., 2017): a gated sum of tanh field projections.

    The gate is a softmax over the present fields of scores computed from the pooled vectors
    (zeroed where absent) and presence flags, concatenated; absent fields get zero gate.
    """

    def __init__(self, input_dims: dict[str, int], dim: int = 256, dropout: float = 0.1) -> None:
        super().__init__()
        self.fields = sorted(input_dims)
        self.project = _Projection(input_dims, dim)
        width = sum(input_dims.values()) + len(self.fields)
        self.gate = nn.Linear(width, len(self.fields))
        self.out = nn.Dropout(dropout)
        self.output_dim = dim

    def forward(
        self, encoded: dict[str, Encoded], present: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        mask = _mask(self.fields, present)
        hidden = torch.tanh(self.project(encoded))
        gate = _masked_softmax(self.gate(_masked_concat(self.fields, encoded, present)), mask)
        return self.out((gate.unsqueeze(-1) * hidden).sum(1))


class TensorFusion(nn.Module):
    """Tensor fusion (Zadeh et al., 2017): a linear map of the outer product of every [h; 1].

    Each field is projected to ``rank_dim`` (default ``min(dim, 16)``) and extended with a
    constant 1; an absent field enters as [0, ..., 0, 1], so its values cannot leak in. The
    outer product has ``(rank_dim + 1) ** M`` entries for M fields.
    """

    def __init__(
        self,
        input_dims: dict[str, int],
        dim: int = 256,
        dropout: float = 0.1,
        rank_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.fields = sorted(input_dims)
        rank_dim = min(dim, 16) if rank_dim is None else rank_dim
        self.project = _Projection(input_dims, rank_dim)
        self.out = nn.Sequential(
            nn.Linear((rank_dim + 1) ** len(self.fields), dim), nn.ReLU(), nn.Dropout(dropout)
        )
        self.output_dim = dim

    def extended(
        self, encoded: dict[str, Encoded], present: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """The (B, M, rank_dim + 1) vectors [h; 1] whose outer product is fused."""
        mask = _mask(self.fields, present).unsqueeze(-1)
        projected = self.project(encoded).masked_fill(~mask, 0.0)
        return torch.cat([projected, torch.ones_like(projected[..., :1])], dim=-1)

    def forward(
        self, encoded: dict[str, Encoded], present: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        extended = self.extended(encoded, present)
        outer = extended[:, 0]
        for index in range(1, extended.shape[1]):
            outer = (outer.unsqueeze(-1) * extended[:, index].unsqueeze(1)).flatten(1)
        return self.out(outer)


class Bilinear(nn.Module):
    """Factorised bilinear pooling (MFB, Yu et al., 2017) of the present fields.

    Each field is projected to ``factors * dim``; the present projections are multiplied
    elementwise, sum-pooled over the ``factors``, then power- (signed square root) and
    L2-normalised. A row with nothing present fuses to zeros.
    """

    def __init__(
        self, input_dims: dict[str, int], dim: int = 256, dropout: float = 0.1, factors: int = 5
    ) -> None:
        super().__init__()
        self.fields = sorted(input_dims)
        self.factors = factors
        self.project = _Projection(input_dims, factors * dim)
        self.out = nn.Dropout(dropout)
        self.output_dim = dim

    def forward(
        self, encoded: dict[str, Encoded], present: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        product = _reduce(self.project(encoded), _mask(self.fields, present), "product")
        pooled = product.unflatten(-1, (self.output_dim, self.factors)).sum(-1)
        # clamp keeps the square root's gradient finite at 0
        signed_root = pooled.sign() * pooled.abs().clamp(min=1e-12).sqrt()
        return self.out(F.normalize(signed_root, dim=-1))


FUSIONS: dict[str, Callable[..., nn.Module]] = {
    "concat": Concat,
    "attention": Attention,
    "low_rank_tensor": LowRankTensor,
    "cross_attention": CrossAttention,
    **{reduction: partial(Pooled, reduction=reduction) for reduction in get_args(Reduction)},
    "gated": Gated,
    "tensor": TensorFusion,
    "bilinear": Bilinear,
    "early_transformer": EarlyTransformer,
    "mult": MulT,
    "graph": GraphFusion,
}
# The fusions that read each field's tokens; every other one reads only the pooled vectors.
TOKEN_FUSIONS = frozenset({"cross_attention", "early_transformer", "mult"})


def make_fusion(config: FusionConfig, input_dims: dict[str, int]) -> nn.Module:
    """The fusion ``config`` names, over fields of ``input_dims`` (name -> pooled width).

    ``layers`` and ``heads`` go to the fusions whose constructor takes them.
    """
    factory = FUSIONS[config.type]
    accepted = inspect.signature(factory).parameters
    options = {key: getattr(config, key) for key in ("layers", "heads") if key in accepted}
    if "heads" in options and config.dim % config.heads:
        raise ConfigError(
            f"model.fusion: {config.type} needs dim ({config.dim}) to be a multiple of heads "
            f"({config.heads}); change fusion.dim or fusion.heads"
        )
    return factory(input_dims, config.dim, config.dropout, **options)
