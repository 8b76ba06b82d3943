"""Every (kind, type) in ENCODERS keeps the encoder contract, and build_model builds it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from polymodal.config import ENCODER_TYPES, FieldSpec, ModelConfig
from polymodal.data.modalities.base import FieldBase
from polymodal.data.modalities.tabular import LabelPreprocessor
from polymodal.data.pipeline import Preprocessor
from polymodal.data.schema import Batch, Schema
from polymodal.errors import ConfigError
from polymodal.models.encoders import ENCODERS, Encoded
from polymodal.models.model import build_model

B = 4
LENGTHS = torch.tensor([0, 1, 3, 8])  # an absent row, a short one, a full one (padded to 8)


def _ids(lengths: torch.Tensor, steps: int) -> torch.Tensor:
    return torch.randint(1, 30, (len(lengths), steps))


def _tabular(lengths: torch.Tensor, steps: int) -> torch.Tensor:
    numeric = torch.randn(len(lengths), 2)
    return torch.cat([numeric, torch.randint(0, 3, (len(lengths), 2)).float()], dim=1)


# kind -> (encoder_args its preprocessor gives, (lengths, steps) -> input, has lengths)
INPUTS: dict[str, tuple[dict[str, Any], Callable[[torch.Tensor, int], torch.Tensor], bool]] = {
    "image": ({"in_channels": 3, "size": 16}, lambda n, t: torch.randn(len(n), 3, 16, 16), False),
    "text": ({"vocab_size": 30, "pad_id": 0, "max_length": 12}, _ids, True),
    "tabular": ({"num_numeric": 2, "cardinalities": [3, 3]}, _tabular, False),
    "audio": ({"n_mels": 6, "max_frames": 12}, lambda n, t: torch.randn(len(n), t, 6), True),
    "sequence": ({"channels": 3, "max_length": 12}, lambda n, t: torch.randn(len(n), t, 3), True),
    "video": (
        {"in_channels": 3, "frames": 8, "size": 16},
        lambda n, t: torch.randn(len(n), t, 3, 16, 16),
        True,
    ),
    "features": ({"input_dim": 5}, lambda n, t: torch.randn(len(n), t, 5), True),
}
# encoder type -> tiny options of its config
OPTIONS: dict[str, dict[str, Any]] = {
    "cnn": {"dim": 8, "channels": [4, 4]},
    "vit": {"dim": 8, "patch": 8, "layers": 1, "heads": 2},
    "transformer": {"dim": 8, "layers": 1, "heads": 2},
    "gru": {"dim": 8, "hidden": 6, "layers": 2},
    "lstm": {"dim": 8, "hidden": 6, "layers": 2},
    "bag": {"dim": 8},
    "mlp": {"dim": 8, "hidden": 8, "embedding_dim": 4},
    "passthrough": {"dim": 6},
}
FROM_SCRATCH = sorted(key for key in ENCODERS if key[1] != "pretrained")


class FakeField(FieldBase):
    """A field preprocessor that only describes its tensors."""

    def __init__(self, kind: str, args: dict[str, Any]) -> None:
        self.kind = kind
        self.args = args

    def encoder_args(self) -> dict[str, Any]:
        return self.args


def preprocessor(kind: str, args: dict[str, Any]) -> Preprocessor:
    schema = Schema({"x": FieldSpec(kind=kind), "label": FieldSpec(kind="label", role="target")})
    fields = {"x": FakeField(kind, args), "label": LabelPreprocessor("label", ["a", "b"])}
    return Preprocessor(schema, fields)  # type: ignore[arg-type]


def model_config(encoder: dict[str, Any]) -> ModelConfig:
    return ModelConfig.model_validate(
        {
            "encoders": {"x": encoder},
            "fusion": {"dim": 8},
            "tasks": [{"type": "classify", "target": "label", "hidden": 8}],
        }
    )


def build(kind: str, type_: str) -> torch.nn.Module:
    """The encoder build_model makes for field x of ``kind`` with a tiny ``type_`` config."""
    config = model_config({"type": type_, **OPTIONS[type_]})
    return build_model(config, preprocessor(kind, INPUTS[kind][0])).encoders["x"]


def inputs(kind: str, steps: int = 8) -> tuple[torch.Tensor, torch.Tensor | None]:
    _, make, has_lengths = INPUTS[kind]
    return make(LENGTHS, steps), (LENGTHS if has_lengths else None)


def run(encoder: torch.nn.Module, x: torch.Tensor, lengths: torch.Tensor | None) -> Encoded:
    with torch.no_grad():
        return encoder(x, lengths)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def test_every_from_scratch_type_of_every_kind_is_registered():
    expected = {(k, t) for k, types in ENCODER_TYPES.items() for t in types if t != "pretrained"}
    assert set(FROM_SCRATCH) == expected


@pytest.mark.parametrize(("kind", "type_"), FROM_SCRATCH)
def test_shapes_mask_and_output_dim(kind, type_):
    out = run(build(kind, type_).eval(), *inputs(kind))
    dim = OPTIONS[type_]["dim"]
    assert out.pooled.shape == (B, dim) and out.tokens.shape[0::2] == (B, dim)
    assert out.token_mask.shape == out.tokens.shape[:2] and out.token_mask.dtype == torch.bool
    assert out.token_mask[:, 0].all()  # every row keeps a valid position, even when absent
    assert build(kind, type_).output_dim == dim


@pytest.mark.parametrize(("kind", "type_"), FROM_SCRATCH)
@pytest.mark.parametrize("training", [False, True])
def test_finite_with_absent_rows(kind, type_, training):
    encoder = build(kind, type_).train(training)
    x, lengths = inputs(kind)
    x[LENGTHS == 0] = 0  # an absent row, as model_input gives it
    out = run(encoder, x, lengths)
    assert torch.isfinite(out.tokens).all() and torch.isfinite(out.pooled).all()


def _perturb_padding(kind: str, x: torch.Tensor) -> torch.Tensor:
    """``x`` with every value past each row's length (at least 1) replaced."""
    other = inputs(kind, x.shape[1])[0]
    beyond = torch.arange(x.shape[1])[None, :] >= LENGTHS.clamp(min=1)[:, None]
    return torch.where(beyond.view(*beyond.shape, *[1] * (x.dim() - 2)), other, x)


