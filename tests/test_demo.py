"""``polymodal demo``: a small run checks the files and their shape; the full run, its numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from polymodal.cli import main
from polymodal.demo import STATEMENT_LABELS, run_demo
from polymodal.predictor import Predictor


def _check_files(out: Path, results: dict) -> None:
    assert json.loads((out / "results.json").read_text()) == results
    statement = results["statement_matching"]
    for key in STATEMENT_LABELS:
        assert 0.0 <= statement[key] <= 1.0
        assert set(statement["by_type"][key]) == {"existence", "count"}
    retrieval = results["retrieval"]
    for direction in ("image_to_text", "text_to_image"):
        recalls = [retrieval[direction][k] for k in ("R@1", "R@5", "R@10")]
        assert recalls == sorted(recalls)
    assert retrieval["gallery_size"] == results["data"]["test_rows"]
    assert results["seconds"] > 0
    assert set(results["models"]) == {
        "statement_image_statement",
        "statement_statement",
        "statement_image",
        "retrieval",
    }


def test_small_demo_writes_results_and_usable_models(tmp_path: Path, capsys):
    out = tmp_path / "demo"
    assert main(["--quiet", "demo", "--out", str(out), "--n", "120", "--seed", "3"]) == 0
    printed = capsys.readouterr().out
    assert "Is the statement true of the image?" in printed and "median rank" in printed
    results = json.loads((out / "results.json").read_text())
    _check_files(out, results)
    fused = Predictor.from_pretrained(results["models"]["statement_image_statement"])
    row = json.loads((out / "data" / "manifest.jsonl").read_text().splitlines()[0])
    prediction = fused.predict([row], out / "data")[0]
    assert prediction["classify_label"]["label"] in {"true", "false"}


@pytest.mark.slow
def test_full_demo_meets_its_targets(tmp_path: Path):
    """The README's main job: fusion must beat either modality alone by a wide margin."""
    results = run_demo(tmp_path / "demo")
    _check_files(tmp_path / "demo", results)
    statement = results["statement_matching"]
    assert statement["accuracy"] >= 0.90
    assert statement["accuracy_text_only"] <= 0.65
    assert statement["accuracy_image_only"] <= 0.65
    assert results["retrieval"]["gallery_size"] >= 1000
    assert results["retrieval"]["image_to_text"]["R@10"] >= 0.5
