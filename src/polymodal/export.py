"""ONNX export of a saved model, checked against eager PyTorch.

An export folder is a model folder (config.json, model.safetensors, preprocessor.json: the
preprocessing and the tasks' postprocessing stay the model's own) plus the graphs that
``polymodal.onnx_backend`` runs:

- ``model.onnx``: encoders, fusion and task heads from a Batch's tensors (each input field's
  values, ``present`` mask and, for a variable-length field, ``lengths``) to each task's
  network outputs (``Task.network``), with a dynamic batch axis and dynamic sequence lengths;
- for a caption task, ``{task}.start.onnx`` (the memory's cross-attention keys and values,
  once per image) and ``{task}.step.onnx`` (one decoder step with its key/value cache), so
  greedy and beam search run on the exported graphs;
- ``export.json`` (``ExportInfo``): the graphs' input and output names and the parity check.

Graph inputs and outputs are named ``FIELD`` / ``FIELD:present`` / ``FIELD:lengths`` and
``TASK`` / ``TASK:KEY`` (a task whose outputs are a dict).
"""

from __future__ import annotations

import logging
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from polymodal.data.quarantine import Quarantine
from polymodal.data.schema import Batch
from polymodal.data.sources import LINE_KEY, index_manifest
from polymodal.errors import DataError
from polymodal.models.decoder import CaptionDecoder, Memory
from polymodal.models.model import MultimodalModel
from polymodal.onnx_backend import (
    GRAPH_FILE,
    ExportInfo,
    OnnxRunner,
    batch_tensors,
    flat_outputs,
    start_file,
    step_file,
)
from polymodal.predictor import Predictor
from polymodal.tasks.caption import Caption

OPSET = 18
SAMPLE_WORDS = ["a", "red", "circle", "is", "above", "the", "blue", "square", "left", "of", "two"]


class GraphModel(nn.Module):
    """The model from a flat tuple of tensors (named by ``names``) to its network outputs.
    (Each exported module takes its tensors as ``*tensors``: one dynamic-shape spec fits all.)"""

    def __init__(self, model: MultimodalModel, names: list[str]) -> None:
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        given = dict(zip(self.names, tensors, strict=True))
        inputs = self.model.inputs
        batch = Batch(
            {name: given[name] for name in inputs},
            {name: given[f"{name}:present"] for name in inputs},
            {name: given[f"{name}:lengths"] for name in inputs if f"{name}:lengths" in given},
        )
        return tuple(flat_outputs(self.model(batch, network_only=True)).values())


class DecoderStart(nn.Module):
    """A caption decoder's cross-attention keys and values of each layer, from its memory."""

    def __init__(self, decoder: CaptionDecoder) -> None:
        super().__init__()
        self.decoder = decoder

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        (memory,) = tensors
        pairs = [layer.cross_attention.keys_values(memory) for layer in self.decoder.layers]
        return tuple(t for pair in pairs for t in pair)


class DecoderStep(nn.Module):
    """One decoder step: (tokens (N,), position (1,), memory mask (N, S), then per layer the
    past keys and values (N, heads, T, D / heads) and the memory keys and values) -> logits
    (N, V) and per layer the keys and values grown by the step."""

    def __init__(self, decoder: CaptionDecoder) -> None:
        super().__init__()
        self.decoder = decoder

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        tokens, position, memory_mask, *cache = tensors
        layers = len(self.decoder.layers)
        past = [(cache[2 * i], cache[2 * i + 1]) for i in range(layers)]
        memory = [
            Memory(cache[2 * (layers + i)], cache[2 * (layers + i) + 1], memory_mask)
            for i in range(layers)
        ]
        logits, grown = self.decoder.cached_step(tokens, position, past, memory)
        return (logits, *(t for pair in grown for t in pair))


def _decoder_names(layers: int) -> dict[str, list[str]]:
    """The names of a decoder's cached keys and values (``past``) and memory's, per layer."""
    return {
        "past": [f"{kind}{i}" for i in range(layers) for kind in ("keys", "values")],
        "memory": [f"memory_{kind}{i}" for i in range(layers) for kind in ("keys", "values")],
    }


