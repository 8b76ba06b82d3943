from __future__ import annotations

import torch

from polymodal.models.encoders import FeaturesPassthrough


def test_vectors_pass_through_as_one_token():
    enc = FeaturesPassthrough(input_dim=5)
    x = torch.randn(3, 5)
    out = enc(x)
    assert enc.output_dim == 5 and not list(enc.parameters())
    assert torch.equal(out.pooled, x) and torch.equal(out.tokens, x.unsqueeze(1))
    assert out.token_mask.shape == (3, 1) and out.token_mask.all()


def test_sequences_are_masked_and_projected_when_dim_is_set():
    enc = FeaturesPassthrough(input_dim=5, dim=2)
    x = torch.randn(2, 4, 5)
    out = enc(x, torch.tensor([4, 2]))
    assert enc.output_dim == 2 and out.tokens.shape == (2, 4, 2)
    assert out.token_mask.sum(1).tolist() == [4, 2]
    assert torch.allclose(out.pooled[1], enc.project(x[1, :2]).mean(0))
