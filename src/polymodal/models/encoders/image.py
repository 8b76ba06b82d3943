"""A small convolutional image encoder."""

from __future__ import annotations

import torch
from torch import nn

from polymodal.models.encoders.base import Encoded


class ImageCNN(nn.Module):
    """Stride-2 conv blocks; tokens are the last feature map's cells, pooled is mean + max.

    Two coordinate channels are appended to the input (CoordConv), so features, and the max
    pooled over them, can say where a small object is as well as what it is.
    """

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
            layers += [
                nn.Conv2d(previous, width, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            ]
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
