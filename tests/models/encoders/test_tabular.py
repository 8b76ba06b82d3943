from __future__ import annotations

import torch

from polymodal.models.encoders import TabularMLP


def test_tabular_mlp_reads_numeric_and_categorical():
    enc = TabularMLP(num_numeric=2, cardinalities=[3, 4], dim=8).eval()
    x = torch.tensor([[0.5, -1.0, 2.0, 3.0], [0.0, 0.0, 0.0, 0.0]])
    out = enc(x)
    assert out.pooled.shape == (2, 8) and out.tokens.shape == (2, 1, 8)
