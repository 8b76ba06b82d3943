"""write_report: a self-contained HTML report on tiny trained runs, opened in headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from polymodal.config import validate
from polymodal.evaluate.report import pr_points, robustness_tasks, roc_points, write_report
from polymodal.train.run import run_training

COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220)}
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
ROBUSTNESS = {
    "split": "test",
    "task": "classify_label",
    "metric": "accuracy",
    "clean": 0.75,
    "missing": {
        "image": [{"rate": 0.0, "score": 0.75}, {"rate": 0.5, "score": 0.5}],
        "text": [{"rate": 0.0, "score": 0.75}, {"rate": 0.5, "score": 0.7}],
    },
    "noise": {
        "image": {"gaussian": [{"severity": 1, "score": 0.7}, {"severity": 3, "score": 0.5}]},
        "<b>text</b>": {"typos": [{"severity": 1, "score": 0.75}, {"severity": 3, "score": 0.6}]},
    },
    "relative_robustness": {"image": 0.8, "text": 0.9},
    "effective_robustness": {"image": -0.05},
    "contribution": {"image": {"score_without": 0.5, "drop": 0.25}},
}
EFFICIENCY = {"parameters": 12345, "latency_ms": {"batch_1": 1.25}, "<script>x</script>": "cpu"}


def write_manifest(folder: Path) -> Path:
    """The rows of conftest's ``tiny_manifest``, for module-scoped runs (that fixture is not)."""
    rows = []
    for i in range(24):
        colour = "red" if i % 2 == 0 else "blue"
        image = folder / "img" / f"{i}.png"
        image.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (16, 16), COLOURS[colour]).save(image)
        rows.append(
            {
                "id": str(i),
                "split": "train" if i < 16 else ("val" if i < 20 else "test"),
                "image": f"img/{i}.png",
                "text": f"a {colour} square number {i}",
                "price": float(i),
                "label": colour,
            }
        )
    path = folder / "manifest.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def train(manifest: Path, out_dir: Path, name: str, model: dict[str, Any]) -> Path:
    config = {
        "name": name,
        "seed": 1,
        "data": {"manifest": str(manifest), "image": {"size": 16}},
        "model": model,
        "train": {"epochs": 2, "batch_size": 4, "lr": 0.005, "out_dir": str(out_dir)},
    }
    return run_training(validate(config), log=lambda message: None).run_dir


ENCODERS = {
    "image": {"type": "cnn", "dim": 16, "channels": [8, 8]},
    "text": {"type": "transformer", "dim": 16, "layers": 1, "heads": 2},
}


@pytest.fixture(scope="module")
def classify_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("report")
    model = {
        "encoders": {**ENCODERS, "price": {"type": "mlp", "dim": 16, "hidden": 16}},
        "fusion": {"type": "attention", "dim": 16},
        "tasks": [{"type": "classify", "target": "label", "hidden": 16}],
    }
    run_dir = train(write_manifest(root / "data"), root / "runs", "tiny", model)
    write_report(run_dir, robustness=ROBUSTNESS, efficiency=EFFICIENCY, resamples=200)
    return run_dir


@pytest.fixture(scope="module")
def retrieval_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("report_retrieval")
    model = {
        "inputs": ["image", "text"],
        "encoders": ENCODERS,
        "tasks": [{"type": "retrieve", "query": "image", "gallery": "text", "dim": 16}],
    }
    run_dir = train(write_manifest(root / "data"), root / "runs", "tiny_retrieval", model)
    write_report(run_dir, resamples=200)
    return run_dir


def img_sources(page: str) -> list[str]:
    return re.findall(r"<img\b[^>]*\bsrc=\"([^\"]*)\"", page)


def test_report_holds_the_run_numbers_with_intervals(classify_run):
    report = classify_run / "report"
    assert {p.name for p in report.iterdir()} == {"index.html", "results.json", "results.md"}
    summary = json.loads((report / "results.json").read_text(encoding="utf-8"))
    run_results = json.loads((classify_run / "results.json").read_text(encoding="utf-8"))
    assert summary["tasks"] == run_results["test"]  # the same model on the same rows
    assert summary["split"] == "test" and summary["rows"] == 4
    for metric in ("accuracy", "f1_macro"):
        interval = summary["intervals"]["classify_label"][metric]
        assert interval["estimate"] == pytest.approx(summary["tasks"]["classify_label"][metric])
        assert interval["low"] <= interval["estimate"] <= interval["high"]
    weights = summary["fusion_weights"]
    assert set(weights) == {"image", "price", "text"}
    assert sum(weights.values()) == pytest.approx(1.0)
    assert summary["robustness"] == ROBUSTNESS and summary["efficiency"] == EFFICIENCY

    markdown = (report / "results.md").read_text(encoding="utf-8")
    for heading in ("## Task: classify_label", "### Confusion matrix", "## Fusion weights"):
        assert heading in markdown
    assert "| classify_label.accuracy" not in markdown  # paths are within the task
    assert re.search(r"\| accuracy \| [\d.]+ \| [\d.]+ \| [\d.]+ \|", markdown)
    assert "| modality \\ missing rate | 0 | 0.5 |\n| --- | --- | --- |" in markdown
    assert "| image | 0.7500 | 0.5000 |\n| text | 0.7500 | 0.7000 |" in markdown
    assert "| image | gaussian | 0.7000 | 0.5000 |" in markdown  # severities 1 and 3
    assert "## Efficiency" in markdown and "| latency_ms.batch_1 | 1.2500 |" in markdown


