"""CrossAttention fusion over real token sequences: padding, absent fields, the null key."""

from __future__ import annotations

import torch

from polymodal.models.encoders.base import Encoded
from polymodal.models.encoders.text import TextTransformer
from polymodal.models.fusion import CrossAttention

DIMS = {"text": 6, "image": 4, "price": 3}
STEPS = {"text": 5, "image": 4, "price": 1}  # tokens per field (text is padded)
TEXT_LENGTHS = torch.tensor([5, 2, 3, 1])
PRESENT = {
    "image": torch.tensor([True, True, False, True]),
    "text": torch.tensor([True, True, True, False]),
    "price": torch.tensor([True, False, True, False]),
}


def sequences(seed: int, batch: int = 4) -> dict[str, Encoded]:
    """Random tokens; text rows are padded past TEXT_LENGTHS, the others are fully valid."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, dim in DIMS.items():
        tokens = torch.randn(batch, STEPS[name], dim, generator=gen)
        if name == "text":
            mask = torch.arange(STEPS[name])[None, :] < TEXT_LENGTHS[:, None]
        else:
            mask = torch.ones(batch, STEPS[name], dtype=torch.bool)
        pooled = (tokens * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)
        out[name] = Encoded(tokens, mask, pooled)
    return out


def fusion(seed: int = 0, **kwargs) -> CrossAttention:
    torch.manual_seed(seed)
    return CrossAttention(DIMS, dim=8, heads=2, **kwargs).eval()


def test_output_ignores_padding_and_absent_fields():
    model = fusion()
    a, b = sequences(0), sequences(1)
    for name, enc in a.items():  # b keeps a's values only at valid tokens of present fields
        keep = enc.token_mask & PRESENT[name].unsqueeze(-1)
        b[name].tokens[keep] = enc.tokens[keep]
        b[name].pooled[PRESENT[name]] = enc.pooled[PRESENT[name]]
    out_a, out_b = model(a, PRESENT), model(b, PRESENT)
    assert out_a.shape == (4, 8)
    assert torch.isfinite(out_a).all()
    assert torch.allclose(out_a, out_b, atol=1e-6)
    # The values that were equalised do matter: changing a valid text token changes the row.
    b["text"].tokens[0, 0] += 1.0
    changed = model(b, PRESENT)
    assert not torch.allclose(changed[0], out_a[0], atol=1e-4)
    assert torch.allclose(changed[1:], out_a[1:], atol=1e-6)


def test_output_does_not_depend_on_the_amount_of_padding():
    model = fusion()
    short = sequences(0)
    text = short["text"]
    extra = 3  # the same batch collated with three more padded positions
    tokens = torch.cat([text.tokens, torch.randn(4, extra, DIMS["text"]) * 10], dim=1)
    mask = torch.cat([text.token_mask, torch.zeros(4, extra, dtype=torch.bool)], dim=1)
    long = {**short, "text": Encoded(tokens, mask, text.pooled)}
    assert torch.allclose(model(short, PRESENT), model(long, PRESENT), atol=1e-6)


def test_real_text_encoder_padding_does_not_leak():
    torch.manual_seed(0)
    encoder = TextTransformer(vocab_size=20, pad_id=0, max_length=10, dim=6, layers=1, heads=2)
    encoder.eval()
    model = fusion()
    ids = torch.tensor([[5, 6, 7, 0, 0], [8, 9, 0, 0, 0], [4, 0, 0, 0, 0], [0, 0, 0, 0, 0]])
    lengths = torch.tensor([3, 2, 1, 0])
    present = {**PRESENT, "text": lengths > 0}
    others = sequences(0)
    tight = {**others, "text": encoder(ids[:, :3], lengths)}
    # The same texts padded further, with other ids in the padding (pad id need not be used).
    loose_ids = torch.cat([ids, torch.zeros(4, 3, dtype=torch.long)], dim=1)
    loose_ids[loose_ids == 0] = 11
    loose = {**others, "text": encoder(loose_ids, lengths)}
    out = model(tight, present)
    assert torch.isfinite(out).all()
    assert torch.allclose(out, model(loose, present), atol=1e-5)


def test_a_row_with_one_field_present_attends_to_the_null_key():
    model = fusion()
    present = {
        "image": torch.tensor([True, False, False, True]),
        "text": torch.tensor([False, True, False, True]),
        "price": torch.tensor([False, False, False, True]),
    }  # rows 0-1: one field each; row 2: nothing; row 3: everything
    out = model(sequences(0), present)
    assert torch.isfinite(out).all()
    assert not torch.allclose(out[0], out[1])
    # With only one field present the row is a function of that field alone.
    alone = model(sequences(1), present)
    other = sequences(1)
    other["image"].tokens[0] = sequences(0)["image"].tokens[0]
    other["text"].tokens[1] = sequences(0)["text"].tokens[1]
    again = model(other, present)
    assert torch.allclose(again[:3], out[:3], atol=1e-6)
    assert not torch.allclose(alone[3], out[3])
    # The null token is what the lone field attends to: changing it changes rows 0 and 1.
    with torch.no_grad():  # (not a constant shift: the key norm would remove that)
        model.null.add_(torch.randn(model.null.shape, generator=torch.Generator().manual_seed(5)))
    moved = model(sequences(0), present)
    assert not torch.allclose(moved[0], out[0], atol=1e-4)
    assert not torch.allclose(moved[1], out[1], atol=1e-4)
    assert torch.allclose(moved[2], out[2])  # nothing present: nothing attends


def test_gradients_reach_every_field_when_all_present():
    model = fusion(dropout=0.0).train()
    present = {name: torch.ones(4, dtype=torch.bool) for name in DIMS}
    model(sequences(0), present).pow(2).sum().backward()
    for name in DIMS:
        for grad in (model.project[name].weight.grad, model.modality[name].grad):
            assert grad is not None and torch.isfinite(grad).all()
            assert grad.abs().sum() > 0, name
    assert model.null.grad is not None and model.null.grad.abs().sum() > 0


def test_absent_field_gets_no_gradient_through_its_values():
    model = fusion(dropout=0.0).train()
    inputs = sequences(0)
    for enc in inputs.values():
        enc.tokens.requires_grad_(True)
    model(inputs, PRESENT).pow(2).sum().backward()
    for name, enc in inputs.items():
        grad = enc.tokens.grad
        dead = ~(enc.token_mask & PRESENT[name].unsqueeze(-1))
        assert torch.equal(grad[dead], torch.zeros_like(grad[dead])), name
        assert grad[~dead].abs().sum() > 0, name
