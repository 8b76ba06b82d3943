"""Encoders that start from a saved model (``init_from``), optionally frozen (``freeze``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

import polymodal.train.run as run_module
from polymodal.config import load_config, validate
from polymodal.data.pipeline import Preprocessor, prepare_data
from polymodal.errors import ConfigError
from polymodal.models import transfer
from polymodal.models.model import WEIGHTS_FILE, MultimodalModel, build_model
from polymodal.train.run import run_training

TINY = {
    "image": {"type": "cnn", "dim": 16, "channels": [8, 8]},
    "text": {"type": "transformer", "dim": 16, "layers": 1, "heads": 2},
}
RETRIEVE = [{"type": "retrieve", "query": "image", "gallery": "text", "dim": 8}]
CLASSIFY = [{"type": "classify", "target": "label", "hidden": 8}]


def quiet(message: str) -> None:
    pass


def run_config(
    manifest: Path,
    out: Path,
    name: str,
    tasks: list[dict],
    encoders: dict[str, dict] | None = None,
    epochs: int = 1,
    image_size: int = 16,
    inputs: tuple[str, ...] = ("image", "text"),
    fields: dict[str, dict] | None = None,
):
    extra = encoders or {}
    data: dict = {"manifest": str(manifest), "image": {"size": image_size}}
    if fields is not None:
        data["fields"] = fields
    return validate(
        {
            "name": name,
            "seed": 1,
            "data": data,
            "model": {
                "inputs": list(inputs),
                "encoders": {f: {**TINY[f], **extra.get(f, {})} for f in inputs},
                "tasks": tasks,
            },
            "train": {"epochs": epochs, "batch_size": 4, "lr": 0.01, "out_dir": str(out)},
        }
    )


def train_source(manifest: Path, out: Path, tasks: list[dict] = RETRIEVE, **kwargs) -> Path:
    """Train a source model; return its best/ folder."""
    result = run_training(run_config(manifest, out, "source", tasks, **kwargs), log=quiet)
    return result.model_dir


def source_weights(source: Path, field: str) -> dict[str, torch.Tensor]:
    prefix = f"encoders.{field}."
    weights = load_file(str(source / WEIGHTS_FILE))
    return {k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)}


def part(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture
def after_load(monkeypatch) -> dict:
    """Records the model run_training builds, and its state right after load_encoders."""
    seen: dict = {}

    def load_and_record(model: MultimodalModel) -> list[str]:
        loaded = transfer.load_encoders(model)
        seen["model"], seen["state"], seen["loaded"] = model, snapshot(model), loaded
        return loaded

    monkeypatch.setattr(run_module, "load_encoders", load_and_record)
    return seen


def test_init_from_copies_the_source_encoder(tiny_manifest, tmp_path, after_load):
    source = train_source(tiny_manifest, tmp_path / "runs")
    messages: list[str] = []
    config = run_config(
        tiny_manifest,
        tmp_path / "runs",
        "target",
        CLASSIFY,
        encoders={"image": {"init_from": str(source)}},
    )
    run_training(config, log=messages.append)

    assert after_load["loaded"] == ["image"]
    expected = source_weights(source, "image")
    assert any(k.endswith("running_mean") for k in expected)  # BatchNorm statistics too
    assert same(part(after_load["state"], "encoders.image."), expected)
    # The text encoder was not transferred: it starts from its own initialisation.
    assert not same(part(after_load["state"], "encoders.text."), source_weights(source, "text"))
    assert f"encoder 'image' starts from {source}" in messages
    # Without freeze, the transferred encoder is fine-tuned.
    trained = after_load["model"].encoders["image"].state_dict()
    assert not torch.equal(trained["features.0.weight"], expected["features.0.weight"])
    assert after_load["model"].frozen == []


def test_frozen_encoder_keeps_weights_and_batchnorm_statistics(tiny_manifest, tmp_path, after_load):
    source = train_source(tiny_manifest, tmp_path / "runs")
    expected = source_weights(source, "image")
    # The source's statistics were updated by its training, so "unchanged" is not vacuous.
    assert not torch.equal(expected["features.1.running_mean"], torch.zeros(8))
    messages: list[str] = []
    config = run_config(
        tiny_manifest,
        tmp_path / "runs",
        "target",
        CLASSIFY,
        encoders={"image": {"init_from": str(source), "freeze": True}},
        epochs=2,
    )
    result = run_training(config, log=messages.append)
    model: MultimodalModel = after_load["model"]
    assert model.frozen == ["image"]
    assert f"encoder 'image' starts from {source} (frozen)" in messages

    # The frozen encoder: parameters and running statistics as in the source, after training.
    assert same(model.encoders["image"].state_dict(), expected)
    assert all(not p.requires_grad for p in model.encoders["image"].parameters())
    best = MultimodalModel.from_pretrained(result.model_dir)
    assert same(best.encoders["image"].state_dict(), expected)

    # Everything else trained.
    before, after = after_load["state"], snapshot(model)
    for prefix in ("encoders.text.", "fusion.", "tasks.classify_label."):
        assert not same(part(before, prefix), part(after, prefix)), prefix
    assert all(p.requires_grad for p in model.encoders["text"].parameters())

    # train() leaves the frozen encoder (every submodule of it) in eval mode.
    model.train()
    assert model.training and model.encoders["text"].training and model.fusion.training
    assert not any(m.training for m in model.encoders["image"].modules())
    model.eval()
    assert not any(m.training for m in model.modules())
    model.train()
    assert not any(m.training for m in model.encoders["image"].modules())


def test_frozen_encoder_forward_in_train_mode_keeps_statistics(tiny_manifest, tmp_path):
    source = train_source(tiny_manifest, tmp_path / "runs")
    config = run_config(
        tiny_manifest,
        tmp_path / "runs",
        "target",
        CLASSIFY,
        encoders={"image": {"init_from": str(source), "freeze": True}},
    )
    data = prepare_data(config.data, fitted=transfer.transferred_preprocessors(config.model))
    model = build_model(config.model, data.preprocessor)
    assert transfer.load_encoders(model) == ["image"]
    model.train()
    loss, _ = model.loss(data.preprocessor.collate(data.splits["train"][:8]))
    loss.backward()
    assert same(model.encoders["image"].state_dict(), source_weights(source, "image"))
    assert all(p.grad is None for p in model.encoders["image"].parameters())
    assert model.encoders["text"].embed.weight.grad is not None


def write_other_manifest(tiny_manifest: Path) -> Path:
    """The tiny manifest's rows and images with texts made of other words."""
    rows = [json.loads(line) for line in tiny_manifest.read_text().splitlines()]
    for row in rows:
        row["text"] = f"crimson widget label {int(row['id']) + 100}"
    path = tiny_manifest.parent / "other.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def test_transferred_text_field_keeps_the_source_vocabulary(tiny_manifest, tmp_path):
    source = train_source(tiny_manifest, tmp_path / "runs")
    source_text = Preprocessor.load(source).fields["text"]
    assert "red" in source_text.tokenizer.vocab and "crimson" not in source_text.tokenizer.vocab
    other = write_other_manifest(tiny_manifest)

    plain = run_training(run_config(other, tmp_path / "runs", "plain", CLASSIFY), log=quiet)
    assert "crimson" in plain.data.preprocessor.fields["text"].tokenizer.vocab  # control

    config = run_config(
        other, tmp_path / "runs", "target", CLASSIFY, encoders={"text": {"init_from": str(source)}}
    )
    assert transfer.transferred_preprocessors(config.model)["text"].state() == source_text.state()
    result = run_training(config, log=quiet)
    text = result.data.preprocessor.fields["text"]
    assert text.state() == source_text.state()
    assert text.tokenizer.vocab == source_text.tokenizer.vocab
    unk = text.tokenizer.unk_id
    assert text.read("crimson widget", tiny_manifest.parent).tolist() == [unk, unk]
    # The saved model carries the source's vocabulary too, and its embedding matches it.
    best = MultimodalModel.from_pretrained(result.model_dir)
    assert best.preprocessor.fields["text"].state() == source_text.state()
    assert best.encoders["text"].embed.num_embeddings == len(source_text.tokenizer)
    # Fields not transferred are fitted on the new data as usual.
    assert Preprocessor.load(result.model_dir).fields["label"].state() == (
        plain.data.preprocessor.fields["label"].state()
    )


