from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from polymodal.config import RunConfig, load_config, validate
from polymodal.errors import DataError, PolymodalError
from polymodal.inference import evaluate_model
from polymodal.models.model import MultimodalModel
from polymodal.train.run import run_training


def write_config(bad_manifest, out_dir: Path) -> Path:
    """A tiny run over the bad manifest; the manifest path is relative to the config file."""
    config = {
        "name": "bad",
        "seed": 1,
        "data": {
            "manifest": bad_manifest.path.name,
            "fields": {
                "image": {"kind": "image"},
                "caption": {"kind": "text"},
                "label": {"kind": "label", "role": "target", "labels": list(bad_manifest.labels)},
            },
            "image": {"size": 16},
            "text": {"max_length": 16},
        },
        "model": {
            "encoders": {
                "image": {"type": "cnn", "dim": 16, "channels": [8, 8]},
                "caption": {"type": "transformer", "dim": 16, "layers": 1, "heads": 2},
            },
            "fusion": {"dim": 16},
            "tasks": [{"type": "classify", "target": "label", "hidden": 16}],
        },
        "train": {"epochs": 2, "batch_size": 4, "lr": 0.005, "out_dir": str(out_dir)},
    }
    path = bad_manifest.path.parent / "run.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("cache", ["none", "memory"])
def test_run_over_bad_manifest_quarantines_and_writes_run_files(bad_manifest, tmp_path, cache):
    """Bad rows are quarantined up front (a store is built) or while the epochs read them."""
    config = load_config(write_config(bad_manifest, tmp_path / "runs"), [f"data.cache={cache}"])
    assert config.data.manifest == bad_manifest.path.resolve()
    messages: list[str] = []
    result = run_training(config, log=messages.append)

    run_dir = tmp_path / "runs" / "bad"
    assert result.run_dir == run_dir and result.model_dir == run_dir / "best"
    assert {p.name for p in run_dir.iterdir()} == {
        "config.yaml",
        "quarantine.jsonl",
        "metrics.jsonl",
        "results.json",
        "best",
        "checkpoints",
        "tensorboard",
    }

    quarantined = read_jsonl(run_dir / "quarantine.jsonl")
    assert len(quarantined) == 3
    assert {r["line"]: (r["reason"], r["field"]) for r in quarantined} == bad_manifest.quarantined
    assert all(r["source"] == str(bad_manifest.path.resolve()) and r["detail"] for r in quarantined)
    if cache == "memory":  # found before training
        assert any(m.startswith("quarantined 3 rows:") for m in messages)
        assert {name: len(ex) for name, ex in result.data.splits.items()} == bad_manifest.splits

    saved = validate(yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")))
    assert saved == config

    history = read_jsonl(run_dir / "metrics.jsonl")
    assert [h["epoch"] for h in history] == [1, 2]
    assert all(math.isfinite(h["train_loss"]) for h in history)
    assert all(h["val"]["classify_label"]["num_examples"] == 1 for h in history)

    results = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    assert results["name"] == "bad"
    assert results["best_epoch"] in (1, 2)
    assert results["quarantined"] == {
        "unreadable image": 1,
        "missing image file": 1,
        "unknown label": 1,
    }
    assert results["test"] == result.test
    assert results["test"]["classify_label"]["num_examples"] == 1

    best = MultimodalModel.from_pretrained(run_dir / "best")
    assert best.preprocessor.fields["label"].labels == ["red", "blue"]
    assert best.preprocessor.state() == result.data.preprocessor.state()
    assert evaluate_model(best, result.data.splits["test"]) == results["test"]
    batch = best.preprocessor.collate(result.data.splits["train"])
    assert batch.quarantined == [] if cache == "memory" else len(batch.quarantined) == 1
    assert batch.present["caption"].tolist().count(False) == 1  # the empty caption
    logits = best(batch)["classify_label"]
    assert logits.shape == (7, 2) and torch.isfinite(logits).all()


def test_strict_run_raises_naming_the_bad_row(bad_manifest, tmp_path):
    path = write_config(bad_manifest, tmp_path / "runs")
    config: RunConfig = load_config(path, ["data.strict=true"])
    assert config.data.strict
    where = r"manifest\.jsonl:3 field 'image': unreadable image"
    with pytest.raises(DataError, match=where) as err:
        run_training(config, log=lambda message: None)
    assert isinstance(err.value, PolymodalError)
    assert "strict mode" in str(err.value)
    run_dir = tmp_path / "runs" / "bad"
    assert not (run_dir / "best").exists() and not (run_dir / "results.json").exists()
    assert not (run_dir / "quarantine.jsonl").exists()


# --- config fields against the manifest, empty splits, existing run directories -------------


def tiny_config(manifest: Path, out_dir: Path, **data: object) -> RunConfig:
    """A small fused classifier over the conftest tiny manifest (image, text, price, label)."""
    return validate(
        {
            "name": "tiny",
            "data": {"manifest": str(manifest), "image": {"size": 16}, **data},
            "model": {
                "encoders": {"image": {"type": "cnn", "dim": 8, "channels": [8]}},
                "fusion": {"dim": 8},
                "tasks": [{"type": "classify", "target": "label", "hidden": 8}],
            },
            "train": {"epochs": 1, "batch_size": 8, "out_dir": str(out_dir)},
        }
    )


FIELDS = {
    "image": {"kind": "image"},
    "text": {"kind": "text"},
    "label": {"kind": "label", "role": "target"},
}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (  # a field in no row: 'img' for the column 'image'
            {**FIELDS, "img": {"kind": "image"}},
            "data.fields.img: column 'img' has no value in any row of",
        ),
        (  # a target in no row: 'Label' for 'label'
            {"image": {"kind": "image"}, "Label": {"kind": "label", "role": "target"}},
            "data.fields.Label: column 'Label' has no value in any row of",
        ),
        (  # a tabular field's column in no row
            {**FIELDS, "tab": {"kind": "tabular", "numeric": ["price", "weight"]}},
            "data.fields.tab: column 'weight' has no value in any row of",
        ),
    ],
)
def test_a_configured_field_in_no_row_is_an_error_before_training(
    tiny_manifest, tmp_path, fields, message
):
    config = tiny_config(tiny_manifest, tmp_path / "runs", fields=fields)
    with pytest.raises(PolymodalError) as exc:
        run_training(config, log=lambda m: None)
    text = str(exc.value)
    assert text.startswith(message)
    assert "the manifest's columns: id, image, label, price, split, text" in text
    assert not (tmp_path / "runs").exists()  # nothing written: the fixed config runs as is


