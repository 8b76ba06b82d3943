"""Several tasks on one model: each reads only the rows that carry its target, reports its own
metrics, and the weighted mean of their main metrics picks the best checkpoint."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import yaml

from polymodal.config import validate
from polymodal.data.sources import LINE_KEY
from polymodal.errors import ConfigError
from polymodal.inference import evaluate_model, main_score, selection_weights
from polymodal.models.model import build_model
from polymodal.train.run import RunResult, run_training

# rows of the tiny manifest (0-15 train, 16-19 val, 20-23 test) that lack a column
NO_LABEL = {1, 6, 11, 21}
NO_PRICE = {2, 7, 16, 17, 18, 19, 22}  # no val row has a price
NO_TEXT = {3, 23}
TASKS = ["classify_label", "regress_price", "retrieve_image_text"]


def write_multitask_manifest(folder: Path, write_tiny_manifest: Callable[[Path], Path]) -> Path:
    """The tiny manifest with some labels, prices and texts left out (NO_LABEL, ...)."""
    path = write_tiny_manifest(folder)
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    for i, row in enumerate(rows):
        for column, missing in (("label", NO_LABEL), ("price", NO_PRICE), ("text", NO_TEXT)):
            if i in missing:
                del row[column]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def multitask_config(manifest: Path, out: Path, **train: Any) -> dict[str, Any]:
    return {
        "name": "multi",
        "seed": 1,
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
                {"type": "regress", "target": "price", "hidden": 16, "weight": 0.5},
                {"type": "retrieve", "query": "image", "gallery": "text", "dim": 8},
            ],
        },
        "train": {"epochs": 2, "batch_size": 4, "lr": 0.005, "out_dir": str(out), **train},
    }


@pytest.fixture(scope="module")
def run(
    tmp_path_factory: pytest.TempPathFactory, write_tiny_manifest: Callable[[Path], Path]
) -> RunResult:
    root = tmp_path_factory.mktemp("multitask")
    manifest = write_multitask_manifest(root / "data", write_tiny_manifest)
    return run_training(validate(multitask_config(manifest, root / "runs")), log=lambda m: None)


def test_each_task_is_scored_on_the_rows_that_carry_its_target(run: RunResult) -> None:
    assert list(run.test) == TASKS
    assert run.test["classify_label"]["num_examples"] == 3  # test rows 20, 22, 23
    assert run.test["regress_price"]["rows"] == 3  # 20, 21, 23
    assert run.test["retrieve_image_text"]["gallery_size"] == 3  # 20, 21, 22 have a text
    assert {"mae", "rmse", "pearson", "r2"} <= set(run.test["regress_price"])
    results = json.loads((run.run_dir / "results.json").read_text(encoding="utf-8"))
    assert results["test"] == run.test


def test_the_best_checkpoint_is_picked_by_the_tasks_with_validation_rows(run: RunResult) -> None:
    history = [
        json.loads(line)
        for line in (run.run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    for record in history:
        val = record["val"]
        assert val["regress_price"] == {"rows": 0}  # no val row has a price: left out
        expected = (
            val["classify_label"]["accuracy"] + val["retrieve_image_text"]["mean_recall"]
        ) / 2
        assert record["val_score"] == pytest.approx(expected)
    results = json.loads((run.run_dir / "results.json").read_text(encoding="utf-8"))
    best = max(history, key=lambda record: record["val_score"])
    assert results["val_score"] == pytest.approx(best["val_score"])


def test_a_row_without_one_target_still_trains_the_others(run: RunResult) -> None:
    """Train rows without a label: the classify head gets no gradient from them, the
    regression and retrieval heads and the encoders do."""
    model = build_model(validate(_config_of(run)).model, run.data.preprocessor)
    train = [run.data.splits["train"][i] for i in range(len(run.data.splits["train"]))]
    lacking = [example for example in train if example[LINE_KEY] - 1 in NO_LABEL]
    assert len(lacking) == 3  # train rows 1, 6, 11
    batch = run.data.preprocessor.collate(lacking)
    assert not batch.present["label"].any() and batch.present["price"].all()
    total, parts = model.loss(batch)
    total.backward()
    assert parts["classify_label"] == 0.0 and torch.isfinite(total)
    assert parts["regress_price"] > 0 and parts["retrieve_image_text"] > 0

    def trained(module: torch.nn.Module) -> bool:
        return any(p.grad is not None and bool(p.grad.any()) for p in module.parameters())

    assert not trained(model.tasks["classify_label"])
    assert trained(model.tasks["regress_price"]) and trained(model.tasks["retrieve_image_text"])
    assert trained(model.encoders["image"]) and trained(model.encoders["text"])


def _config_of(run: RunResult) -> dict[str, Any]:
    return yaml.safe_load((run.run_dir / "config.yaml").read_text(encoding="utf-8"))


def test_a_split_without_a_tasks_targets_reports_no_rows(run: RunResult) -> None:
    model = build_model(validate(_config_of(run)).model, run.data.preprocessor)
    val = run.data.splits["val"]
    scores = evaluate_model(model, [val[i] for i in range(len(val))], workers=0)
    assert scores["regress_price"] == {"rows": 0}
    assert scores["classify_label"]["num_examples"] == 4


def _stub(*names_and_metrics: tuple[str, str]) -> Any:
    return SimpleNamespace(
        tasks={name: SimpleNamespace(main_metric=m) for name, m in names_and_metrics}
    )


def test_main_score_weighs_each_tasks_main_metric() -> None:
    model = _stub(("a", "accuracy"), ("b", "r2"), ("c", "mean_recall"))
    metrics = {"a": {"accuracy": 0.9}, "b": {"r2": 0.5}, "c": {"mean_recall": 0.4}}
    assert main_score(metrics, model) == pytest.approx(0.6)
    assert main_score(metrics, model, {"a": 3.0, "b": 1.0}) == pytest.approx((2.7 + 0.5) / 4)
    metrics["b"] = {"rows": 0}  # no row carries b's target: left out
    assert main_score(metrics, model) == pytest.approx(0.65)
    assert main_score({"a": {"rows": 0}, "b": {"rows": 0}, "c": {"rows": 0}}, model) is None
    assert selection_weights(model, {"c": 2}) == {"a": 0.0, "b": 0.0, "c": 2.0}
    with pytest.raises(
        ConfigError, match=r"train\.select: d is not a task of the model; its tasks: a, b, c"
    ):
        selection_weights(model, {"d": 1.0})
    with pytest.raises(ConfigError, match="every weight is 0"):
        selection_weights(model, {"a": 0.0})
    with pytest.raises(ConfigError, match="a weight is negative"):
        selection_weights(model, {"a": 1.0, "b": -1.0})


def test_train_select_picks_by_one_task_and_refuses_unknown_names(
    tmp_path: Path, write_tiny_manifest: Callable[[Path], Path]
) -> None:
    manifest = write_multitask_manifest(tmp_path / "data", write_tiny_manifest)
    raw = multitask_config(manifest, tmp_path / "runs", epochs=1, select={"classify_lable": 1})
    with pytest.raises(ConfigError, match="classify_lable is not a task of the model"):
        run_training(validate(raw), log=lambda m: None)
    raw["train"]["select"] = {"classify_label": 1.0}
    result = run_training(validate(raw), log=lambda m: None, overwrite=True)
    record = json.loads((result.run_dir / "metrics.jsonl").read_text(encoding="utf-8"))
    assert record["val_score"] == record["val"]["classify_label"]["accuracy"]
