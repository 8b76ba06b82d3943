from __future__ import annotations

import torch

from polymodal.models.encoders import ImageCNN, TabularMLP, TextTransformer


def test_image_cnn_shapes():
    enc = ImageCNN(dim=16, channels=[8, 8]).eval()
    out = enc(torch.randn(2, 3, 32, 32))
    assert out.tokens.shape == (2, 64, 16) and out.pooled.shape == (2, 16)
    assert out.token_mask.all() and enc.output_dim == 16


def test_text_transformer_ignores_padding():
    enc = TextTransformer(vocab_size=20, dim=16, layers=1, heads=2, max_length=8).eval()
    ids = torch.tensor([[5, 6, 7, 0, 0], [5, 6, 7, 9, 9]])
    out = enc(ids, torch.tensor([3, 3]))  # row 2's trailing tokens are padding by length
    assert torch.allclose(out.pooled[0], out.pooled[1], atol=1e-5)
    assert out.token_mask.tolist()[0] == [True, True, True, False, False]
    empty = enc(torch.zeros(1, 4, dtype=torch.long), torch.tensor([0]))  # absent row: no NaN
    assert torch.isfinite(empty.pooled).all()


def test_tabular_mlp_reads_numeric_and_categorical():
    enc = TabularMLP(num_numeric=2, cardinalities=[3, 4], dim=8).eval()
    x = torch.tensor([[0.5, -1.0, 2.0, 3.0], [0.0, 0.0, 0.0, 0.0]])
    out = enc(x)
    assert out.pooled.shape == (2, 8) and out.tokens.shape == (2, 1, 8)
