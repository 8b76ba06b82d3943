"""Video encoders: an image encoder on every valid frame, then attention pooling over time."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from polymodal.models.encoders.base import Encoded
from polymodal.models.encoders.blocks import valid_mask, zero_padding
from polymodal.models.encoders.image import ImageCNN, ImageViT


class VideoEncoder(nn.Module):
    """``frame_encoder`` reads each valid frame of (B, F, C, S, S) (padded frames are never
    encoded); tokens are the frames' pooled vectors plus a learned position per frame; pooled
    is their attention-weighted sum, a learned query scoring each valid frame (masked softmax).
    """

    # Submodule -> the one output it alone computes; a model freezes it where nothing reads that
    output_heads: ClassVar[dict[str, str]] = {"query": "pooled"}

    def __init__(self, frame_encoder: nn.Module, frames: int) -> None:
        super().__init__()
        self.frame_encoder = frame_encoder
        dim = frame_encoder.output_dim
        self.position = nn.Parameter(torch.randn(frames, dim) * 0.02)
        self.query = nn.Linear(dim, 1, bias=False)
        self.output_dim = dim

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> Encoded:
        batch, frames = x.shape[:2]
        valid = valid_mask(lengths, batch, frames, x.device)
        encoded = self.frame_encoder(x[valid]).pooled  # (valid frames, dim)
        tokens = encoded.new_zeros(batch, frames, self.output_dim).index_put((valid,), encoded)
        tokens = zero_padding(tokens + self.position[:frames], valid)
        scores = self.query(tokens).squeeze(-1).masked_fill(~valid, float("-inf"))
        weights = torch.softmax(scores, dim=1).unsqueeze(-1)
        return Encoded(tokens, valid, (weights * tokens).sum(1))


class VideoCNN(VideoEncoder):
    """``ImageCNN`` on each frame (its pooled vector; the cells are not projected, as nothing
    reads them), attention pooling over the frames."""

    def __init__(
        self,
        in_channels: int = 3,
        frames: int = 8,
        dim: int = 128,
        channels: list[int] = (32, 64, 128, 128),  # type: ignore[assignment]
        dropout: float = 0.0,
    ) -> None:
        frame_encoder = ImageCNN(in_channels, dim, channels, dropout)
        frame_encoder.token_proj = nn.Identity()  # only a frame's pooled vector is read
        super().__init__(frame_encoder, frames)


class VideoViT(VideoEncoder):
    """``ImageViT`` on each frame, attention pooling over the frames."""

    def __init__(
        self,
        size: int,
        in_channels: int = 3,
        frames: int = 8,
        dim: int = 128,
        patch: int = 8,
        layers: int = 4,
        heads: int = 4,
        dropout: float = 0.1,
    ) -> None:
        super().__init__(ImageViT(size, in_channels, dim, patch, layers, heads, dropout), frames)
