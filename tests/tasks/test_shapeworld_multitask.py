"""The packaged shapeworld_multitask config: statement matching, image <-> caption retrieval
and count regression on one model, trained one epoch on 60 generated scenes; the caption,
which would give the other tasks' answers away, reaches the retrieval task only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import polymodal
from polymodal.config import load_config
from polymodal.data.dataset import read_all
from polymodal.data.shapeworld import generate
from polymodal.models.model import MultimodalModel
from polymodal.train.run import RunResult, run_training

CONFIG = Path(polymodal.__file__).parent / "configs" / "shapeworld_multitask.yaml"
TASKS = ["classify_label", "retrieve_image_caption", "regress_count"]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    root = tmp_path_factory.mktemp("shapeworld_multitask")
    manifest = generate(root / "world", n=60, seed=0)
    overrides = [f"data.manifest={manifest}", f"train.out_dir={root / 'runs'}"]
    config = load_config(CONFIG, [*overrides, "train.epochs=1", "data.workers=0"])
    return run_training(config, log=lambda message: None)


def test_every_task_is_scored_on_the_test_scenes(run: RunResult) -> None:
    manifest = run.data.index.path
    rows = [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines()]
    tested = sum(row["split"] == "test" for row in rows)
    assert list(run.test) == TASKS
    assert run.test["classify_label"]["num_examples"] == tested
    assert run.test["retrieve_image_caption"]["gallery_size"] == tested
    count = run.test["regress_count"]
    assert count["rows"] == tested and 0 <= count["mae"] <= 2  # in shapes: counts are 1..3


def test_the_caption_reaches_the_retrieval_task_only(run: RunResult) -> None:
    model = MultimodalModel.from_pretrained(run.model_dir)
    assert model.fusion is not None and model.fusion.fields == ["image", "statement"]
    assert model.fused_inputs == {
        "classify_label": ("image", "statement"),
        "regress_count": ("image",),
    }
    examples = read_all(run.data.splits["test"], run.data.quarantine)

    def outputs(field: str) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The model's outputs on the test scenes, and with each scene's ``field`` that of
        the next scene."""
        swapped = [{**ex, field: examples[i - 1][field]} for i, ex in enumerate(examples)]
        collate = model.preprocessor.collate
        with torch.no_grad():
            return model(collate(examples)), model(collate(swapped))

    before, after = outputs("caption")
    assert torch.equal(before["classify_label"], after["classify_label"])
    assert torch.equal(before["regress_count"], after["regress_count"])
    retrieval = before["retrieve_image_caption"], after["retrieve_image_caption"]
    assert not torch.equal(retrieval[0]["gallery"], retrieval[1]["gallery"])
    before, after = outputs("statement")
    assert not torch.equal(before["classify_label"], after["classify_label"])
    assert torch.equal(before["regress_count"], after["regress_count"])
