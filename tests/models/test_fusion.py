from __future__ import annotations

from typing import get_args

import pytest
import torch
from torch import nn

from polymodal.config import FusionConfig
from polymodal.errors import ConfigError
from polymodal.models.encoders.base import Encoded
from polymodal.models.fusion import FUSIONS, make_fusion


def encoded(dims: dict[str, int], batch: int, seed: int) -> dict[str, Encoded]:
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, dim in dims.items():
        pooled = torch.randn(batch, dim, generator=gen)
        out[name] = Encoded(pooled.unsqueeze(1), torch.ones(batch, 1, dtype=torch.bool), pooled)
    return out


class TinyEncoder(nn.Module):
    """A real (small) encoder: (B, T, d) values and lengths -> Encoded, a linear map per token
    and a masked mean; positions at or past a row's length are padding."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim)

    def forward(self, values: torch.Tensor, lengths: torch.Tensor) -> Encoded:
        mask = torch.arange(values.shape[1]) < lengths.unsqueeze(1)
        tokens = torch.tanh(self.linear(values))
        weights = mask.unsqueeze(-1).float()
        return Encoded(tokens, mask, (tokens * weights).sum(1) / weights.sum(1).clamp(min=1.0))


# field: (input width, tokens, encoded width); text rows are padded to different lengths
FIELDS = {"image": (5, 4, 6), "text": (3, 5, 4), "price": (2, 1, 3)}
FIELD_SETS = {1: ["text"], 2: ["image", "text"], 3: ["image", "price", "text"]}
BATCH = 8


def inputs(fields: list[str], seed: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Raw (values, lengths) per field; text lengths 1..5, other fields fully valid."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name in fields:
        width, steps, _ = FIELDS[name]
        lengths = torch.full((BATCH,), steps)
        if name == "text":
            lengths = torch.tensor([5, 2, 3, 1, 4, 2, 5, 3])
        out[name] = (torch.randn(BATCH, steps, width, generator=gen), lengths)
    return out


def presence(fields: list[str]) -> dict[str, torch.Tensor]:
    """Random presence, plus rows with every field, each field alone, and nothing present."""
    gen = torch.Generator().manual_seed(len(fields))
    mask = torch.rand(BATCH, len(fields), generator=gen) < 0.5
    mask[0] = True
    mask[1 : 1 + len(fields)] = torch.eye(len(fields), dtype=torch.bool)
    mask[-1] = False
    return {name: mask[:, i] for i, name in enumerate(fields)}


@pytest.mark.parametrize("count", sorted(FIELD_SETS))
@pytest.mark.parametrize("name", sorted(FUSIONS))
def test_fusion_over_real_encoders_ignores_absent_and_padded_inputs(name, count):
    """The missing-modality contract, for every fusion over one, two and three fields."""
    fields = FIELD_SETS[count]
    torch.manual_seed(0)
    encoders = nn.ModuleDict({f: TinyEncoder(FIELDS[f][0], FIELDS[f][2]) for f in fields})
    fusion = make_fusion(
        FusionConfig(type=name, dim=8, layers=2, heads=2), {f: FIELDS[f][2] for f in fields}
    )
    assert fusion.output_dim == 8
    model = nn.ModuleDict({"encoders": encoders, "fusion": fusion}).eval()
    present = presence(fields)

    def fuse(raw: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        return fusion({f: encoders[f](*raw[f]) for f in fields}, present)

    raw = inputs(fields, seed=0)
    out = fuse(raw)
    assert out.shape == (BATCH, 8)
    assert torch.isfinite(out).all()
    # Other values wherever a field is absent or a token is padding: the same output.
    other = inputs(fields, seed=1)
    for f, (values, lengths) in raw.items():
        used = present[f].unsqueeze(1) & (torch.arange(values.shape[1]) < lengths.unsqueeze(1))
        other[f][0][used] = values[used]
        other[f][0][~used] *= 100.0
    assert torch.allclose(fuse(other), out, atol=1e-5)
    # Every present encoder learns from the fused output.
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(2))
    (out * weights).sum().backward()
    for f in fields:
        for parameter_name, parameter in encoders[f].named_parameters():
            grad = parameter.grad
            assert grad is not None and torch.isfinite(grad).all()
            assert grad.abs().sum() > 0, f"{f}.{parameter_name}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


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


def test_make_fusion_passes_layers_and_heads_to_the_fusions_that_take_them():
    dims = {"image": 4, "text": 6}
    config = FusionConfig(type="early_transformer", dim=12, layers=3, heads=3)
    fusion = make_fusion(config, dims)
    assert len(fusion.transformer.layers) == 3
    assert fusion.transformer.layers[0].self_attn.num_heads == 3
    graph = make_fusion(FusionConfig(type="graph", dim=12, layers=1, heads=6), dims)
    assert len(graph.rounds) == 1 and graph.rounds[0].num_heads == 6
    cross = make_fusion(FusionConfig(type="cross_attention", dim=12, heads=3), dims)
    assert cross.attend.num_heads == 3
    concat = make_fusion(FusionConfig(type="concat", dim=12, layers=5, heads=5), dims)
    assert concat.output_dim == 12  # takes neither: the keys are left out


def test_make_fusion_refuses_heads_that_do_not_divide_dim():
    with pytest.raises(ConfigError, match=r"dim \(10\) to be a multiple of heads \(4\)"):
        make_fusion(FusionConfig(type="graph", dim=10, heads=4), {"image": 4})


def test_mult_has_one_cross_modal_stack_per_ordered_pair():
    fusion = make_fusion(FusionConfig(type="mult", dim=16, layers=2, heads=2), {"a": 3, "b": 3})
    assert {t: list(s) for t, s in fusion.cross.items()} == {"a": ["b"], "b": ["a"]}
    assert all(len(blocks) == 2 for s in fusion.cross.values() for blocks in s.values())
    lone = make_fusion(FusionConfig(type="mult", dim=16), {"a": 3})
    assert list(lone.cross["a"]) == []


def test_graph_node_alone_ignores_the_modality_embeddings_of_absent_nodes():
    dims = {"a": 3, "b": 3}
    fusion = make_fusion(FusionConfig(type="graph", dim=8, heads=2), dims).eval()
    present = {"a": torch.tensor([True, True]), "b": torch.tensor([False, True])}
    before = fusion(encoded(dims, 2, 0), present)
    with torch.no_grad():
        fusion.modality[1].add_(1.0)  # b's embedding: only row 1 has b
    after = fusion(encoded(dims, 2, 0), present)
    assert torch.allclose(before[0], after[0])
    assert not torch.allclose(before[1], after[1])