def test_the_error_names_the_closest_column(tiny_manifest, tmp_path):
    fields = {"Label": {"kind": "label", "role": "target"}, "imge": {"kind": "image"}}
    with pytest.raises(PolymodalError, match="did you mean 'label'"):
        run_training(tiny_config(tiny_manifest, tmp_path, fields=fields), log=lambda m: None)


def test_a_manifest_with_none_of_the_configured_columns_is_an_error(tmp_path):
    manifest = tmp_path / "other.jsonl"
    manifest.write_text('{"a": 1, "b": "x"}\n{"a": 2, "b": "y"}\n', encoding="utf-8")
    config = tiny_config(manifest, tmp_path / "runs", fields=FIELDS)
    with pytest.raises(PolymodalError, match="column 'image' has no value in any row"):
        run_training(config, log=lambda m: None)


@pytest.mark.parametrize("target", ["Label", "lable"])
def test_an_inferred_schema_with_a_misspelt_target_names_data_target(
    tiny_manifest, tmp_path, target
):
    config = tiny_config(tiny_manifest, tmp_path / "runs")
    config.model.tasks[0].target = target
    with pytest.raises(DataError) as exc:
        run_training(config, log=lambda m: None)
    assert f"target column '{target}' has no value in any row; did you mean 'label'?" in str(
        exc.value
    )
    assert "data.target" in str(exc.value)


