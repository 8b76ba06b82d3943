from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from polymodal.config import validate
from polymodal.errors import ConfigError
from polymodal.models.encoders.image import ImageCNN
from polymodal.train.run import run_training
from polymodal.train.trainer import warmup_cosine


def run_config(manifest: Path, out: Path, name: str = "run") -> object:
    return validate(
        {
            "name": name,
            "seed": 3,
            "data": {"manifest": str(manifest), "image": {"size": 16}},
            "model": {
                "inputs": ["image", "text"],
                "encoders": {
                    "image": {"type": "cnn", "dim": 16, "channels": [8, 8]},
                    "text": {"type": "transformer", "dim": 16, "layers": 1, "heads": 2},
                },
                "tasks": [{"type": "classify", "target": "label", "hidden": 16}],
            },
            "train": {"epochs": 3, "batch_size": 4, "lr": 0.005, "out_dir": str(out)},
        }
    )


def test_schedule_warms_up_then_decays():
    factors = [warmup_cosine(s, 2, 10) for s in range(10)]
    assert factors[:2] == [0.5, 1.0]
    assert factors[2] == 1.0 and factors[-1] < 0.05
    assert all(a >= b for a, b in itertools.pairwise(factors[2:]))


def test_run_writes_files_learns_and_is_repeatable(tiny_manifest, tmp_path):
    first = run_training(run_config(tiny_manifest, tmp_path / "a"), log=lambda m: None)
    run_dir = tmp_path / "a" / "run"
    assert {p.name for p in run_dir.iterdir()} >= {
        "config.yaml",
        "metrics.jsonl",
        "best",
        "results.json",
    }
    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert first.test["classify_label"]["num_examples"] == 4
    results = json.loads((run_dir / "results.json").read_text())
    assert results["best_epoch"] == first.train.best_epoch

    second = run_training(run_config(tiny_manifest, tmp_path / "b"), log=lambda m: None)
    assert [h["train_loss"] for h in second.train.history] == [h["train_loss"] for h in history]
    assert second.test == first.test


def text_price_config(manifest: Path, out: Path, **train: object) -> object:
    """A fused text + price classifier without dropout or batch-norm: deterministic maths."""
    return validate(
        {
            "name": "tp",
            "seed": 5,
            "data": {"manifest": str(manifest)},
            "model": {
                "inputs": ["text", "price"],
                "encoders": {
                    "text": {"type": "transformer", "dim": 16, "layers": 1, "dropout": 0.0},
                    "price": {"type": "mlp", "dim": 16, "hidden": 16, "dropout": 0.0},
                },
                "fusion": {"dim": 16, "dropout": 0.0},
                "tasks": [{"type": "classify", "target": "label", "hidden": 16, "dropout": 0.0}],
            },
            "train": {"epochs": 2, "batch_size": 8, "lr": 0.005, "out_dir": str(out), **train},
        }
    )


def weights(run) -> dict:
    return load_file(run.model_dir / "model.safetensors")


def test_accumulating_two_half_batches_is_one_whole_batch(tiny_manifest, tmp_path):
    whole = run_training(text_price_config(tiny_manifest, tmp_path / "a"), log=lambda m: None)
    config = text_price_config(tiny_manifest, tmp_path / "b", batch_size=4, accumulate=2)
    halves = run_training(config, log=lambda m: None)
    a, b = weights(whole), weights(halves)
    for key in a:
        if key.endswith("self_attn.in_proj_bias"):
            continue  # its key third has a zero true gradient (see tests/train/test_ddp.py)
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-5)
    assert whole.train.history[-1]["train_loss"] == pytest.approx(
        halves.train.history[-1]["train_loss"], abs=1e-5
    )


def test_activation_checkpointing_changes_memory_not_results(tiny_manifest, tmp_path):
    plain = run_training(text_price_config(tiny_manifest, tmp_path / "a"), log=lambda m: None)
    config = text_price_config(tiny_manifest, tmp_path / "b")
    config.model.encoders["text"].checkpointing = True
    recomputed = run_training(config, log=lambda m: None)
    a, b = weights(plain), weights(recomputed)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_early_stopping_ends_a_run_that_stopped_improving(tiny_manifest, tmp_path):
    config = text_price_config(
        tiny_manifest, tmp_path, epochs=8, lr=1e-9, early_stopping={"patience": 2}
    )
    messages: list[str] = []
    result = run_training(config, log=messages.append)
    assert len(result.train.history) == 3  # the first epoch, then two without improvement
    assert result.train.stopped == "no improvement for 2 epochs"
    assert "stopped early: no improvement for 2 epochs" in messages
    assert json.loads((result.run_dir / "results.json").read_text())["stopped"] == (
        "no improvement for 2 epochs"
    )


def test_a_time_budget_ends_the_run_with_a_best_model_and_results(tiny_manifest, tmp_path):
    config = text_price_config(tiny_manifest, tmp_path, epochs=50, max_minutes=0.0001)
    result = run_training(config, log=lambda m: None)
    assert len(result.train.history) == 1 and result.train.stopped.startswith("time budget")
    assert (result.model_dir / "model.safetensors").is_file()
    assert json.loads((result.run_dir / "results.json").read_text())["test"]