def sample_rows(model: MultimodalModel, count: int = 4, seed: int = 0) -> list[dict[str, Any]]:
    """``count`` rows of made-up inputs of every kind the model reads (images of noise,
    text from a few words, audio of noise, numbers), of varied lengths; the rows after the
    first each leave one input out, so masks and lengths vary. A kind that cannot be made up
    (video, a time series read from files) raises DataError asking for real rows."""
    rng = np.random.default_rng(seed)
    pre = model.preprocessor
    rows = []
    for i in range(count):
        row: dict[str, Any] = {}
        for name in model.inputs:
            field_pre = pre.fields[name]
            kind = field_pre.kind
            if kind == "image":
                pixels = rng.integers(0, 256, (48 + 8 * i, 40 + 4 * i, 3), dtype=np.uint8)
                row[name] = Image.fromarray(pixels)
            elif kind == "text":
                row[name] = " ".join(rng.choice(SAMPLE_WORDS, 3 + 2 * i))
            elif kind == "audio":
                seconds = 0.3 + 0.2 * i
                row[name] = rng.normal(0, 0.1, int(field_pre.sample_rate * seconds)).astype(
                    np.float32
                )
            elif kind in ("tabular", "number"):
                for column in field_pre.numeric:
                    row[column] = float(rng.normal())
                for column in field_pre.categorical:
                    values = field_pre.categories[column] or ["unseen"]
                    row[column] = values[i % len(values)]
            else:
                raise DataError(
                    f"input '{name}' is of kind {kind}, which cannot be made up: give real rows "
                    "with --data MANIFEST"
                )
        if i and len(model.inputs) > 1:
            dropped = model.inputs[i % len(model.inputs)]
            for column in pre.input_columns([dropped]):
                row.pop(column, None)
        rows.append(row)
    return rows


def manifest_rows(manifest: str | Path, count: int) -> tuple[list[dict[str, Any]], Path]:
    """The first ``count`` readable rows of ``manifest`` (any split) and its folder."""
    index = index_manifest(Path(manifest), Quarantine(), split_column="")
    if not len(index):
        raise DataError(f"{manifest} has no readable row to export with")
    rows = [index.read(i) for i in range(min(count, len(index)))]
    return [{k: v for k, v in row.items() if k != LINE_KEY} for row in rows], index.base_dir


def _export_graph(
    module: nn.Module,
    args: tuple[torch.Tensor, ...],
    path: Path,
    inputs: list[str],
    outputs: list[str],
    static: dict[str, list[int]] | None = None,
) -> None:
    """``module`` exported with ``args`` to ``path`` by ``torch.export`` (the graph captured
    symbolically: a shape it depends on is a symbol, not the example's number). Axis 0 of
    every input (rows, or beams) is dynamic, as are the others the graph allows (sequence
    lengths, cached steps), but those ``static`` names (input name -> axes)."""
    static = static or {}
    dim = torch.export.Dim
    shapes = tuple(
        {
            d: dim.DYNAMIC if d == 0 else dim.AUTO
            for d in range(arg.dim())
            if d not in static.get(name, [])
        }
        for name, arg in zip(inputs, args, strict=True)
    )
    registry = logging.getLogger("torch.onnx._internal.exporter._registration")
    registry.setLevel(logging.ERROR)  # "torchvision is not installed": its ops are not needed
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=inputs,
            output_names=outputs,
            dynamic_shapes=(shapes,),
            opset_version=OPSET,
            dynamo=True,
            verbose=False,
        )


def export_onnx(
    model_dir: str | Path,
    out: str | Path,
    rows: list[dict[str, Any]] | None = None,
    base_dir: str | Path = ".",
    quantize: bool = False,
    log: Callable[[str], None] = print,
) -> ExportInfo:
    """Export the model saved in ``model_dir`` to ``out`` (int8 weights when ``quantize``)
    and check its parity with eager PyTorch on ``rows`` (``sample_rows`` when None).

    The graphs are traced on the first two rows; the parity check runs every row (other
    batch sizes, lengths and absent inputs than the trace saw)."""
    out = Path(out)
    model = MultimodalModel.from_pretrained(model_dir)
    model.save_pretrained(out)
    rows = rows or sample_rows(model, 6)
    batch, _ = Predictor(model).preprocess(rows[:2], Path(base_dir))
    tensors = batch_tensors(model, batch)
    with torch.no_grad():
        expected = flat_outputs(model(batch, network_only=True))
    names = list(tensors)
    _export_graph(
        GraphModel(model, names),
        tuple(tensors.values()),
        out / GRAPH_FILE,
        names,
        list(expected),
    )
    info = ExportInfo(names, list(expected))
    for task_name, task in model.tasks.items():
        if isinstance(task, Caption):
            info.decoders[task_name] = _export_decoder(task, expected, task_name, out)
    info.save(out)
    if quantize:
        return quantize_export(out, out, rows, base_dir, log)
    return check_parity(out, rows, base_dir, log)


