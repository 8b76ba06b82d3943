"""A fusion task's ``inputs``: its fused vector holds those inputs alone, the others absent in
it, and the fusion spans only the inputs some task fuses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from polymodal.config import task_targets, validate
from polymodal.data.pipeline import PreparedData, prepare_data
from polymodal.data.schema import Batch
from polymodal.errors import ConfigError
from polymodal.models.model import MultimodalModel, build_model

ENCODERS = {
    "image": {"type": "cnn", "dim": 16, "channels": [8, 8]},
    "text": {"type": "bag", "dim": 16},
}


def build(
    manifest: Path, tasks: list[dict[str, Any]], fusion: str = "concat"
) -> tuple[MultimodalModel, PreparedData]:
    config = validate(
        {
            "data": {"manifest": str(manifest), "image": {"size": 16}},
            "model": {
                "inputs": ["image", "text"],
                "encoders": ENCODERS,
                "fusion": {"type": fusion, "dim": 16, "heads": 2},
                "tasks": tasks,
            },
        }
    )
    data = prepare_data(config.data, targets=task_targets(config.model))
    return build_model(config.model, data.preprocessor), data


def other_texts(batch: Batch) -> Batch:
    """The batch with each row's text that of the next row."""
    values = {**batch.values, "text": batch.values["text"].roll(1, dims=0)}
    lengths = {**batch.lengths, "text": batch.lengths["text"].roll(1, dims=0)}
    return Batch(values, batch.present, lengths, batch.rows)


@pytest.mark.parametrize("fusion", ["concat", "attention", "cross_attention"])
def test_a_task_s_fused_vector_holds_only_its_inputs(tiny_manifest: Path, fusion: str) -> None:
    tasks = [
        {"type": "classify", "target": "label", "hidden": 8, "inputs": ["image"]},
        {"type": "regress", "target": "price", "hidden": 8},  # every input
    ]
    model, data = build(tiny_manifest, tasks, fusion)
    model.eval()
    assert model.fused_inputs == {
        "classify_label": ("image",),
        "regress_price": ("image", "text"),
    }
    batch = data.preprocessor.collate(data.splits["train"][:8])
    before, after = model(batch), model(other_texts(batch))
    assert torch.equal(before["classify_label"], after["classify_label"])
    assert not torch.equal(before["regress_price"], after["regress_price"])
    image_only = {**batch.present, "text": torch.zeros_like(batch.present["text"])}
    alone = model.fusion(model.encode(batch), image_only)
    assert torch.equal(model.fuse(model.encode(batch), batch.present)["classify_label"], alone)


def test_the_fusion_spans_the_inputs_some_task_fuses(tiny_manifest: Path) -> None:
    """Text, read by the retrieval task only, stays out of the fusion, and every trained
    parameter still gets a gradient (DistributedDataParallel needs one)."""
    tasks = [
        {"type": "classify", "target": "label", "hidden": 8, "inputs": ["image"]},
        {"type": "retrieve", "query": "image", "gallery": "text", "dim": 8},
    ]
    model, data = build(tiny_manifest, tasks)
    assert model.fusion is not None and model.fusion.fields == ["image"]
    assert model.fused_inputs == {"classify_label": ("image",)}
    total, _ = model.train().loss(data.preprocessor.collate(data.splits["train"][:8]))
    total.backward()
    trained = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trained == {name for name, p in model.named_parameters() if p.grad is not None}
    assert any(name.startswith("encoders.text.") for name in trained)


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (["image", "price"], r"model\.tasks\.0\.inputs: price not among the model inputs"),
        ([], r"'model\.tasks\.0\.inputs': List should have at least 1 item"),
    ],
)
def test_a_task_fuses_model_inputs_only(
    tiny_manifest: Path, inputs: list[str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        build(tiny_manifest, [{"type": "classify", "target": "label", "inputs": inputs}])
