from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from polymodal.config import validate
from polymodal.data.pipeline import prepare_data
from polymodal.errors import ConfigError, ModelError
from polymodal.models.fusion import FUSIONS
from polymodal.models.model import MultimodalModel, build_model, distinct_rows
from polymodal.train.run import run_training

ENCODERS = {
    "image": {"type": "cnn", "dim": 16, "channels": [8, 8]},
    "text": {"type": "transformer", "dim": 16, "layers": 1, "heads": 2},
    "price": {"type": "mlp", "dim": 8, "hidden": 8},
}


def config(manifest: Path, tasks: list[dict], **model) -> object:
    return validate(
        {
            "data": {"manifest": str(manifest), "image": {"size": 16}},
            "model": {
                "tasks": tasks,
                "encoders": ENCODERS,
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


CLASSIFY = {"type": "classify", "target": "label", "hidden": 8}
RETRIEVE = {"type": "retrieve", "query": "image", "gallery": "text", "dim": 8}
READ_TOKENS = {"cross_attention", "early_transformer", "mult"}  # the others: pooled vectors


@pytest.mark.parametrize(
    ("fusion", "tasks", "unread"),
    [
        (name, [CLASSIFY], "pool_proj.1" if name in READ_TOKENS else "token_proj")
        for name in sorted(FUSIONS)
    ]
    + [("concat", [RETRIEVE], "token_proj"), ("cross_attention", [CLASSIFY, RETRIEVE], None)],
)
def test_the_loss_reaches_exactly_the_trained_parameters(tiny_manifest, fusion, tasks, unread):
    """DistributedDataParallel needs a gradient for every trained parameter: the image CNN's
    head whose output nothing reads (token or pooled projection) is frozen, and no other."""
    encoders = {name: ENCODERS[name] for name in ("image", "text")}
    cfg = config(
        tiny_manifest,
        tasks,
        inputs=list(encoders),
        encoders=encoders,
        fusion={"type": fusion, "dim": 16, "heads": 2},
    )
    data = prepare_data(cfg.data)
    model = build_model(cfg.model, data.preprocessor).train()
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    assert frozen == (
        {f"encoders.image.{unread}.{p}" for p in ("weight", "bias")} if unread else set()
    )
    model.requires_grad_(True)
    loss, _ = model.loss(data.preprocessor.collate(data.splits["train"][:8]))
    loss.backward()
    assert frozen == {name for name, p in model.named_parameters() if p.grad is None}


def test_vit_and_rnn_encoders_read_the_prepared_fields(tiny_manifest):
    encoders = {
        "image": {"type": "vit", "dim": 16, "patch": 8, "layers": 1, "heads": 2},
        "text": {"type": "lstm", "dim": 16, "hidden": 8},
    }
    tasks = [{"type": "classify", "target": "label", "hidden": 8}]
    cfg = config(tiny_manifest, tasks, encoders=encoders)
    data = prepare_data(cfg.data)
    model = build_model(cfg.model, data.preprocessor)
    assert model.encoders["image"].position.shape[0] == (16 // 8) ** 2 + 1  # the data's size
    total, _ = model.loss(data.preprocessor.collate(data.splits["train"][:8]))
    assert torch.isfinite(total)


@pytest.mark.parametrize(
    "model_section,message",
    [
        ({"inputs": ["nope"]}, "field 'nope' is not in the data"),
        (
            {"inputs": ["label"]},
            "field 'label' is label; expected image or text or tabular or audio",
        ),
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


def train_one_epoch(manifest: Path, out_dir: Path, inputs: list[str], task: dict) -> dict:
    """One epoch (batch 8) of a tiny model with one task; returns results.json."""
    cfg = validate(
        {
            "name": "run",
            "data": {"manifest": str(manifest), "image": {"size": 16}},
            "model": {
                "inputs": inputs,
                "encoders": {name: ENCODERS[name] for name in inputs},
                "fusion": {"dim": 16},
                "tasks": [task],
            },
            "train": {"epochs": 1, "batch_size": 8, "out_dir": str(out_dir)},
        }
    )
    result = run_training(cfg, log=lambda message: None)
    history = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").open()]
    assert all(math.isfinite(h["train_loss"]) for h in history)
    return json.loads((result.run_dir / "results.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("loss", ["info_nce", "hinge_sum", "hinge_hardest", "siglip"])
def test_retrieval_trains_with_each_loss(tiny_manifest, tmp_path, loss):
    task = {"type": "retrieve", "query": "text", "gallery": "price", "dim": 8, "loss": loss}
    results = train_one_epoch(tiny_manifest, tmp_path, ["text", "price"], task)
    assert results["test"]["retrieve_text_price"]["gallery_size"] == 4


def test_classify_trains_with_label_smoothing(tiny_manifest, tmp_path):
    task = {"type": "classify", "target": "label", "hidden": 8, "label_smoothing": 0.1}
    results = train_one_epoch(tiny_manifest, tmp_path, ["image"], task)
    assert results["test"]["classify_label"]["num_examples"] == 4


def test_distinct_inputs_give_the_same_outputs_and_gradients(tiny_manifest):
    """The tiny images are solid red or blue: eight rows hold two distinct images."""
    cfg = config(tiny_manifest, [CLASSIFY, RETRIEVE])
    data = prepare_data(cfg.data)
    model = build_model(cfg.model, data.preprocessor).eval()  # batch norm: running statistics
    batch = data.preprocessor.collate(data.splits["train"][:8])
    seen: list[int] = []
    model.encoders["image"].register_forward_hook(lambda m, args, out: seen.append(len(args[0])))

    def run() -> tuple[dict, list[torch.Tensor]]:
        model.zero_grad()
        outputs = model(batch)
        model.losses(outputs, batch)[0].backward()
        return outputs, [
            p.grad.clone() for p in model.encoders["image"].parameters() if p.grad is not None
        ]

    plain, plain_grads = run()
    model.distinct_inputs = {"image", "text"}
    shared, shared_grads = run()
    assert seen == [8, 2]
    assert torch.allclose(plain["classify_label"], shared["classify_label"], atol=1e-6)
    for key in ("query", "gallery"):
        assert torch.allclose(
            plain["retrieve_image_text"][key], shared["retrieve_image_text"][key], atol=1e-6
        )
    assert len(plain_grads) == len(shared_grads) > 0
    for before, after in zip(plain_grads, shared_grads, strict=True):
        assert torch.allclose(before, after, atol=1e-5)


def test_distinct_rows_tell_presence_and_length_apart():
    values = torch.tensor([[1, 2, 0], [1, 2, 0], [0, 0, 0], [0, 0, 0], [1, 2, 0]])
    present = torch.tensor([True, True, True, False, True])
    lengths = torch.tensor([2, 2, 1, 1, 3])
    first, inverse = distinct_rows(values, present, lengths)
    assert torch.equal(values[first][inverse], values)
    assert sorted(first.tolist()) == [0, 2, 3, 4]  # the first row of each distinct one
    groups = inverse.tolist()
    assert groups[0] == groups[1] and len(set(groups)) == 4  # rows 0 and 1 alike, no other pair
