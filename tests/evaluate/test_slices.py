"""``polymodal eval RUN_DIR --by COLUMN``: every metric per value of a manifest column, with
counts and bootstrap intervals, in eval_SPLIT.json and the report."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from polymodal.cli import main
from polymodal.config import load_config, validate
from polymodal.data.sources import LINE_KEY
from polymodal.errors import ConfigError
from polymodal.evaluate.confidence import numeric_leaves
from polymodal.evaluate.run import evaluate_run, read_rows, read_split
from polymodal.evaluate.slices import NONE, slice_key
from polymodal.inference import evaluate_model
from polymodal.models.model import MultimodalModel
from polymodal.train.run import RunResult, run_training

SOURCES = {0: "cam_a", 1: "cam_b"}  # row i % 3 -> its source; 2: none


@pytest.fixture(scope="module")
def run(
    tmp_path_factory: pytest.TempPathFactory, write_tiny_manifest: Callable[[Path], Path]
) -> RunResult:
    root = tmp_path_factory.mktemp("slices")
    manifest = write_tiny_manifest(root / "data")
    rows = [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines()]
    for i, row in enumerate(rows):
        if i % 3 in SOURCES:
            row["source"] = SOURCES[i % 3]
    manifest.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    config = {
        "name": "sliced",
        "seed": 2,
        "data": {"manifest": str(manifest), "image": {"size": 16}, "workers": 0},
        "model": {
            "inputs": ["image", "text"],
            "encoders": {
                "image": {"type": "cnn", "dim": 16, "channels": [8, 8]},
                "text": {"type": "bag", "dim": 16},
            },
            "fusion": {"dim": 16},
            "tasks": [
                {"type": "classify", "target": "label", "hidden": 16},
                {"type": "regress", "target": "price", "hidden": 16},
                {"type": "retrieve", "query": "image", "gallery": "text", "dim": 8},
            ],
        },
        "train": {"epochs": 1, "batch_size": 4, "out_dir": str(root / "runs")},
    }
    return run_training(validate(config), log=lambda m: None)


def test_slices_count_every_row_once_and_order_their_values(run: RunResult) -> None:
    scores = evaluate_run(run.run_dir, "val", by=["source", "label", "price"], seed=3)
    slices = scores["slices"]
    # val rows 16-19: sources b (16), none (17), a (18), b (19)
    assert {value: part["rows"] for value, part in slices["source"].items()} == {
        "cam_a": 1,
        "cam_b": 2,
        NONE: 1,
    }
    assert list(slices["source"]) == ["cam_a", "cam_b", NONE]  # NONE last
    assert list(slices["price"]) == ["16.0", "17.0", "18.0", "19.0"]
    for column in ("source", "label", "price"):
        assert sum(part["rows"] for part in slices[column].values()) == scores["rows"] == 4
    written = json.loads((run.run_dir / "eval_val.json").read_text(encoding="utf-8"))
    assert written["slices"] == slices


def test_each_slice_scores_as_its_rows_alone(run: RunResult) -> None:
    slices = evaluate_run(run.run_dir, "test", by=["source"])["slices"]["source"]
    config = load_config(run.run_dir / "config.yaml")
    model = MultimodalModel.from_pretrained(run.run_dir / "best")
    examples, rows = read_rows(read_split(config, model, "test"), "test")
    for value, part in slices.items():
        alone = evaluate_model(
            model, [e for e in examples if slice_key(rows[e[LINE_KEY]].get("source")) == value]
        )
        assert set(part["tasks"]) == set(alone)
        for task, metrics in alone.items():
            expected = numeric_leaves(metrics)
            assert numeric_leaves(part["tasks"][task]) == pytest.approx(expected, abs=1e-6)


def test_intervals_are_seeded_and_hold_the_estimate(run: RunResult) -> None:
    first = evaluate_run(run.run_dir, "train", by=["source"], seed=5)["slices"]["source"]
    again = evaluate_run(run.run_dir, "train", by=["source"], seed=5)["slices"]["source"]
    assert first == again
    part = first["cam_a"]  # train rows 0, 3, 6, 9, 12, 15
    assert part["rows"] == 6
    accuracy = part["intervals"]["classify_label"]["accuracy"]
    assert accuracy["estimate"] == part["tasks"]["classify_label"]["accuracy"]
    mae = part["intervals"]["regress_price"]["mae"]
    assert mae["low"] <= mae["estimate"] <= mae["high"]
    assert mae["estimate"] == pytest.approx(part["tasks"]["regress_price"]["mae"])
    assert "mean_recall" in part["intervals"]["retrieve_image_text"]


def test_report_shows_the_slices(run: RunResult) -> None:
    scores = evaluate_run(run.run_dir, "test", by=["source"], report=True)
    report = Path(scores["report"])
    assert "Slices by source" in report.read_text(encoding="utf-8")
    summary = json.loads((report.parent / "results.json").read_text(encoding="utf-8"))
    assert summary["slices"] == scores["slices"]
    assert {"mae", "rmse", "r2"} <= set(summary["intervals"]["regress_price"])
    markdown = (report.parent / "results.md").read_text(encoding="utf-8")
    assert "## Slices by source" in markdown and f"| {NONE} | 2 |" in markdown


def test_a_misspelled_column_names_the_manifests_columns(run: RunResult, capsys) -> None:
    with pytest.raises(ConfigError, match=r"--by sorce: .*did you mean 'source'\?") as err:
        evaluate_run(run.run_dir, by=["sorce"])
    assert "id, image, label, price, source, split, text" in str(err.value)
    assert main(["eval", str(run.run_dir), "--by", "sorce", "--quiet"]) == 2
    assert "did you mean 'source'" in capsys.readouterr().err


def test_cli_writes_the_slices(run: RunResult, tmp_path: Path, capsys) -> None:
    out = tmp_path / "scores.json"
    code = main(["eval", str(run.run_dir), "--by", "label", "--out", str(out), "--quiet"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert list(printed["slices"]["label"]) == ["blue", "red"]
    assert json.loads(out.read_text(encoding="utf-8")) == printed


@pytest.mark.parametrize(
    ("value", "key"),
    [
        (None, NONE),
        ("  ", NONE),
        (float("nan"), NONE),
        ([], NONE),
        ("what color", "what color"),
        (3, "3"),
        (True, "true"),
        (["b", "a"], '["b", "a"]'),
        ({"k": 1}, '{"k": 1}'),
    ],
)
def test_slice_key(value: object, key: str) -> None:
    assert slice_key(value) == key
