from __future__ import annotations

from typing import get_args

import pytest
import torch

from polymodal.config import FusionConfig
from polymodal.models.encoders.base import Encoded
from polymodal.models.fusion import FUSIONS


def encoded(dims: dict[str, int], batch: int, seed: int) -> dict[str, Encoded]:
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, dim in dims.items():
        pooled = torch.randn(batch, dim, generator=gen)
        out[name] = Encoded(pooled.unsqueeze(1), torch.ones(batch, 1, dtype=torch.bool), pooled)
    return out


@pytest.mark.parametrize("name", sorted(FUSIONS))
def test_absent_inputs_do_not_matter(name):
    dims = {"text": 6, "image": 4, "price": 3}
    fusion = FUSIONS[name](dims, dim=8).eval()
    present = {
        "image": torch.tensor([True, False, True, False]),
        "text": torch.tensor([True, True, False, False]),
        "price": torch.tensor([False, True, True, False]),
    }
    a, b = encoded(dims, 4, 0), encoded(dims, 4, 1)
    for field, mask in present.items():  # b equals a wherever the field is present
        b[field].pooled[mask] = a[field].pooled[mask]
    out_a, out_b = fusion(a, present), fusion(b, present)
    assert out_a.shape == (4, 8)
    assert torch.isfinite(out_a).all()
    assert torch.allclose(out_a, out_b)
    assert not torch.allclose(out_a[0], out_a[1])
    out_a.sum().backward()
    grads = [p.grad for p in fusion.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_attention_weights_cover_present_fields_only():
    dims = {"image": 4, "text": 4}
    fusion = FUSIONS["attention"](dims, dim=8)
    present = {
        "image": torch.tensor([True, True, False]),
        "text": torch.tensor([True, False, False]),
    }
    weights = fusion.modality_weights(encoded(dims, 3, 0), present)
    assert torch.allclose(weights.sum(1), torch.tensor([1.0, 1.0, 0.0]))
    assert weights[1].tolist() == [1.0, 0.0]
    assert torch.equal(fusion(encoded(dims, 3, 0), present)[2], torch.zeros(8))


def test_fields_are_visited_in_sorted_order():
    fusion = FUSIONS["concat"]({"b": 2, "a": 3}, dim=4)
    assert fusion.fields == ["a", "b"]


def test_fusion_names_match_the_config():
    assert set(get_args(FusionConfig.model_fields["type"].annotation)) == set(FUSIONS)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("sum", [[4.0, 2.0], [1.0, 2.0], [0.0, 0.0]]),
        ("mean", [[2.0, 1.0], [1.0, 2.0], [0.0, 0.0]]),
        ("max", [[3.0, 2.0], [1.0, 2.0], [0.0, 0.0]]),
        ("product", [[3.0, 0.0], [1.0, 2.0], [0.0, 0.0]]),
    ],
)
def test_pooling_reduces_over_present_fields_only(name, expected):
    dims = {"a": 2, "b": 2}
    fusion = FUSIONS[name](dims, dim=2).eval()
    with torch.no_grad():
        for linear in fusion.project.values():
            linear.weight.copy_(torch.eye(2))
            linear.bias.zero_()
    values = {"a": [[1.0, 2.0], [1.0, 2.0], [5.0, 5.0]], "b": [[3.0, 0.0], [9.0, 9.0], [5.0, 5.0]]}
    inputs = {
        f: Encoded(
            torch.tensor(v).unsqueeze(1), torch.ones(3, 1, dtype=torch.bool), torch.tensor(v)
        )
        for f, v in values.items()
    }
    present = {"a": torch.tensor([True, True, False]), "b": torch.tensor([True, False, False])}
    assert fusion(inputs, present).tolist() == expected


def test_tensor_fusion_absent_field_is_the_one_only_vector():
    dims = {"image": 4, "text": 6}
    fusion = FUSIONS["tensor"](dims, dim=8)
    present = {"image": torch.tensor([True, False]), "text": torch.tensor([True, True])}
    extended = fusion.extended(encoded(dims, 2, 0), present)
    assert extended.shape == (2, 2, 9)
    assert extended[1, 0].tolist() == [0.0] * 8 + [1.0]
    assert extended[:, :, -1].eq(1.0).all()
    assert extended[0, 0, :-1].ne(0.0).any()
