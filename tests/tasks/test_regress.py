"""The regress task: masked losses on standardised targets, metrics and predictions in the
targets' own units, and a run that learns a linear function of a tabular input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from polymodal.config import RegressConfig, RegressionLoss, validate
from polymodal.data.schema import Batch
from polymodal.errors import ConfigError
from polymodal.metrics.regression import target_scores
from polymodal.predictor import Predictor
from polymodal.tasks import Regress
from polymodal.train.run import run_training

MEAN, STD = [10.0, -2.0], [2.0, 0.5]


def _task(loss: RegressionLoss = "mse", sentiment: bool = False) -> Regress:
    return Regress(["a", "b"], MEAN, STD, in_dim=4, hidden=8, loss=loss, sentiment=sentiment)


def _batch() -> Batch:
    """Three rows: both targets, only a, only b (standard units; absent cells hold 0)."""
    values = {"a": torch.tensor([[1.0], [-0.5], [0.0]]), "b": torch.tensor([[2.0], [0.0], [-1.0]])}
    present = {"a": torch.tensor([True, True, False]), "b": torch.tensor([True, False, True])}
    return Batch(values, present, rows=[1, 2, 3])


OUTPUTS = torch.tensor([[0.5, 1.0], [0.5, 9.0], [9.0, -1.5]])  # 9: cells with no target


@pytest.mark.parametrize(
    ("loss", "function"),
    [("mse", F.mse_loss), ("l1", F.l1_loss), ("huber", F.huber_loss)],
)
def test_loss_reads_only_the_cells_that_carry_a_target(loss, function) -> None:
    predicted = torch.tensor([0.5, 1.0, 0.5, -1.5])  # a1, b1, a2, b3: the 9s are left out
    wanted = torch.tensor([1.0, 2.0, -0.5, -1.0])
    expected = function(predicted, wanted)
    assert _task(loss).loss(OUTPUTS, _batch()) == pytest.approx(float(expected))
    nothing = Batch(_batch().values, {k: torch.zeros(3, dtype=torch.bool) for k in "ab"})
    outputs = OUTPUTS.clone().requires_grad_()
    zero = _task().loss(outputs, nothing)
    zero.backward()
    assert float(zero.detach()) == 0.0 and outputs.grad is not None


def test_huber_delta_is_in_standard_units() -> None:
    task = Regress(["a"], [0.0], [1.0], 4, loss="huber", huber_delta=0.25)
    batch = Batch({"a": torch.tensor([[2.0]])}, {"a": torch.tensor([True])})
    assert float(task.loss(torch.tensor([[0.0]]), batch)) == pytest.approx(0.25 * (2.0 - 0.125))


def test_collect_metrics_and_predictions_are_in_the_targets_own_units() -> None:
    task = _task()
    collected = task.collect(OUTPUTS, _batch())
    original = OUTPUTS.double() * torch.tensor(STD, dtype=torch.float64) + torch.tensor(MEAN)
    assert torch.allclose(collected["predicted"], original)
    truth = torch.tensor([[12.0, -1.0], [9.0, -2.0], [10.0, -2.5]], dtype=torch.float64)
    present = torch.tensor([[True, True], [True, False], [False, True]])
    assert torch.equal(collected["present"], present)
    assert torch.allclose(collected["targets"][present], truth[present])
    assert task.metrics(collected) == target_scores(truth, original, present, ["a", "b"])
    assert task.kept(_batch()).tolist() == [True, True, True]
    prediction = task.postprocess(OUTPUTS, 0)
    assert prediction == {"values": {"a": pytest.approx(11.0), "b": pytest.approx(-1.5)}}


def test_sentiment_metrics_when_asked() -> None:
    collected = _task(sentiment=True).collect(OUTPUTS, _batch())
    scores = _task(sentiment=True).metrics(collected)
    assert {"acc2_non_negative", "f1_non_zero", "acc5", "acc7", "r2"} <= set(scores)
    assert set(scores["per_target"]) == {"a", "b"}
    assert "acc7" not in _task().metrics(collected)


def test_config_names_and_targets() -> None:
    one = RegressConfig(target="price")
    assert (one.name, one.targets, one.target_kind) == ("regress_price", ["price"], "number")
    two = RegressConfig(target=["valence", "arousal"], loss="huber")
    assert (two.name, two.targets) == ("regress_valence_arousal", ["valence", "arousal"])
    with pytest.raises(ValidationError, match="each named once"):
        RegressConfig(target=["a", "a"])
    with pytest.raises(ValidationError):
        RegressConfig(target="a", loss="hinge")


def _write_linear_manifest(folder: Path) -> Path:
    """100 rows: y = 3x + 10 and z = 100 - x (z missing on every fourth train row)."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(100):
        x = float(rng.uniform(-2, 2))
        split = "train" if i < 60 else ("val" if i < 80 else "test")
        row = {"split": split, "x": x, "y": 3 * x + 10, "z": 100 - x}
        if split == "train" and i % 4 == 0:
            row["z"] = None
        rows.append(row)
    path = folder / "manifest.jsonl"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def _config(manifest: Path, out: Path, target: object, **task: object) -> dict:
    return {
        "name": "linear",
        "seed": 0,
        "data": {"manifest": str(manifest), "workers": 0},
        "model": {
            "inputs": ["x"],
            "encoders": {"x": {"type": "mlp", "dim": 16, "hidden": 32, "dropout": 0.0}},
            "fusion": {"dim": 16, "dropout": 0.0},
            "tasks": [{"type": "regress", "target": target, "hidden": 32, "dropout": 0.0, **task}],
        },
        "train": {"epochs": 10, "batch_size": 16, "lr": 0.01, "out_dir": str(out)},
    }


def test_a_run_learns_two_targets_and_predicts_in_their_units(tmp_path: Path) -> None:
    manifest = _write_linear_manifest(tmp_path / "data")
    config = validate(_config(manifest, tmp_path / "runs", ["y", "z"]))
    result = run_training(config, log=lambda message: None)
    assert result.data.schema.fields["y"].kind == "number"  # inferred from the task
    scores = result.test["regress_y_z"]
    assert scores["per_target"]["y"]["rows"] == scores["per_target"]["z"]["rows"] == 20
    assert scores["per_target"]["y"]["r2"] > 0.9 and scores["per_target"]["z"]["r2"] > 0.9
    assert scores["r2"] == pytest.approx(
        (scores["per_target"]["y"]["r2"] + scores["per_target"]["z"]["r2"]) / 2
    )
    assert scores["mae"] < 0.5  # in the targets' units (y spans 4 to 16)
    results = json.loads((result.run_dir / "results.json").read_text(encoding="utf-8"))
    assert results["val_score"] > 0.9  # picked by r2
    predicted = Predictor.from_pretrained(result.model_dir).predict([{"x": 1.0}])[0]
    values = predicted["regress_y_z"]["values"]
    assert values["y"] == pytest.approx(13.0, abs=1.0)
    assert values["z"] == pytest.approx(99.0, abs=1.0)


def test_a_target_of_another_kind_is_refused(tmp_path: Path) -> None:
    manifest = _write_linear_manifest(tmp_path / "data")
    raw = _config(manifest, tmp_path / "runs", "y")
    raw["data"]["fields"] = {
        "x": {"kind": "tabular", "numeric": ["x"]},
        "y": {"kind": "label", "role": "target"},
    }
    with pytest.raises(ConfigError, match=r"model\.tasks\.0: field 'y' is label; expected number"):
        run_training(validate(raw), log=lambda message: None)