WITH_LENGTHS = [key for key in FROM_SCRATCH if INPUTS[key[0]][2]]


@pytest.mark.parametrize(("kind", "type_"), WITH_LENGTHS)
def test_output_ignores_padded_values(kind, type_):
    encoder = build(kind, type_).eval()
    x, lengths = inputs(kind)
    a, b = run(encoder, x, lengths), run(encoder, _perturb_padding(kind, x), lengths)
    assert torch.equal(a.token_mask, b.token_mask)
    assert torch.allclose(a.tokens, b.tokens, atol=1e-5)
    assert torch.allclose(a.pooled, b.pooled, atol=1e-5)
    assert not torch.equal(x, _perturb_padding(kind, x))  # the check changed something


@pytest.mark.parametrize(("kind", "type_"), [k for k in WITH_LENGTHS if k[0] != "video"])
def test_output_ignores_how_far_the_batch_is_padded(kind, type_):
    encoder = build(kind, type_).eval()
    x, lengths = inputs(kind, 12)
    a, b = run(encoder, x[:, :8], lengths), run(encoder, x, lengths)
    assert torch.allclose(a.pooled, b.pooled, atol=1e-5)
    valid = a.tokens.shape[1]
    assert torch.allclose(a.tokens, b.tokens[:, :valid], atol=1e-5)
    assert not b.token_mask[:, valid:].any()


@pytest.mark.parametrize(("kind", "type_"), FROM_SCRATCH)
def test_gradients_reach_every_parameter(kind, type_):
    # Both outputs are read here; under the model's concat fusion a CNN's token head is frozen.
    encoder = build(kind, type_).train().requires_grad_(True)
    out = encoder(*inputs(kind))
    loss = (out.tokens * torch.randn_like(out.tokens)).sum() + (out.pooled**2).sum()
    loss.backward()
    for name, param in encoder.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all() and param.grad.abs().sum() > 0, name


@pytest.mark.parametrize(("kind", "type_"), FROM_SCRATCH)
def test_eval_is_deterministic(kind, type_):
    encoder = build(kind, type_).eval()
    x, lengths = inputs(kind)
    a, b = run(encoder, x, lengths), run(encoder, x, lengths)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.pooled, b.pooled)


@pytest.mark.parametrize(("kind", "type_"), FROM_SCRATCH)
def test_build_model_runs_a_batch_of_the_kind(kind, type_):
    model = build_model(
        model_config({"type": type_, **OPTIONS[type_]}), preprocessor(kind, INPUTS[kind][0])
    )
    x, lengths = inputs(kind)
    batch = Batch(
        {"x": x, "label": torch.tensor([0, 1, 0, 1])},
        {"x": LENGTHS > 0, "label": torch.ones(B, dtype=torch.bool)},
        {} if lengths is None else {"x": lengths},
        list(range(B)),
    )
    total, _ = model.loss(batch)
    total.backward()
    assert torch.isfinite(total)


@pytest.mark.parametrize("kind", sorted(ENCODER_TYPES))
def test_a_type_the_kind_cannot_use_is_a_config_error(kind):
    wrong = next(t for t in OPTIONS if t not in ENCODER_TYPES[kind])
    config = model_config({"type": wrong, **OPTIONS[wrong]})
    with pytest.raises(ConfigError, match=f"a {wrong} encoder cannot read {kind} field 'x'"):
        build_model(config, preprocessor(kind, INPUTS[kind][0]))


@pytest.mark.parametrize("type_", ["cnn", "transformer"])
def test_audio_encoders_on_a_waveform_field_say_to_use_log_mel(type_):
    config = model_config({"type": type_, **OPTIONS[type_]})
    waveform = preprocessor("audio", {"sample_rate": 16000, "max_samples": 64000})
    with pytest.raises(ConfigError, match=r"needs n_mels.*data\.audio\.features: log_mel"):
        build_model(config, waveform)


def test_each_encoder_gets_only_the_args_it_takes():
    text = build_model(
        model_config({"type": "bag", "dim": 8}),
        preprocessor("text", {**INPUTS["text"][0], "tokenizer": "words"}),
    ).encoders["x"]
    assert text.embed.num_embeddings == 30  # max_length and tokenizer left out, no TypeError


def test_default_encoders_build_for_every_kind():
    for kind in ENCODER_TYPES:
        config = ModelConfig.model_validate({"tasks": [{"type": "classify", "target": "label"}]})
        model = build_model(config, preprocessor(kind, INPUTS[kind][0]))
        assert model.encoders["x"].output_dim > 0
