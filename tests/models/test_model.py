from __future__ import annotations

from pathlib import Path

import pytest
import torch

from polymodal.config import validate
from polymodal.data.pipeline import prepare_data
from polymodal.errors import ConfigError, ModelError
from polymodal.models.model import MultimodalModel, build_model


def config(manifest: Path, tasks: list[dict], **model) -> object:
    return validate(
        {
            "data": {"manifest": str(manifest), "image": {"size": 16}},
            "model": {
                "tasks": tasks,
                "encoders": {
                    "image": {"type": "cnn", "dim": 16, "channels": [8, 8]},
                    "text": {"type": "transformer", "dim": 16, "layers": 1, "heads": 2},
                    "price": {"type": "mlp", "dim": 8, "hidden": 8},
                },
                **model,
            },
        }
    )


@pytest.mark.parametrize("fusion", ["concat", "attention"])
def test_save_load_round_trip_gives_identical_outputs(tiny_manifest, tmp_path, fusion):
    tasks = [
        {"type": "classify", "target": "label", "hidden": 8},
        {"type": "retrieve", "query": "image", "gallery": "text", "dim": 8},
    ]
    cfg = config(tiny_manifest, tasks, fusion={"type": fusion, "dim": 16})
    data = prepare_data(cfg.data)
    model = build_model(cfg.model, data.preprocessor).eval()
    batch = data.preprocessor.collate(data.splits["train"][:6])
    model.save_pretrained(tmp_path / "saved")
    assert sorted(p.name for p in (tmp_path / "saved").iterdir()) == [
        "config.json",
        "model.safetensors",
        "preprocessor.json",
    ]
    again = MultimodalModel.from_pretrained(tmp_path / "saved")
    batch_again = again.preprocessor.collate(data.splits["train"][:6])
    before, after = model(batch), again(batch_again)
    assert torch.equal(before["classify_label"], after["classify_label"])
    for key in ("query", "gallery"):
        assert torch.equal(before["retrieve_image_text"][key], after["retrieve_image_text"][key])


def test_loss_is_weighted_sum_and_backpropagates(tiny_manifest):
    tasks = [
        {"type": "classify", "target": "label", "weight": 2.0},
        {"type": "retrieve", "query": "image", "gallery": "text", "weight": 0.5},
    ]
    cfg = config(tiny_manifest, tasks)
    data = prepare_data(cfg.data)
    model = build_model(cfg.model, data.preprocessor)
    total, parts = model.loss(data.preprocessor.collate(data.splits["train"][:8]))
    assert total.item() == pytest.approx(
        2.0 * parts["classify_label"] + 0.5 * parts["retrieve_image_text"], rel=1e-5
    )
    total.backward()
    assert model.encoders["image"].features[0].weight.grad is not None


@pytest.mark.parametrize(
    "model_section,message",
    [
        ({"inputs": ["nope"]}, "field 'nope' is not in the data"),
        ({"inputs": ["label"]}, "field 'label' is label; expected image or text or tabular"),
        (
            {"inputs": ["text"], "encoders": {"text": {"type": "cnn"}}},
            "a cnn encoder cannot read text",
        ),
        ({"inputs": ["text"], "encoders": {"image": {"type": "cnn"}}}, "are not model inputs"),
    ],
)
def test_build_errors(tiny_manifest, model_section, message):
    cfg = validate(
        {
            "data": {"manifest": str(tiny_manifest)},
            "model": {"tasks": [{"type": "classify", "target": "label"}], **model_section},
        }
    )
    data = prepare_data(cfg.data)
    with pytest.raises(ConfigError, match=message):
        build_model(cfg.model, data.preprocessor)


def test_from_pretrained_missing_files(tmp_path):
    with pytest.raises(ModelError, match=r"config\.json is missing"):
        MultimodalModel.from_pretrained(tmp_path)
