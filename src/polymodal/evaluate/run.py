"""``polymodal eval RUN_DIR``: a run's best model scored on one of its data splits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from polymodal.config import load_config
from polymodal.data.pipeline import prepare_data
from polymodal.errors import DataError
from polymodal.evaluate.evaluator import evaluate_model
from polymodal.models.model import MultimodalModel
from polymodal.train.run import write_json


def evaluate_run(run_dir: str | Path, split: str = "test") -> dict[str, Any]:
    """Load RUN_DIR/config.yaml and RUN_DIR/best, score ``split``, write RUN_DIR/eval_SPLIT.json."""
    run_dir = Path(run_dir)
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise DataError(f"{config_path} is missing; pass a folder written by 'polymodal train'")
    config = load_config(config_path)
    model = MultimodalModel.from_pretrained(run_dir / "best")
    data = prepare_data(config.data, config.seed, preprocessor=model.preprocessor)
    if not data.splits.get(split):
        raise DataError(f"split '{split}' has no rows; splits: {', '.join(data.splits)}")
    scores = {
        "split": split,
        "rows": len(data.splits[split]),
        "tasks": evaluate_model(model, data.splits[split]),
    }
    write_json(run_dir / f"eval_{split}.json", scores)
    return scores