def test_the_task_target_is_the_target_of_an_inferred_schema(tmp_path):
    """'answer' or any column a classify task names is the target, never an input."""
    rows = [
        {"question": f"what colour is thing {i}", "kind": ["a", "b"][i % 2], "reply": "yes"}
        for i in range(20)
    ]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    config = tiny_config(manifest, tmp_path / "runs", val_fraction=0.2, test_fraction=0.2)
    config.model.encoders = {}
    config.model.tasks[0].target = "kind"
    result = run_training(config, log=lambda m: None)
    assert result.data.schema.targets == ["kind"]
    assert result.data.schema.inputs == ["question", "reply"]


def test_without_validation_rows_no_score_is_shown(tiny_manifest, tmp_path):
    rows = [json.loads(line) for line in tiny_manifest.read_text().splitlines()]
    manifest = tiny_manifest.parent / "no_val.jsonl"
    manifest.write_text(
        "\n".join(json.dumps({**r, "split": "train"}) for r in rows), encoding="utf-8"
    )
    messages: list[str] = []
    config = tiny_config(manifest, tmp_path / "runs")
    config.train.epochs = 2
    result = run_training(config, log=messages.append)
    assert "no validation rows: every epoch is kept as the best so far, and no score is shown" in (
        messages
    )
    epochs = [m for m in messages if m.startswith("epoch ")]
    assert len(epochs) == 2 and not any("val" in m for m in epochs)
    assert result.train.best_epoch == 2 and result.train.best_score is None
    results = json.loads((result.run_dir / "results.json").read_text())
    assert results["val_score"] is None and results["test"] == {}
    history = read_jsonl(result.run_dir / "metrics.jsonl")
    assert [h["val_score"] for h in history] == [None, None]


def test_every_train_row_quarantined_is_an_error_that_says_why(tmp_path):
    rows = [
        {"split": "train", "image": f"missing{i}.png", "text": "a red square", "label": "red"}
        for i in range(4)
    ]
    rows.append({"split": "val", "image": "x.png", "text": "a blue square", "label": "blue"})
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    config = tiny_config(manifest, tmp_path / "runs", fields=FIELDS)
    with pytest.raises(DataError) as exc:
        run_training(config, log=lambda m: None)
    assert "no train row can be used, nothing to train on" in str(exc.value)
    assert "quarantined: 4 missing image file" in str(exc.value)  # read in epoch 1
    assert len(read_jsonl(tmp_path / "runs" / "tiny" / "quarantine.jsonl")) == 4


def test_an_existing_run_directory_is_refused_unless_overwrite(tiny_manifest, tmp_path):
    config = tiny_config(tiny_manifest, tmp_path / "runs")
    first = run_training(config, log=lambda m: None)
    stale = first.run_dir / "quarantine.jsonl"
    stale.write_text('{"line": 1}\n', encoding="utf-8")  # as an earlier, dirtier run left it
    before = (first.model_dir / "model.safetensors").read_bytes()
    with pytest.raises(PolymodalError, match="exists and holds an earlier run's files; pass --ov"):
        run_training(config, log=lambda m: None)
    assert stale.exists() and (first.model_dir / "model.safetensors").read_bytes() == before

    second = run_training(config, log=lambda m: None, overwrite=True)
    assert not stale.exists()  # cleared, not mixed with the new run's files
    assert json.loads((second.run_dir / "results.json").read_text())["quarantined"] == {}


def test_overwrite_never_deletes_a_folder_polymodal_did_not_write(tiny_manifest, tmp_path):
    precious = tmp_path / "runs" / "tiny" / "thesis.tex"
    precious.parent.mkdir(parents=True)
    precious.write_text("years of work", encoding="utf-8")
    config = tiny_config(tiny_manifest, tmp_path / "runs")
    with pytest.raises(PolymodalError, match="did not write; nothing was deleted"):
        run_training(config, log=lambda m: None, overwrite=True)
    assert precious.read_text(encoding="utf-8") == "years of work"
