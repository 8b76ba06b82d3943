"""The ONNX Runtime backend: runs an export's graphs (``polymodal.export``) in place of the
eager model, with the model's own preprocessing and postprocessing around them."""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from polymodal.data.schema import Batch
from polymodal.errors import ModelError
from polymodal.io import atomic_write_text
from polymodal.models.model import MultimodalModel
from polymodal.tasks.caption import Caption

EXPORT_FILE = "export.json"
GRAPH_FILE = "model.onnx"


def start_file(task: str) -> str:
    """The graph of a caption task's decoder start: its memory's keys and values."""
    return f"{task}.start.onnx"


def step_file(task: str) -> str:
    """The graph of one step of a caption task's decoder, with its key/value cache."""
    return f"{task}.step.onnx"


def _onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise ModelError(
            "the ONNX Runtime backend needs onnxruntime: pip install 'polymodal[onnx]'"
        ) from None
    return onnxruntime


@dataclass
class ExportInfo:
    """What ``export.json`` records: each graph's input and output names, the decoder graphs
    of each caption task, whether weights are int8, and the parity check's differences."""

    inputs: list[str]
    outputs: list[str]
    decoders: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    quantized: str | None = None
    parity: dict[str, float] = field(default_factory=dict)

    def save(self, directory: Path) -> None:
        atomic_write_text(directory / EXPORT_FILE, json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, directory: Path) -> ExportInfo:
        path = directory / EXPORT_FILE
        if not path.is_file():
            raise ModelError(
                f"{directory} holds no ONNX export ({EXPORT_FILE} is missing); write one with "
                f"polymodal export MODEL_DIR --format onnx --out {directory}"
            )
        return cls(**json.loads(path.read_text(encoding="utf-8")))


def batch_tensors(model: MultimodalModel, batch: Batch) -> dict[str, torch.Tensor]:
    """The graph's inputs for ``batch``: each input field's values, mask and lengths."""
    tensors: dict[str, torch.Tensor] = {}
    for name in model.inputs:
        tensors[name] = batch.values[name]
        tensors[f"{name}:present"] = batch.present[name]
        if name in batch.lengths:
            tensors[f"{name}:lengths"] = batch.lengths[name]
    return tensors


def flat_outputs(outputs: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Each task's outputs under ``TASK`` (a tensor) or ``TASK:KEY`` (a dict of tensors)."""
    flat: dict[str, torch.Tensor] = {}
    for name, value in outputs.items():
        if isinstance(value, dict):
            flat.update({f"{name}:{key}": tensor for key, tensor in value.items()})
        else:
            flat[name] = value
    return flat


def nested_outputs(flat: dict[str, torch.Tensor]) -> dict[str, Any]:
    """``flat_outputs`` undone."""
    nested: dict[str, Any] = {}
    for key, tensor in flat.items():
        task, _, part = key.partition(":")
        if part:
            nested.setdefault(task, {})[part] = tensor
        else:
            nested[task] = tensor
    return nested


class OnnxDecoderScorer:
    """A ``polymodal.models.decoding.Scorer`` on a caption task's exported step graph: the
    memory's keys and values (one row per image) are picked per row at each step, the past
    keys and values (one row per sequence) follow ``select``."""

    def __init__(
        self,
        step: Any,
        names: dict[str, list[str]],
        memory_kv: list[np.ndarray],
        memory_mask: np.ndarray,
    ) -> None:
        self.session, self.names = step, names
        self.memory = dict(zip(names["memory"], memory_kv, strict=True))
        self.memory_mask = memory_mask
        self.rows = np.arange(len(memory_mask))  # the memory row of each sequence
        self.past = [  # (N, heads, 0 steps, D / heads) per layer, keys and values
            np.zeros((len(memory_mask), m.shape[1], 0, m.shape[3]), np.float32) for m in memory_kv
        ]

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        feeds = {
            "tokens": tokens[:, -1].numpy().astype(np.int64),
            "position": np.array([self.past[0].shape[2]], np.int64),
            "memory_mask": self.memory_mask[self.rows],
            **dict(zip(self.names["past"], self.past, strict=True)),
            **{name: kv[self.rows] for name, kv in self.memory.items()},
        }
        logits, *self.past = self.session.run(None, feeds)
        return torch.from_numpy(logits).float().log_softmax(-1)

    def select(self, index: torch.Tensor) -> None:
        picked = index.cpu().numpy()
        self.rows = self.rows[picked]
        self.past = [p[picked] for p in self.past]


class OnnxRunner:
    """Runs an export's graphs on ONNX Runtime: a Batch in, each task's outputs out (the same
    structure as the eager model's, decoded captions included)."""

    def __init__(self, directory: str | Path, threads: int | None = None) -> None:
        ort = _onnxruntime()
        directory = Path(directory)
        self.info = ExportInfo.load(directory)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        providers = ["CPUExecutionProvider"]

        def session(path: Path) -> Any:
            return ort.InferenceSession(str(path), options, providers=providers)

        self.graph = session(directory / GRAPH_FILE)
        self.decoders = {
            name: (session(directory / start_file(name)), session(directory / step_file(name)))
            for name in self.info.decoders
        }

    def __call__(
        self, model: MultimodalModel, batch: Batch, tasks: Collection[str] | None = None
    ) -> dict[str, Any]:
        """Each task's outputs (or those of ``tasks``: the others' captions are not decoded)."""
        chosen = model.chosen_tasks(tasks)
        tensors = batch_tensors(model, batch)
        feeds = {name: tensors[name].numpy() for name in self.info.inputs}
        results = self.graph.run(self.info.outputs, feeds)
        flat = {n: torch.from_numpy(r) for n, r in zip(self.info.outputs, results, strict=True)}
        outputs = {n: out for n, out in nested_outputs(flat).items() if n in chosen}
        for name, (start, step) in self.decoders.items():
            if name not in chosen:
                continue
            task = model.tasks[name]
            assert isinstance(task, Caption)
            memory = outputs[name]["memory"].numpy()
            memory_kv = start.run(None, {"memory": memory})
            mask = outputs[name]["memory_mask"].numpy()
            scorer = OnnxDecoderScorer(step, self.info.decoders[name], memory_kv, mask)
            outputs[name] |= task.decoded(scorer, len(memory))
        return outputs