def test_init_field_copies_the_encoder_of_another_field(tiny_manifest, tmp_path, after_load):
    source = train_source(tiny_manifest, tmp_path / "runs")
    rows = [json.loads(line) for line in tiny_manifest.read_text().splitlines()]
    renamed = tiny_manifest.parent / "renamed.jsonl"
    renamed.write_text(
        "".join(json.dumps({**r, "photo": r.pop("image")}) + "\n" for r in rows), encoding="utf-8"
    )
    fields = {"photo": {"kind": "image"}, "label": {"kind": "label", "role": "target"}}
    base = {**TINY["image"], "init_from": str(source)}
    config = validate(
        {
            "name": "target",
            "data": {"manifest": str(renamed), "fields": fields, "image": {"size": 16}},
            "model": {"encoders": {"photo": {**base, "init_field": "image"}}, "tasks": CLASSIFY},
            "train": {"epochs": 1, "batch_size": 4, "out_dir": str(tmp_path / "runs")},
        }
    )
    run_training(config, log=quiet)
    assert after_load["loaded"] == ["photo"]
    assert same(part(after_load["state"], "encoders.photo."), source_weights(source, "image"))

    config.model.encoders["photo"].init_field = None  # the source has no 'photo' field
    with pytest.raises(ConfigError, match=r"has no field 'photo' .*init_field picks one"):
        run_training(config, log=quiet, overwrite=True)
    with pytest.raises(ConfigError, match="'init_field' names a field of the 'init_from' model"):
        validate(
            {
                **config.model_dump(mode="json"),
                "model": {
                    "encoders": {"photo": {"type": "cnn", "init_field": "image"}},
                    "tasks": CLASSIFY,
                },
            }
        )


