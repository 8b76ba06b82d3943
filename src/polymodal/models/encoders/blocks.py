"""Pieces the encoders share: length masks, masked pooling, a masked transformer, a packed RNN.

A row of length 0 (its field absent) keeps its first position valid, so attention, softmax and
pooling always have something to read and never produce NaN; fusion ignores such rows anyway.
Outputs at padded positions are zeros, so nothing an encoder returns depends on the padding.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from polymodal.errors import ConfigError
from polymodal.models.encoders.base import Encoded

Cell = Literal["gru", "lstm"]
_CELLS: dict[str, type[nn.RNNBase]] = {"gru": nn.GRU, "lstm": nn.LSTM}


def valid_mask(
    lengths: torch.Tensor | None, batch: int, steps: int, device: torch.device
) -> torch.Tensor:
    """(batch, steps) True at each row's first ``lengths`` positions (at least one)."""
    if lengths is None:
        return torch.ones(batch, steps, dtype=torch.bool, device=device)
    kept = lengths.to(device).clamp(min=1)
    return torch.arange(steps, device=device)[None, :] < kept[:, None]


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mean of (B, T, D) ``values`` over the positions where ``mask`` (B, T) is True."""
    weights = mask.unsqueeze(-1).to(values.dtype)
    return (values * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def masked_max(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The maximum of (B, T, D) ``values`` over the positions where ``mask`` is True."""
    return values.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(1)


def zero_padding(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T, ...) ``values`` with the positions outside ``mask`` (B, T) set to zero."""
    return values * mask.view(*mask.shape, *([1] * (values.dim() - 2))).to(values.dtype)


def conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """A stride-2 3x3 convolution, batch norm and ReLU: halves each side (rounding up)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class TokenTransformer(nn.Module):
    """Learned positions, pre-norm transformer layers and a final norm over valid positions.

    Subclasses embed their input into (B, T, dim) and call ``contextualise``; ``positions`` is
    the most tokens an input can have.
    """

    def __init__(self, dim: int, layers: int, heads: int, dropout: float, positions: int) -> None:
        super().__init__()
        if dim % heads:
            raise ConfigError(
                f"a transformer encoder's dim ({dim}) must be a multiple of its heads ({heads})"
            )
        self.position = nn.Parameter(torch.randn(positions, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(
            dim, heads, 4 * dim, dropout, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.output_dim = dim

    def contextualise(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Tokens of (B, T, dim) embeddings ``x``, attending only to ``valid`` positions."""
        x = x + self.position[: x.shape[1]]
        tokens = self.norm(self.encoder(x, src_key_padding_mask=~valid))
        return zero_padding(tokens, valid)

    def encoded(self, x: torch.Tensor, valid: torch.Tensor) -> Encoded:
        """``contextualise`` the embeddings; pooled is the masked mean of the tokens."""
        tokens = self.contextualise(x, valid)
        return Encoded(tokens, valid, masked_mean(tokens, valid))


class PackedRNN(nn.Module):
    """A GRU or LSTM over the valid steps only (packed), projected to ``dim`` per step; pooled
    is the masked mean of the steps. Padding never enters either direction."""

    def __init__(
        self,
        input_dim: int,
        dim: int,
        hidden: int,
        layers: int,
        bidirectional: bool,
        dropout: float,
        cell: Cell,
    ) -> None:
        super().__init__()
        self.rnn = _CELLS[cell](
            input_dim,
            hidden,
            layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if layers > 1 else 0.0,  # torch applies it between layers only
        )
        self.dropout = nn.Dropout(dropout)
        self.project = nn.Linear(hidden * (2 if bidirectional else 1), dim)
        self.output_dim = dim

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> Encoded:
        batch, steps = x.shape[:2]
        valid = valid_mask(lengths, batch, steps, x.device)
        packed = pack_padded_sequence(x, valid.sum(1).cpu(), batch_first=True, enforce_sorted=False)
        states, _ = pad_packed_sequence(self.rnn(packed)[0], batch_first=True, total_length=steps)
        tokens = zero_padding(self.project(self.dropout(states)), valid)
        return Encoded(tokens, valid, masked_mean(tokens, valid))
