"""Named architectures: JSON data a config names with ``model.architecture``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from pydantic import ValidationError

from polymodal.config import ENCODER_TYPES, FusionConfig, RunConfig, dump_config, validate
from polymodal.data.pipeline import prepare_data
from polymodal.errors import ConfigError
from polymodal.models.architectures import Architecture, list_models, load_architecture
from polymodal.models.fusion import GraphFusion, MulT
from polymodal.models.model import MultimodalModel, build_model

CLASSIFY = {"type": "classify", "target": "label", "hidden": 8}
SUGGESTED = {
    "late_concat",
    "cnn_lstm_concat",
    "tfn",
    "lmf",
    "mfb",
    "gmu",
    "mult",
    "early_transformer",
    "graph",
    "vit_transformer",
    "vse_pp",
    "clip_small",
    "siglip_small",
    "lit_minilm_efficientnet",
}


def run_config(
    manifest: Path | str, tasks: list[dict[str, Any]] | None = None, **model
) -> RunConfig:
    return validate(
        {
            "data": {"manifest": str(manifest), "image": {"size": 16}},
            "model": {"tasks": tasks or [CLASSIFY], **model},
        }
    )


def shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {name: tuple(value.shape) for name, value in model.state_dict().items()}


def test_the_suggested_architectures_are_there():
    assert set(list_models()) >= SUGGESTED


@pytest.mark.parametrize("name", list_models())
def test_every_architecture_validates_into_the_config_models(name):
    data = load_architecture(name)
    architecture = Architecture.model_validate(data).model
    assert data["description"] and "\n" not in data["description"] and data["paper"]
    for kind, encoder in architecture.encoders.items():
        assert encoder.type in ENCODER_TYPES[kind]
    if "retrieve" in architecture.tasks:
        task = {"type": "retrieve", "query": "image", "gallery": "text"}
    else:
        task = CLASSIFY
    model = run_config("manifest.jsonl", [task], architecture=name).model
    assert model.architecture == name
    if architecture.fusion is not None:
        assert model.fusion == architecture.fusion
    for key, value in architecture.tasks.get(task["type"], {}).items():
        assert getattr(model.tasks[0], key) == value


@pytest.mark.parametrize(
    ("model", "problem"),
    [
        ({"encoders": {"text": {"type": "cnn"}}}, "a cnn encoder cannot read text"),
        ({"encoders": {"label": {"type": "mlp"}}}, "no encoder reads kind 'label'"),
        ({"tasks": {"retrieve": {"query": "image"}}}, "name data fields"),
        ({"tasks": {"retrieve": {"loss": "triplet"}}}, "loss"),
        ({"tasks": {"summarise": {}}}, "not a task type"),
        ({"fusion": {"type": "concat", "depth": 2}}, "depth"),
    ],
)
def test_a_bad_architecture_file_is_refused(model, problem):
    with pytest.raises(ValidationError, match=problem):
        Architecture.model_validate({"description": "d", "paper": "p", "model": model})


def test_an_architecture_builds_what_writing_it_out_builds(tiny_manifest):
    named = run_config(tiny_manifest, architecture="cnn_lstm_concat")
    written = run_config(
        tiny_manifest,
        encoders={"image": {"type": "cnn"}, "text": {"type": "lstm"}, "price": {"type": "mlp"}},
        fusion={"type": "concat"},
    )
    data = prepare_data(named.data)
    model = build_model(named.model, data.preprocessor)
    types = {name: encoder.type for name, encoder in model.config.encoders.items()}
    assert types == {"image": "cnn", "text": "lstm", "price": "mlp"}
    assert shapes(model) == shapes(build_model(written.model, data.preprocessor))


def test_config_keys_win_over_the_architecture(tiny_manifest, tmp_path):
    cfg = run_config(
        tiny_manifest,
        architecture="mult",
        encoders={"text": {"type": "bag", "dim": 8}},
        fusion={"dim": 16, "heads": 2},
    )
    assert cfg.model.fusion == FusionConfig(type="mult", dim=16, layers=2, heads=2)
    data = prepare_data(cfg.data)
    model = build_model(cfg.model, data.preprocessor).eval()
    assert isinstance(model.fusion, MulT) and model.fusion.output_dim == 16
    types = {name: encoder.type for name, encoder in model.config.encoders.items()}
    # mult names no image or tabular encoder: the kinds' defaults, written out
    assert types == {"text": "bag", "image": "cnn", "price": "mlp"}
    # Saved with every encoder written out, it loads back the same model.
    again = MultimodalModel.from_pretrained(model.save_pretrained(tmp_path / "saved"))
    batch = data.preprocessor.collate(data.splits["train"][:4])
    assert torch.equal(model(batch)["classify_label"], again(batch)["classify_label"])


def test_a_dumped_config_reads_back_the_same_model_section(tiny_manifest):
    """A run's config.yaml holds every key: the architecture's values must survive it."""
    cfg = run_config(tiny_manifest, architecture="graph", fusion={"dim": 32})
    assert cfg.model.fusion.type == "graph"
    again = validate(yaml.safe_load(dump_config(cfg)))
    assert again.model == cfg.model
    data = prepare_data(cfg.data)
    assert isinstance(build_model(again.model, data.preprocessor).fusion, GraphFusion)


def test_task_options_come_from_the_architecture_unless_given():
    tasks = [
        {"type": "retrieve", "query": "image", "gallery": "text"},
        {"type": "retrieve", "query": "text", "gallery": "image", "loss": "info_nce", "dim": 8},
    ]
    model = run_config("manifest.jsonl", tasks, architecture="vse_pp").model
    assert [(t.loss, t.dim, t.margin) for t in model.tasks] == [
        ("hinge_hardest", 256, 0.2),
        ("info_nce", 8, 0.2),
    ]


def test_an_unknown_architecture_names_the_closest():
    with pytest.raises(ConfigError, match=r"no architecture 'mlt'; did you mean 'mult'\?"):
        run_config("manifest.jsonl", architecture="mlt")
