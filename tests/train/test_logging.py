from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from polymodal.train.logging import TrainingLog, flatten_metrics

METRICS = {
    "classify_label": {
        "accuracy": 0.9,
        "f1_macro": 1,
        "confusion_matrix": [[3, 1], [0, 4]],
        "labels": ["red", "blue"],
        "calibrated": True,
        "auroc_ovr_macro": None,
        "ece_15": math.nan,
    },
    "retrieve_text_image": {"recall": {"at_1": 0.25}},
    "note": "fine",
}


def read_events(folder: Path) -> EventAccumulator:
    events = EventAccumulator(str(folder))
    events.Reload()
    return events


def test_flatten_metrics_keeps_finite_numbers_only() -> None:
    assert flatten_metrics(METRICS) == {
        "classify_label/accuracy": 0.9,
        "classify_label/f1_macro": 1.0,
        "retrieve_text_image/recall/at_1": 0.25,
    }


def test_scalars_and_metrics_reach_the_event_file(tmp_path: Path) -> None:
    with TrainingLog(tmp_path) as log:
        for step in (1, 2, 3):
            log.scalars(step, {"loss": 1.0 / step, "lr": 0.001 * step}, prefix="train")
        log.metrics(3, METRICS)
        log.flush()
    events = read_events(tmp_path / "tensorboard")
    assert sorted(events.Tags()["scalars"]) == [
        "train/loss",
        "train/lr",
        "val/classify_label/accuracy",
        "val/classify_label/f1_macro",
        "val/retrieve_text_image/recall/at_1",
    ]
    loss = events.Scalars("train/loss")
    assert [e.step for e in loss] == [1, 2, 3]
    assert [round(e.value, 6) for e in loss] == [1.0, 0.5, round(1 / 3, 6)]
    (accuracy,) = events.Scalars("val/classify_label/accuracy")
    assert (accuracy.step, round(accuracy.value, 6)) == (3, 0.9)


def test_disabled_writes_nothing(tmp_path: Path) -> None:
    log = TrainingLog(tmp_path / "run", enabled=False)
    log.scalars(1, {"loss": 1.0}, prefix="train")
    log.metrics(1, METRICS)
    log.flush()
    log.close()
    assert not (tmp_path / "run").exists()


def test_close_twice_and_logging_after_close_are_harmless(tmp_path: Path) -> None:
    log = TrainingLog(tmp_path)
    log.close()
    log.close()
    log.scalars(1, {"loss": 1.0}, prefix="train")


def test_importing_the_module_does_not_import_tensorboard() -> None:
    code = (
        "import sys, polymodal.train.logging; "
        "assert 'torch.utils.tensorboard' not in sys.modules; "
        "assert 'tensorboard' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