def test_an_encoder_s_lr_scale_sets_its_learning_rate(tiny_manifest, tmp_path):
    config = text_price_config(tiny_manifest, tmp_path)
    config.model.encoders["text"].lr_scale = 0.1
    from polymodal.data.pipeline import prepare_data
    from polymodal.models.model import build_model
    from polymodal.train.trainer import parameter_groups

    model = build_model(config.model, prepare_data(config.data).preprocessor)
    groups = parameter_groups(model, 0.01)
    text = {id(p) for n, p in model.named_parameters() if n.startswith("encoders.text.")}
    for group in groups:
        scales = {group["lr_scale"]}
        assert scales == ({0.1} if id(group["params"][0]) in text else {1.0})
        assert all((id(p) in text) == (group["lr_scale"] == 0.1) for p in group["params"])
        assert group["weight_decay"] == (0.01 if group["params"][0].ndim >= 2 else 0.0)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_bf16_trains_where_asked(tiny_manifest, tmp_path, monkeypatch):
    from polymodal.train import precision

    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    config = text_price_config(tiny_manifest, tmp_path, precision="bf16", epochs=1)
    result = run_training(config, log=lambda m: None)
    assert math.isfinite(result.train.history[0]["train_loss"])


def test_rows_found_bad_mid_epoch_are_dropped_and_quarantined(bad_manifest, tmp_path):
    """Read by a DataLoader worker, a bad row leaves its batch and is quarantined once."""
    config = validate(
        {
            "name": "bad",
            "data": {
                "manifest": str(bad_manifest.path),
                "fields": {
                    "image": {"kind": "image"},
                    "caption": {"kind": "text"},
                    "label": {"kind": "label", "role": "target", "labels": ["red", "blue"]},
                },
                "image": {"size": 8},
                "workers": 1,
            },
            "model": {"fusion": {"dim": 8}, "tasks": [{"type": "classify", "target": "label"}]},
            "train": {"epochs": 3, "batch_size": 4, "out_dir": str(tmp_path)},
        }
    )
    result = run_training(config, log=lambda m: None)
    lines = (result.run_dir / "quarantine.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["line"] for line in lines) == sorted(bad_manifest.quarantined)
    assert result.train.history[-1]["train_loss"] > 0


def test_modality_dropout_keeps_one_input_per_row():
    from polymodal.data.schema import Batch
    from polymodal.train.trainer import drop_modalities

    present = {
        "a": torch.tensor([True, True, False, True] * 50),
        "b": torch.tensor([True, False, False, True] * 50),
        "label": torch.ones(200, dtype=torch.bool),
    }
    batch = Batch({}, present, {}, list(range(200)))
    assert drop_modalities(batch, ["a", "b"], 0.0) is batch
    torch.manual_seed(0)
    everything = drop_modalities(batch, ["a", "b"], 1.0)
    kept = torch.stack([everything.present["a"], everything.present["b"]], dim=1)
    had = torch.stack([present["a"], present["b"]], dim=1)
    assert not (kept & ~had).any()  # nothing absent comes back
    assert kept.sum(1).tolist() == had.any(1).long().tolist()  # exactly one kept where any
    assert torch.equal(everything.present["label"], present["label"])  # targets untouched
    torch.manual_seed(0)
    half = drop_modalities(batch, ["a", "b"], 0.5)
    dropped = (had & ~torch.stack([half.present["a"], half.present["b"]], dim=1)).sum()
    assert 0.2 * had.sum() < dropped < 0.5 * had.sum()  # about half, less the rescued ones
    torch.manual_seed(0)
    again = drop_modalities(batch, ["a", "b"], 0.5)
    assert all(torch.equal(again.present[k], half.present[k]) for k in present)


def test_modality_dropout_trains(tiny_manifest, tmp_path):
    config = text_price_config(tiny_manifest, tmp_path, modality_dropout=0.3, epochs=1)
    result = run_training(config, log=lambda m: None)
    assert math.isfinite(result.train.history[0]["train_loss"])


def test_group_by_batches_an_images_rows_and_encodes_each_image_once(
    tiny_manifest, tmp_path, monkeypatch
):
    """Three questions per image, batches of six: grouped, each batch holds two images, and
    the image encoder sees each once."""
    rows = [json.loads(line) for line in tiny_manifest.read_text().splitlines()]
    for i, row in enumerate(rows):  # every image distinct
        Image.new("RGB", (16, 16), (10 * i, 100, 200 - 5 * i)).save(
            tiny_manifest.parent / row["image"]
        )
    asked = [{**row, "text": f"{word} {row['text']}"} for row in rows for word in ("a", "b", "c")]
    manifest = tiny_manifest.with_name("asked.jsonl")
    manifest.write_text("".join(json.dumps(row) + "\n" for row in asked))
    seen: list[int] = []
    forward = ImageCNN.forward

    def counting(self, x, lengths=None):
        if self.training:
            seen.append(len(x))
        return forward(self, x, lengths)

    monkeypatch.setattr(ImageCNN, "forward", counting)
    config = run_config(manifest, tmp_path)
    config.train.batch_size, config.train.group_by = 6, "image"
    run_training(config, log=lambda m: None)
    assert seen == [2] * (3 * 48 // 6)  # 3 epochs of 48 train rows

    config.train.group_by = "imgae"
    with pytest.raises(ConfigError, match=r"'imgae' is not a model input.*did you mean 'image'"):
        run_training(config, log=lambda m: None, overwrite=True)