def test_transferred_preprocessing_wins_over_the_data_options(tiny_manifest, tmp_path):
    source = train_source(tiny_manifest, tmp_path / "runs")
    config = run_config(
        tiny_manifest,
        tmp_path / "runs",
        "target",
        CLASSIFY,
        encoders={"image": {"init_from": str(source)}},
        image_size=32,
    )
    result = run_training(config, log=quiet)
    assert result.data.preprocessor.fields["image"].size == 16
    assert result.data.splits["train"][0]["image"].shape == (3, 16, 16)


IMAGE_AND_LABEL = {"image": {"kind": "image"}, "label": {"kind": "label", "role": "target"}}


@pytest.mark.parametrize(
    "case,field,message",
    [
        ("no weights", "image", r"holds no model\.safetensors; give a saved model directory"),
        ("no such field", "text", r"the model in .* has no field 'text' \(it has image, label;"),
        ("other shape", "image", r"the encoder of 'image' in .* has another shape; give"),
        ("other image size", "image", r"field 'image' is preprocessed differently here than"),
    ],
)
def test_transfer_errors_name_the_key(tiny_manifest, tmp_path, case, field, message):
    # A source that knows only the image field.
    source = train_source(
        tiny_manifest, tmp_path / "runs", CLASSIFY, inputs=("image",), fields=IMAGE_AND_LABEL
    )
    assert Preprocessor.load(source).fields.keys() == {"image", "label"}
    encoder: dict = {"init_from": str(source)}
    data = None
    image_size = 16
    if case == "no weights":
        empty = tmp_path / "empty"
        empty.mkdir()
        (empty / "preprocessor.json").write_text((source / "preprocessor.json").read_text())
        encoder["init_from"] = str(empty)
    elif case == "other shape":
        encoder["channels"] = [8, 16]
    elif case == "other image size":
        image_size = 32
    config = run_config(
        tiny_manifest,
        tmp_path / "runs",
        "target",
        CLASSIFY,
        encoders={field: encoder},
        image_size=image_size,
    )
    if case == "other image size":  # data prepared without the source's preprocessing
        data = prepare_data(config.data, config.seed)
    with pytest.raises(ConfigError, match=message) as err:
        run_training(config, log=quiet, data=data)
    assert str(err.value).startswith(f"model.encoders.{field}.init_from: ")
    assert not (tmp_path / "runs" / "target" / "best").exists()


