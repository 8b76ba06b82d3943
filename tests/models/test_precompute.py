"""Precomputed backbone features: the same outputs as running the frozen backbone, computed
once, kept in memory or on disk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from polymodal.config import validate
from polymodal.data.pipeline import prepare_data
from polymodal.errors import ConfigError, ModelError
from polymodal.inference import eval_mode
from polymodal.models import precompute
from polymodal.models.encoders.pretrained import field_options
from polymodal.models.model import build_model
from polymodal.models.precompute import precompute_features
from polymodal.predictor import Predictor
from polymodal.train.run import run_training


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _manifest(folder: Path) -> Path:
    """24 rows of text (one without) and a colour label."""
    rows = []
    for i in range(24):
        colour = ("red", "blue")[i % 2]
        words = " ".join(["big"] * (i % 4))  # texts of several lengths
        split = "train" if i < 16 else ("val" if i < 20 else "test")
        rows.append({"split": split, "text": f"a {colour} {words} square", "label": colour})
    rows[21]["text"] = ""  # absent
    path = folder / "manifest.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def _config(folder: Path, bert: Path, precompute: bool, cache: str = "none") -> dict:
    encoder = {"type": "pretrained", "model": str(bert), "unfreeze_last": 0, "dim": 8}
    return {
        "name": f"precompute-{precompute}",
        "data": {
            "manifest": str(_manifest(folder)),
            "fields": {"text": {"kind": "text"}, "label": {"kind": "label", "role": "target"}},
            "cache": cache,
            "cache_dir": str(folder / "cache"),
            "workers": 0,
        },
        "model": {
            "encoders": {"text": {**encoder, "precompute": precompute}},
            "fusion": {"dim": 8},
            "tasks": [{"type": "classify", "target": "label", "hidden": 8}],
        },
        "train": {"epochs": 2, "batch_size": 4, "out_dir": str(folder / "runs"), "threads": 1},
    }


def test_training_on_precomputed_features_is_training_on_the_backbone(tiny_models, tmp_path):
    runs = {}
    for flag in (False, True):
        config = validate(_config(tmp_path, tiny_models["bert"], flag))
        logged: list[str] = []
        runs[flag] = run_training(config, log=logged.append)
        assert any("computed once" in line for line in logged) == flag
    plain, fast = runs[False], runs[True]
    losses = [[e["train_loss"] for e in r.train.history] for r in (plain, fast)]
    assert losses[1] == pytest.approx(losses[0], abs=1e-5)
    assert fast.test["classify_label"]["ece_15"] == pytest.approx(
        plain.test["classify_label"]["ece_15"], abs=1e-5
    )
    rows = [{"text": "a blue big square"}, {"text": "red"}]
    probabilities = [
        [
            p["classify_label"]["probabilities"]
            for p in Predictor.from_pretrained(r.model_dir).predict(rows)
        ]
        for r in (plain, fast)
    ]
    for a, b in zip(*probabilities, strict=True):
        assert b == pytest.approx(a, abs=1e-5)


def _prepared(folder: Path, bert: Path, cache: str = "none", precompute: bool = True):
    config = validate(_config(folder, bert, precompute, cache))
    data = prepare_data(
        config.data, field_options=field_options(config.model), cache_dir=folder / "cache"
    )
    torch.manual_seed(0)
    return config, data, build_model(config.model, data.preprocessor)


def _outputs(model, data) -> list[torch.Tensor]:
    with eval_mode(model):
        return [
            model.encode(batch)["text"].pooled
            for split in ("train", "val", "test")
            for batch in [model.preprocessor.collate(list(data.splits[split]))]
        ]


def test_looked_up_features_are_the_backbone_s_output(tiny_models, tmp_path):
    config, data, model = _prepared(tmp_path, tiny_models["bert"])
    expected = _outputs(model, data)
    batch = model.preprocessor.collate(list(data.splits["test"]))
    with eval_mode(model):
        tokens = model.encode(batch)["text"]
    fields = precompute_features(model, data.splits, config.data, None, batch_size=3)
    assert fields == ["text"]
    for got, want in zip(_outputs(model, data), expected, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    with eval_mode(model):
        looked_up = model.encode(batch)["text"]
    assert not batch.present["text"][1]  # the absent row is looked up as computed
    torch.testing.assert_close(looked_up.tokens, tokens.tokens, atol=1e-5, rtol=0)
    assert torch.equal(looked_up.token_mask, tokens.token_mask)
    with pytest.raises(ModelError, match="manifest line 99 has no precomputed features"):
        model.precomputed["text"].lookup([99], "cpu")


def test_a_disk_store_is_found_again_for_the_same_backbone_and_data(
    tiny_models, tmp_path, monkeypatch
):
    config, data, model = _prepared(tmp_path, tiny_models["bert"], cache="disk")
    precompute_features(model, data.splits, config.data, None, batch_size=8)
    stores = list((tmp_path / "cache" / "features").iterdir())
    assert len(stores) == 1 and (stores[0] / "tokens.npy").is_file()
    first = _outputs(model, data)

    def no_compute(*args, **kwargs):
        raise AssertionError("computed again")

    monkeypatch.setattr(precompute, "compute_features", no_compute)
    _, _, again = _prepared(tmp_path, tiny_models["bert"], cache="disk")
    precompute_features(again, data.splits, config.data, None, batch_size=8)
    for got, want in zip(_outputs(again, data), first, strict=True):
        torch.testing.assert_close(got, want)
    with torch.no_grad():  # another backbone: another store
        again.encoders["text"].backbone.model.embeddings.word_embeddings.weight.add_(0.1)
    with pytest.raises(AssertionError, match="computed again"):
        precompute_features(again, data.splits, config.data, None, batch_size=8)


def test_only_encoders_that_ask_are_precomputed(tiny_models, tmp_path):
    config, data, model = _prepared(tmp_path, tiny_models["bert"], precompute=False)
    assert precompute_features(model, data.splits, config.data, None, batch_size=8) == []
    assert model.precomputed == {}


def test_any_frozen_encoder_is_precomputed(tiny_manifest, tmp_path):
    """A frozen CNN's output computed once trains what running the CNN each step trains."""
    runs = {}
    for flag in (False, True):
        config = validate(
            {
                "name": f"cnn-{flag}",
                "seed": 2,
                "data": {"manifest": str(tiny_manifest), "image": {"size": 16}, "workers": 0},
                "model": {
                    "inputs": ["image", "text"],
                    "encoders": {
                        "image": {
                            "type": "cnn",
                            "dim": 8,
                            "channels": [4, 8],
                            "freeze": True,
                            "precompute": flag,
                        },
                        "text": {"type": "bag", "dim": 8},
                    },
                    "fusion": {"dim": 8},
                    "tasks": [{"type": "classify", "target": "label", "hidden": 8}],
                },
                "train": {"epochs": 3, "batch_size": 4, "out_dir": str(tmp_path), "threads": 1},
            }
        )
        logged: list[str] = []
        runs[flag] = run_training(config, log=logged.append)
        assert (
            any("'image': the frozen encoder's features are computed" in x for x in logged) == flag
        )
    plain, fast = runs[False], runs[True]
    losses = [[e["train_loss"] for e in r.train.history] for r in (plain, fast)]
    assert losses[0][0] != losses[0][-1]  # the run trained
    assert losses[1] == pytest.approx(losses[0], abs=1e-5)
    for key in ("ece_15", "accuracy"):
        assert fast.test["classify_label"][key] == pytest.approx(
            plain.test["classify_label"][key], abs=1e-5
        )
    with pytest.raises(ConfigError, match="precompute needs a frozen encoder: set freeze: true"):
        validate(
            {
                **config.model_dump(mode="json"),
                "model": {
                    "encoders": {"image": {"type": "cnn", "precompute": True}},
                    "tasks": [{"type": "classify", "target": "label"}],
                },
            }
        )
