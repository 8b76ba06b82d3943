"""Efficiency: parameter counts per module, latency, throughput and peak memory."""

from __future__ import annotations

import json

import pytest

from polymodal.config import DataConfig, ModelConfig
from polymodal.data.pipeline import prepare_data
from polymodal.evaluate.efficiency import measure_efficiency, parameter_counts
from polymodal.models.model import MultimodalModel, build_model


@pytest.fixture
def model_and_examples(tiny_manifest) -> tuple[MultimodalModel, list]:
    data = prepare_data(DataConfig(manifest=tiny_manifest, image={"size": 16}))
    config = ModelConfig.model_validate(
        {
            "inputs": ["image", "price", "text"],
            "encoders": {
                "image": {"type": "cnn", "dim": 16, "channels": [8, 8], "freeze": True},
                "text": {"type": "transformer", "dim": 16, "layers": 1, "heads": 2},
                "price": {"type": "mlp", "dim": 16, "hidden": 16},
            },
            "fusion": {"dim": 16},
            "tasks": [
                {"type": "classify", "target": "label", "hidden": 16},
                {"type": "retrieve", "query": "image", "gallery": "text", "dim": 16},
            ],
        }
    )
    return build_model(config, data.preprocessor), data.splits["test"]


def _sum(parts: list[dict[str, int]]) -> dict[str, int]:
    return {key: sum(part[key] for part in parts) for key in ("trainable", "frozen", "total")}


def test_parameter_counts_add_up(model_and_examples):
    model, _ = model_and_examples
    counts = parameter_counts(model)
    assert sorted(counts["encoders"]) == ["image", "price", "text"]
    assert sorted(counts["tasks"]) == ["classify_label", "retrieve_image_text"]
    parts = [*counts["encoders"].values(), counts["fusion"], *counts["tasks"].values()]
    assert _sum(parts) == counts["total"]
    assert counts["total"]["total"] == sum(p.numel() for p in model.parameters())
    image = sum(p.numel() for p in model.encoders["image"].parameters())
    assert counts["encoders"]["image"] == {"trainable": 0, "frozen": image, "total": image}
    assert counts["total"]["frozen"] == image
    assert all(part["trainable"] > 0 for part in parts[1:])


def test_measurements_are_positive_and_json_ready(model_and_examples):
    model, examples = model_and_examples
    model.train()
    result = measure_efficiency(model, examples, latency_runs=5, throughput_runs=2, warmup=1)
    assert model.training, "the model's mode is restored"
    assert json.loads(json.dumps(result)) == result
    assert result["device"] == "cpu" and result["threads"] >= 1
    assert result["parameters"] == parameter_counts(model)
    latency = result["latency_ms"]
    assert latency["batch_size"] == 1 and latency["runs"] == 5
    assert 0 < latency["p50"] <= latency["p95"]
    throughput = result["throughput"]
    assert throughput["batch_size"] == 32 and throughput["rows_per_second"] > 0
    memory = result["memory"]
    assert memory["device"] == "cpu" and memory["peak_mb"] > 0
    assert memory["method"] in ("rss_high_water_mark", "process_max_rss")
    assert memory["increase_mb"] is None or memory["increase_mb"] >= 0


def test_no_examples_is_an_error(model_and_examples):
    model, _ = model_and_examples
    with pytest.raises(ValueError, match="at least one example"):
        measure_efficiency(model, [])