def quantize_export(
    export_dir: str | Path,
    out: str | Path,
    rows: list[dict[str, Any]] | None = None,
    base_dir: str | Path = ".",
    log: Callable[[str], None] = print,
) -> ExportInfo:
    """``export_dir`` with each graph's weights as int8, activations quantised on the fly
    (ONNX Runtime's dynamic quantisation), written to ``out`` (may be ``export_dir``); its
    difference from eager fp32 PyTorch checked as ``check_parity`` does."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    export_dir, out = Path(export_dir), Path(out)
    info = ExportInfo.load(export_dir)
    if out.resolve() != export_dir.resolve():
        shutil.copytree(export_dir, out, dirs_exist_ok=True)
    quiet = logging.getLogger()  # onnxruntime logs a pre-processing hint for every graph
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        for path in out.glob("*.onnx"):
            quantize_dynamic(path, path, weight_type=QuantType.QInt8)
    finally:
        quiet.setLevel(level)
    info.quantized = "int8"
    info.save(out)
    return check_parity(out, rows, base_dir, log)


def check_parity(
    export_dir: str | Path,
    rows: list[dict[str, Any]] | None = None,
    base_dir: str | Path = ".",
    log: Callable[[str], None] = print,
) -> ExportInfo:
    """The export's outputs against eager PyTorch's on ``rows`` (``sample_rows`` when None):
    each output's max absolute difference, logged and kept in export.json."""
    export_dir = Path(export_dir)
    model = MultimodalModel.from_pretrained(export_dir)
    eager, exported = Predictor(model), Predictor(model, runner=OnnxRunner(export_dir))
    info = ExportInfo.load(export_dir)
    info.parity = parity(eager, exported, rows or sample_rows(model, 6), Path(base_dir))
    info.save(export_dir)
    for key, diff in info.parity.items():
        log(f"parity {key}: max |onnx - eager| = {diff:.2e}")
    return info


def _export_decoder(
    task: Caption, expected: dict[str, torch.Tensor], name: str, out: Path
) -> dict[str, list[str]]:
    """A caption task's decoder start and step graphs, traced on the memory in ``expected``
    and a first step; the names of their cached tensors."""
    decoder = task.decoder
    names = _decoder_names(len(decoder.layers))
    memory, mask = expected[f"{name}:memory"], expected[f"{name}:memory_mask"]
    with torch.no_grad():
        memory_kv = DecoderStart(decoder)(memory)
        state = decoder.start(memory, mask)
        tokens = torch.full((len(memory),), task.vocab.bos)
        decoder.step(tokens, state)  # one step cached, so the past has a length to trace
    _export_graph(
        DecoderStart(decoder), (memory,), out / start_file(name), ["memory"], names["memory"]
    )
    past = [t for pair in zip(state.keys, state.values, strict=True) for t in pair]
    args = (tokens, torch.tensor([1]), mask, *past, *memory_kv)
    inputs = ["tokens", "position", "memory_mask", *names["past"], *names["memory"]]
    outputs = ["logits", *(f"new_{past_name}" for past_name in names["past"])]
    static = {"position": [0]}
    _export_graph(DecoderStep(decoder), args, out / step_file(name), inputs, outputs, static)
    return names


def parity(
    eager: Predictor, exported: Predictor, rows: list[dict[str, Any]], base_dir: Path
) -> dict[str, float]:
    """``differences`` between the eager and the exported Predictor's outputs on ``rows``."""
    batch, _ = eager.preprocess(rows, base_dir)
    return differences(eager.forward(batch), exported.forward(batch))


def differences(expected: dict[str, Any], found: dict[str, Any]) -> dict[str, float]:
    """Max absolute difference of each output of two forwards of one batch (``TASK`` /
    ``TASK:KEY``); integer outputs (decoded tokens, lengths) are 0 when equal, else inf."""
    expected, found = flat_outputs(expected), flat_outputs(found)
    diffs = {}
    for key, value in expected.items():
        other = found[key]
        if value.dtype.is_floating_point:
            diffs[key] = float((value - other).abs().max()) if value.numel() else 0.0
        else:
            diffs[key] = 0.0 if torch.equal(value, other) else float("inf")
    return diffs