def test_load_config_resolves_init_from(tmp_path, monkeypatch):
    conf = tmp_path / "conf"
    conf.mkdir()
    path = conf / "run.yaml"
    data = {
        "data": {"manifest": "../data/manifest.jsonl"},
        "model": {
            "encoders": {
                "image": {"type": "cnn", "init_from": "../models/source/best", "freeze": True},
                "text": {"type": "transformer"},
            },
            "tasks": [{"type": "classify", "target": "label"}],
        },
    }
    path.write_text(yaml.safe_dump(data))
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    monkeypatch.chdir(cwd)

    config = load_config(path)  # relative to the YAML file, wherever the cwd is
    image = config.model.encoders["image"]
    assert image.init_from == (tmp_path / "models" / "source" / "best").resolve()
    assert image.freeze is True
    assert config.model.encoders["text"].init_from is None

    config = load_config(  # relative to the working directory when given by --set
        path,
        ["model.encoders.image.init_from=runs/a/best", "model.encoders.text.init_from=b"],
    )
    assert config.model.encoders["image"].init_from == (cwd / "runs" / "a" / "best").resolve()
    assert config.model.encoders["text"].init_from == (cwd / "b").resolve()
    assert config.model.encoders["image"].init_from.is_absolute()


def test_yaml_init_from_trains_from_any_working_directory(tiny_manifest, tmp_path, monkeypatch):
    source = train_source(tiny_manifest, tmp_path / "runs")
    assert source == tmp_path / "runs" / "source" / "best"
    config = run_config(tiny_manifest, tmp_path / "runs", "target", CLASSIFY)
    data = config.model_dump(mode="json", exclude_none=True)
    data["model"]["encoders"]["image"]["init_from"] = "runs/source/best"
    path = tmp_path / "target.yaml"
    path.write_text(yaml.safe_dump(data))
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    loaded = load_config(path)
    assert loaded.model.encoders["image"].init_from == source.resolve()
    result = run_training(loaded, log=quiet)
    best = MultimodalModel.from_pretrained(result.model_dir)
    assert best.preprocessor.fields["image"].state() == (
        Preprocessor.load(source).fields["image"].state()
    )


def test_a_field_of_another_kind_cannot_take_the_source_encoder(tiny_manifest, tmp_path):
    source = train_source(
        tiny_manifest, tmp_path / "runs", CLASSIFY, inputs=("image",), fields=IMAGE_AND_LABEL
    )
    config = validate(
        {
            "name": "target",
            "data": {
                "manifest": str(tiny_manifest),
                "fields": {"image": {"kind": "text"}, "label": {"kind": "label", "role": "target"}},
            },
            "model": {
                "encoders": {"image": {**TINY["text"], "init_from": str(source)}},
                "tasks": CLASSIFY,
            },
            "train": {"epochs": 1, "batch_size": 4, "out_dir": str(tmp_path / "runs")},
        }
    )
    with pytest.raises(ConfigError, match=r"field 'image' is read by a TextPreprocessor here"):
        run_training(config, log=quiet)
