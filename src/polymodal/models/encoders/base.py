"""What every encoder returns."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Encoded:
    """``tokens`` (B, T, D) with ``token_mask`` (B, T) True where valid, and ``pooled`` (B, D)."""

    tokens: torch.Tensor
    token_mask: torch.Tensor
    pooled: torch.Tensor

    def take(self, rows: torch.Tensor) -> Encoded:
        """The outputs of ``rows`` (indices, repeats allowed), in that order."""
        return Encoded(self.tokens[rows], self.token_mask[rows], self.pooled[rows])