def test_report_is_self_contained_and_escapes_data(classify_run):
    page = (classify_run / "report" / "index.html").read_text(encoding="utf-8")
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page and '<link rel="stylesheet"' not in page
    sources = img_sources(page)
    assert page.count("<img") == len(sources)
    assert all(src.startswith("data:image/") for src in sources)
    # training, confusion, ROC/PR, fusion weights, missing rate, noise; 4 test rows' thumbnails
    assert sum(s.startswith("data:image/svg+xml;base64,") for s in sources) == 6
    assert sum(s.startswith("data:image/png;base64,") for s in sources) == 4
    for section in ("Training", "Task: classify_label", "Sample predictions", "Fusion weights"):
        assert f">{section}</h2>" in page
    assert ">Robustness: classify_label</h2>" in page and ">Efficiency</h2>" in page
    assert "&lt;script&gt;x&lt;/script&gt;" in page and "&lt;b&gt;text&lt;/b&gt;" in page
    assert "<b>text</b>" not in page


def test_retrieval_report_shows_top_items_and_recall_intervals(retrieval_run):
    report = retrieval_run / "report"
    summary = json.loads((report / "results.json").read_text(encoding="utf-8"))
    task = summary["tasks"]["retrieve_image_text"]
    intervals = summary["intervals"]["retrieve_image_text"]
    assert intervals["image_to_text"]["R@1"]["estimate"] == pytest.approx(
        task["image_to_text"]["R@1"]
    )
    assert intervals["mean_recall"]["estimate"] == pytest.approx(task["mean_recall"])
    assert summary["fusion_weights"] is None
    page = (report / "index.html").read_text(encoding="utf-8")
    assert "Top 5 text items per image query" in page
    assert page.count('class="query"') == 4  # every test row is a query
    assert page.count('class="item match"') == 4  # the true match is in each top 5 of 4
    assert page.count("a red square number") + page.count("a blue square number") == 4 * 4
    assert all(src.startswith("data:image/") for src in img_sources(page))
    assert "Sample predictions" not in page and "Fusion weights" not in page


def test_robustness_comes_alone_or_per_task():
    assert robustness_tasks(ROBUSTNESS) == {"classify_label": ROBUSTNESS}
    assert robustness_tasks({"tasks": {"a": ROBUSTNESS}}) == {"a": ROBUSTNESS}
    inner = {k: v for k, v in ROBUSTNESS.items() if k not in ("split", "task")}
    assert robustness_tasks({"split": "val", "tasks": {"a": inner}}) == {
        "a": {"split": "val", **inner}
    }


def test_roc_and_pr_points_match_scikit_learn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    positive = rng.random(300) < 0.3
    scores = np.round(rng.random(300) + positive * 0.4, 2)  # rounded: tied scores
    fpr, tpr, auc = roc_points(scores, positive)
    assert auc == pytest.approx(metrics.roc_auc_score(positive, scores))
    expected_fpr, expected_tpr, _ = metrics.roc_curve(positive, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, expected_fpr)
    np.testing.assert_allclose(tpr, expected_tpr)
    recall, precision, ap = pr_points(scores, positive)
    assert ap == pytest.approx(metrics.average_precision_score(positive, scores))
    assert recall[-1] == 1.0 and precision[-1] == pytest.approx(positive.mean())


@pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="needs chromium and chromedriver on PATH (Debian: apt-get install chromium "
    "chromium-driver)",
)
def test_report_renders_in_headless_chromium(classify_run, retrieval_run, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    options.add_argument("--window-size=1280,900")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        for run_dir in (classify_run, retrieval_run):
            driver.get((run_dir / "report" / "index.html").as_uri())
            images = driver.execute_script(
                "return Array.from(document.images, i => [i.complete, i.naturalWidth, i.alt])"
            )
            assert images and all(done and width > 0 for done, width, _ in images), images
            errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
            assert errors == []
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1280, min(int(height), 6000))
        screenshot = tmp_path / "report.png"
        assert driver.save_screenshot(str(screenshot))
    finally:
        driver.quit()
    with Image.open(screenshot) as shot:
        assert shot.width >= 1000 and shot.height >= 800
        colours = shot.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is None or len(colours) > 50  # rendered text, figures and thumbnails
