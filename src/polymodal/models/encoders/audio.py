"""Audio encoders over log-mel spectrograms (B, frames, n_mels) with lengths in frames."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from polymodal.models.encoders.base import Encoded
from polymodal.models.encoders.blocks import (
    TokenTransformer,
    conv_block,
    masked_max,
    masked_mean,
    valid_mask,
    zero_padding,
)

LOG_MEL = "log-mel spectrograms (set data.audio.features: log_mel)"


class AudioCNN(nn.Module):
    """Stride-2 conv blocks over the (1, frames, n_mels) spectrogram image.

    Each block halves time and frequency; frames past a clip's length are zeroed before every
    block, so the output never depends on padding. Tokens are the time steps left (all channels
    and remaining mel bands of a step, projected to ``dim``); pooled is the masked mean + max of
    the steps, projected.
    """

    # Submodule -> the one output it alone computes; a model freezes it where nothing reads that
    output_heads: ClassVar[dict[str, str]] = {"token_proj": "tokens", "pool_proj": "pooled"}

    needs = LOG_MEL

    def __init__(
        self,
        n_mels: int,
        dim: int = 128,
        channels: list[int] = (32, 64, 128, 128),  # type: ignore[assignment]
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            conv_block(a, b) for a, b in zip([1, *channels[:-1]], channels, strict=True)
        )
        bands = n_mels
        for _ in channels:
            bands = (bands + 1) // 2
        width = channels[-1] * bands
        self.token_proj = nn.Linear(width, dim)
        self.pool_proj = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * width, dim))
        self.output_dim = dim

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> Encoded:
        valid = valid_mask(lengths, *x.shape[:2], x.device)
        maps = x.unsqueeze(1)  # (B, 1, frames, n_mels)
        for block in self.blocks:
            maps = block(maps * valid[:, None, :, None])
            valid = valid[:, ::2]  # a step is valid when the centre of its window was
        steps = (maps * valid[:, None, :, None]).permute(0, 2, 1, 3).flatten(2)  # (B, T', C*bands)
        tokens = zero_padding(self.token_proj(steps), valid)
        pooled = self.pool_proj(
            torch.cat([masked_mean(steps, valid), masked_max(steps, valid)], -1)
        )
        return Encoded(tokens, valid, pooled)


class AudioTransformer(TokenTransformer):
    """Frames grouped into patches of ``patch`` frames, projected to ``dim``, with learned
    positions and pre-norm transformer layers; a patch is valid when its first frame is.
    Frames past a clip's length are zeroed first. Pooled is the masked mean of the patches."""

    needs = LOG_MEL

    def __init__(
        self,
        n_mels: int,
        max_frames: int,
        dim: int = 64,
        layers: int = 2,
        heads: int = 4,
        dropout: float = 0.1,
        patch: int = 4,
    ) -> None:
        super().__init__(dim, layers, heads, dropout, -(-max_frames // patch))
        self.patch = patch
        self.project = nn.Linear(patch * n_mels, dim)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> Encoded:
        batch, frames, mels = x.shape
        valid = valid_mask(lengths, batch, frames, x.device)
        extra = -frames % self.patch
        x = F.pad(zero_padding(x, valid), (0, 0, 0, extra))
        patches = x.reshape(batch, -1, self.patch * mels)
        return self.encoded(self.project(patches), valid[:, :: self.patch])
