"""Predictor: preprocess -> forward -> postprocess, from a saved model directory."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Any

import torch

from polymodal.data.pipeline import Example
from polymodal.data.schema import Batch
from polymodal.errors import DataError, ModelError, RowError, did_you_mean
from polymodal.inference import forward
from polymodal.models.model import MultimodalModel
from polymodal.onnx_backend import OnnxRunner


class Predictor:
    """Predictions for raw rows (dicts of field values, paths relative to ``base_dir``).

    >>> predictor = Predictor.from_pretrained("runs/statement/best")  # doctest: +SKIP
    >>> predictor({"image": "scene.png", "statement": "there is a red circle"})  # doctest: +SKIP
    {'classify_label': {'label': 'true', 'probabilities': {...}}, 'absent_inputs': []}
    """

    def __init__(
        self, model: MultimodalModel, device: str = "cpu", runner: OnnxRunner | None = None
    ) -> None:
        self.model = model.to(device).eval()
        self.device = device
        self.runner = runner

    @classmethod
    def from_pretrained(
        cls,
        directory: str | Path,
        device: str = "cpu",
        backend: str = "torch",
        threads: int | None = None,
    ) -> Predictor:
        """The model saved in ``directory``, run by PyTorch (``backend="torch"``) or by ONNX
        Runtime on the graphs ``polymodal export`` wrote there (``"onnxruntime"``, on CPU).
        ``threads``: intra-op threads (PyTorch's are set for the whole process)."""
        model = MultimodalModel.from_pretrained(directory, device)
        if backend == "torch":
            if threads:
                torch.set_num_threads(threads)
            return cls(model, device)
        if backend == "onnxruntime":
            return cls(model, "cpu", OnnxRunner(directory, threads))
        raise ModelError(f"unknown backend '{backend}'; use torch or onnxruntime")

    def _check_keys(self, index: int, row: dict[str, Any], inputs: list[str]) -> None:
        """A key that is no column of the model's data is a mistake (a typo, most often)."""
        known = self.model.preprocessor.columns
        for key in row:
            if key in known or key.startswith("_"):
                continue
            expected = ", ".join(self.model.preprocessor.input_columns(inputs))
            schema = self.model.preprocessor.schema
            if key in schema.fields:  # a tabular field named instead of its columns
                columns = ", ".join(schema.columns(key))
                raise DataError(
                    f"row {index}: '{key}' is a tabular field; give its columns ({columns}) "
                    "as keys of the row"
                )
            raise DataError(
                f"row {index}: unknown field '{key}'{did_you_mean(key, known)}. "
                f"The model reads: {expected}"
            )

    def preprocess(
        self, rows: list[dict[str, Any]], base_dir: Path
    ) -> tuple[Batch, list[list[str]]]:
        """The batch of ``rows``, and each row's input fields that were absent."""
        inputs = self.model.inputs
        columns = set(self.model.preprocessor.input_columns(inputs))
        if not rows:
            raise DataError("no rows to predict: give a row object or a non-empty list of them")
        examples: list[Example] = []
        absent: list[list[str]] = []
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                raise DataError(
                    f"row {i}: expected an object of field values, got {type(row).__name__}"
                )
            self._check_keys(i, row, inputs)
            given = {k: v for k, v in row.items() if k in columns}  # targets are not read
            try:
                example = self.model.preprocessor.example(given, base_dir)
            except RowError as err:
                field = getattr(err, "field", "?")
                raise DataError(f"row {i}, field '{field}': {err}") from None
            absent.append([name for name in inputs if example[name] is None])
            if len(absent[-1]) == len(inputs):  # missing, null or blank
                raise DataError(
                    f"row {i}: none of the model's input fields is given; "
                    f"expected some of: {', '.join(sorted(columns))}"
                )
            examples.append(example)
        return self.model.preprocessor.collate(examples), absent

    def forward(self, batch: Batch, tasks: Collection[str] | None = None) -> dict[str, Any]:
        """Each task's outputs for ``batch`` (or those of ``tasks``), from the eager model or
        the ONNX Runtime one."""
        if self.model.training:  # switched since: predictions are made in eval mode
            self.model.eval()
        with torch.no_grad():
            if self.runner is not None:
                return self.runner(self.model, batch, tasks)
            return forward(self.model, batch, self.device, tasks)

    def postprocess(self, outputs: dict[str, Any], absent: list[list[str]]) -> list[dict[str, Any]]:
        """Each row's prediction per task (of those in ``outputs``), and ``absent_inputs``:
        the inputs it lacked."""
        return [
            {
                **{
                    name: self.model.tasks[name].postprocess(out, i)
                    for name, out in outputs.items()
                },
                "absent_inputs": missing,
            }
            for i, missing in enumerate(absent)
        ]

    def predict(
        self,
        rows: list[dict[str, Any]],
        base_dir: str | Path = ".",
        tasks: Collection[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Predictions for ``rows``: manifest-shaped dicts (the columns the model was trained
        on; a missing input is allowed and listed in ``absent_inputs``, an unknown key is an
        error naming the closest expected one). ``tasks``: only these tasks' predictions (a
        caption or an answer alone spares the other tasks' work)."""
        self.model.chosen_tasks(tasks)  # an unknown task fails before any row is read
        batch, absent = self.preprocess(rows, Path(base_dir))
        return self.postprocess(self.forward(batch, tasks), absent)

    def __call__(self, row: dict[str, Any], base_dir: str | Path = ".") -> dict[str, Any]:
        return self.predict([row], base_dir)[0]
