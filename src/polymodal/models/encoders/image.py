"""Image encoders: a small convolutional network and a small vision transformer."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from polymodal.errors import ConfigError
from polymodal.models.encoders.base import Encoded
from polymodal.models.encoders.blocks import TokenTransformer, conv_block


class ImageCNN(nn.Module):
    """Stride-2 conv blocks; tokens are the last feature map's cells, pooled is mean + max.

    Two coordinate channels are appended to the input (CoordConv), so features, and the max
    pooled over them, can say where a small object is as well as what it is.
    """

    # Submodule -> the one output it alone computes; a model freezes it where nothing reads that
    output_heads: ClassVar[dict[str, str]] = {"token_proj": "tokens", "pool_proj": "pooled"}

    def __init__(
        self,
        in_channels: int = 3,
        dim: int = 128,
        channels: list[int] = (32, 64, 128, 128),  # type: ignore[assignment]
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        previous = in_channels + 2
        for width in channels:
            layers += conv_block(previous, width)
            previous = width
        self.features = nn.Sequential(*layers)
        self.token_proj = nn.Linear(previous, dim)
        self.pool_proj = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * previous, dim))
        self.output_dim = dim

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> Encoded:
        b, _, h, w = x.shape
        ys = torch.linspace(-1, 1, h, device=x.device, dtype=x.dtype).view(1, 1, h, 1)
        xs = torch.linspace(-1, 1, w, device=x.device, dtype=x.dtype).view(1, 1, 1, w)
        coords = torch.cat([xs.expand(b, 1, h, w), ys.expand(b, 1, h, w)], dim=1)
        maps = self.features(torch.cat([x, coords], dim=1))  # (B, C, h', w')
        cells = maps.flatten(2).transpose(1, 2)  # (B, h*w, C)
        pooled = self.pool_proj(torch.cat([cells.mean(1), cells.amax(1)], dim=-1))
        tokens = self.token_proj(cells)
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=x.device)
        return Encoded(tokens, mask, pooled)


class ImageViT(TokenTransformer):
    """A vision transformer: non-overlapping ``patch`` x ``patch`` patches embedded by a strided
    convolution, a class token, learned positions, pre-norm transformer layers.

    Tokens are the patches ((size // patch) ** 2 of them); pooled is the class token's output.
    Images must be ``size`` pixels square (the data's image size), which fixes the positions.
    """

    def __init__(
        self,
        size: int,
        in_channels: int = 3,
        dim: int = 128,
        patch: int = 8,
        layers: int = 4,
        heads: int = 4,
        dropout: float = 0.1,
    ) -> None:
        if patch > size:
            raise ConfigError(
                f"a vit encoder's patch ({patch} px) is larger than the {size} px images; "
                "set a smaller patch or a larger image size in the data section"
            )
        super().__init__(dim, layers, heads, dropout, (size // patch) ** 2 + 1)
        self.patches = nn.Conv2d(in_channels, dim, patch, stride=patch)
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.02)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> Encoded:
        patches = self.patches(x).flatten(2).transpose(1, 2)  # (B, N, dim)
        x = torch.cat([self.cls.expand(len(patches), -1, -1), patches], dim=1)
        valid = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        tokens = self.contextualise(x, valid)
        return Encoded(tokens[:, 1:], valid[:, 1:], tokens[:, 0])
