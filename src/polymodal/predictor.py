"""Predictor: preprocess -> forward -> postprocess, from a saved model directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from polymodal.data.pipeline import Example
from polymodal.data.schema import Batch
from polymodal.errors import DataError, RowError
from polymodal.models.model import MultimodalModel


class Predictor:
    """Predictions for raw rows (dicts of field values, paths relative to ``base_dir``).

    >>> predictor = Predictor.from_pretrained("runs/statement/best")  # doctest: +SKIP
    >>> predictor({"image": "scene.png", "statement": "there is a red circle"})  # doctest: +SKIP
    {'classify_label': {'label': 'true', 'probabilities': {...}}}
    """

    def __init__(self, model: MultimodalModel, device: str = "cpu") -> None:
        self.model = model.to(device).eval()
        self.device = device

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str = "cpu") -> Predictor:
        return cls(MultimodalModel.from_pretrained(directory, device), device)

    def preprocess(self, rows: list[dict[str, Any]], base_dir: Path) -> Batch:
        inputs = self.model.inputs
        if not rows:
            raise DataError("no rows to predict: give a row object or a non-empty list of them")
        examples: list[Example] = []
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                raise DataError(
                    f"row {i}: expected an object of field values, got {type(row).__name__}"
                )
            given = {k: v for k, v in row.items() if k in inputs}  # targets are not read here
            try:
                example = self.model.preprocessor.example(given, base_dir)
            except RowError as err:
                field = getattr(err, "field", "?")
                raise DataError(f"row {i}, field '{field}': {err}") from None
            if all(example[name] is None for name in inputs):  # missing, null or blank
                raise DataError(
                    f"row {i}: none of the model's input fields is given; "
                    f"expected some of: {', '.join(inputs)}"
                )
            examples.append(example)
        return self.model.preprocessor.collate(examples).to(self.device)

    @torch.no_grad()
    def _forward(self, batch: Batch) -> dict[str, Any]:
        return self.model(batch)

    def postprocess(self, outputs: dict[str, Any], count: int) -> list[dict[str, Any]]:
        return [
            {name: task.postprocess(outputs[name], i) for name, task in self.model.tasks.items()}
            for i in range(count)
        ]

    def predict(
        self, rows: list[dict[str, Any]], base_dir: str | Path = "."
    ) -> list[dict[str, Any]]:
        batch = self.preprocess(rows, Path(base_dir))
        return self.postprocess(self._forward(batch), len(rows))

    def __call__(self, row: dict[str, Any], base_dir: str | Path = ".") -> dict[str, Any]:
        return self.predict([row], base_dir)[0]
