"""Robustness of a saved model: each input field missing, corrupted, or dropped.

For every input field the model reads, each task's main metric is scored with the field absent
in a share of rows (``MISSING_RATES``) and under each corruption of the field's kind at each
severity (``SEVERITIES``). Corruptions act on raw values, before preprocessing: each row's value
is read as the field's reader reads it (``raw_value``), corrupted, and written back as a cell
the reader reads again (``with_raw_value``: an image through a PNG file, audio through a float
wav, video through a folder of frames, a series or features as a JSON list). A transcribed text
field is corrupted in its audio; a field whose kind has no corruptions gets only its missing
curve. Two MultiBench
metrics (Liang et al., 2021, "MultiBench: Multiscale Benchmarks for Multimodal Representation
Learning"; eval_scripts/robustness.py) summarise each curve of scores ``f_0 .. f_{n-1}`` whose
first point ``f_0`` is the clean score:

- relative robustness, the area under the curve over levels spread evenly on [0, 1]:
  ``RR = sum_i (f_i + f_{i+1}) * d / 2`` with ``d = 1 / (n - 1)`` (MultiBench's 11 noise
  levels 0, 0.1, .., 1 give its step 0.1);
- effective robustness, the gap to a baseline curve ``g`` shifted to the same clean score:
  ``ER = sum_i (f_i - b_i)`` with ``b_i = g_i + (f_0 - g_0)``. MultiBench's baseline is late
  fusion; here it is another run's robustness.json (``reference``), and without one a flat
  baseline (a model no imperfection affects), so ``ER = sum_i (f_i - f_0)``.

MultiBench then min-max normalises each metric across the methods compared
(``maxmin_normalize``); one model's report holds the raw values.

The report (RUN_DIR/robustness.json for a run) is keyed per task, whatever the task count::

    {"split", "rows", "seed", "quarantined": {reason: count}, "reference": path or null,
     "missing_rates": [...], "severities": [...],
     "tasks": {task: {"metric": main metric, "clean": score,
       "missing": {field: [{"rate", "score"}, ...]},
       "noise": {field: {corruption: [{"severity", "score"}, ...]}},
       "relative_robustness": {field: {"missing": x, corruption: x, ...}},
       "effective_robustness": {field: {"missing": x, corruption: x, ...}},
       "contribution": {field: {"score_without", "drop"}}}}}

A score is null where the task cannot score any row (a retrieval task whose query or gallery
field is absent everywhere; retrieval scores only rows with both fields, so its missing curve
is over the rows left), and so is every metric of a curve holding one.
"""

from __future__ import annotations

import itertools
import json
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import soundfile as sf
import torch
from PIL import Image, ImageOps

from polymodal.config import load_config
from polymodal.data.modalities.audio import AudioPreprocessor
from polymodal.data.modalities.image import ImagePreprocessor
from polymodal.data.modalities.tabular import TabularPreprocessor
from polymodal.data.modalities.video import VideoPreprocessor
from polymodal.data.pipeline import (
    SPLITS,
    Example,
    FieldPreprocessor,
    Preprocessor,
    split_positions,
)
from polymodal.data.quarantine import Quarantine, QuarantinedRow
from polymodal.data.sources import Row, index_manifest
from polymodal.data.transcribe import TranscribedTextPreprocessor
from polymodal.errors import DataError
from polymodal.evaluate.corruptions import (
    CORRUPTIONS,
    MISSING_RATES,
    SEVERITIES,
    Corruption,
    Waveform,
    missing_rows,
)
from polymodal.inference import batches
from polymodal.io import write_json
from polymodal.models.model import MultimodalModel
from polymodal.progress import progress_bar

ROBUSTNESS_FILE = "robustness.json"

Scores = dict[str, float | None]  # task -> main metric


@dataclass
class ReadRows:
    """Rows that read cleanly, their examples (same order), where paths start, what was bad."""

    rows: list[Row]
    examples: list[Example]
    base_dir: Path
    quarantine: Quarantine


def read_rows(
    preprocessor: Preprocessor,
    rows: list[Row],
    base_dir: Path,
    quarantine: Quarantine,
    source: str,
) -> ReadRows:
    """Read each row; a bad row is quarantined with its reason, as in ``Preprocessor.read``."""
    kept, examples = [], []
    for row in rows:
        example = preprocessor.read(row, base_dir, source)
        if isinstance(example, QuarantinedRow):
            quarantine.add(example)
        else:
            examples.append(example)
            kept.append(row)
    return ReadRows(kept, examples, base_dir, quarantine)


def read_run_split(run_dir: Path, split: str, preprocessor: Preprocessor) -> ReadRows:
    """The rows of ``split`` re-read from the run's manifest with the model's preprocessor."""
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise DataError(f"{config_path} is missing; pass a folder written by 'polymodal train'")
    config = load_config(config_path)
    quarantine = Quarantine(strict=config.data.strict)
    index = index_manifest(config.data.manifest, quarantine, config.data.split_column)
    positions = split_positions(index, config.data, config.seed, quarantine).get(split)
    if positions is None or not len(positions):
        raise DataError(f"split '{split}' has no rows; splits: {', '.join(SPLITS)}")
    rows = list(index.rows(positions))
    return read_rows(preprocessor, rows, index.base_dir, quarantine, str(index.path))


def relative_robustness(curve: Sequence[float]) -> float:
    """Area under a score curve over evenly spread levels on [0, 1] (MultiBench).

    ``RR = sum_i (f_i + f_{i+1}) * d / 2`` with ``d = 1 / (len(curve) - 1)``.
    """
    if len(curve) < 2:
        raise ValueError(f"a robustness curve needs at least 2 levels, got {len(curve)}")
    step = 1.0 / (len(curve) - 1)
    return float(sum((a + b) * step / 2 for a, b in itertools.pairwise(curve)))


def effective_robustness(curve: Sequence[float], baseline: Sequence[float] | None = None) -> float:
    """Gap to a baseline curve shifted to the same clean score (MultiBench).

    ``ER = sum_i (f_i - b_i)`` with ``b_i = g_i + (f_0 - g_0)``; no ``baseline`` is a flat one.
    """
    f = np.asarray(curve, dtype=float)
    g = np.full_like(f, f[0]) if baseline is None else np.asarray(baseline, dtype=float)
    if g.shape != f.shape:
        raise ValueError(f"the baseline has {len(g)} levels but the curve {len(f)}")
    return float(np.sum(f - (g + (f[0] - g[0]))))


def maxmin_normalize(
    values: Mapping[str, float], lower_is_better: bool = False
) -> dict[str, float]:
    """Scale one metric of several models to [0, 1] (best 1), as MultiBench compares methods."""
    signed = {k: -v if lower_is_better else v for k, v in values.items()}
    low, high = min(signed.values()), max(signed.values())
    span = high - low
    return {k: (v - low) / span if span else 0.0 for k, v in signed.items()}


@torch.no_grad()
def _scores(
    model: MultimodalModel, examples: list[Example], batch_size: int, device: str
) -> Scores:
    """Each task's main metric as ``evaluate_model`` computes it; None: no row it can score."""
    collected: dict[str, dict[str, list[torch.Tensor]]] = {name: {} for name in model.tasks}
    for chunk in batches(examples, batch_size):
        batch = model.preprocessor.collate(chunk).to(device)
        outputs = model(batch)
        for name, task in model.tasks.items():
            for key, value in task.collect(outputs[name], batch).items():
                collected[name].setdefault(key, []).append(value.cpu())
    scores: Scores = {}
    for name, task in model.tasks.items():
        try:
            metrics = task.metrics({k: torch.cat(v) for k, v in collected[name].items()})
        except ValueError:  # no row this task can score
            scores[name] = None
        else:
            scores[name] = float(metrics[task.main_metric])
    return scores


class _Codec(NamedTuple):
    """How a kind's raw value is read from a cell, and written as a cell that reads as it."""

    read: Callable[[Any, Any, Path], Any]  # (cell, field preprocessor, base_dir) -> raw value
    write: Callable[[Any, Path], Any]  # (raw value, scratch path without suffix) -> cell


def _read_image(cell: Any, pre: ImagePreprocessor, base_dir: Path) -> Image.Image:
    """The image file at full size, upright and RGB."""
    with Image.open(pre.resolve(cell, base_dir)) as img:
        return ImageOps.exif_transpose(img).convert("RGB")


def _write_image(image: Image.Image, scratch: Path) -> str:
    path = scratch.with_suffix(".png")
    image.save(path)
    return str(path)


def _audio_reader(pre: Any) -> AudioPreprocessor:
    """The audio reader of a field: its own, or the transcriber's for transcribed text."""
    return pre.transcriber.reader if isinstance(pre, TranscribedTextPreprocessor) else pre


def _read_audio(cell: Any, pre: Any, base_dir: Path) -> Waveform:
    """The samples the field's audio reader decodes (mono, resampled, the evaluation window)."""
    reader = _audio_reader(pre)
    return Waveform(reader.waveform(reader.resolve(cell, base_dir)), reader.sample_rate)


def _write_audio(audio: Waveform, scratch: Path) -> str:
    """A 32-bit float wav: exact samples, none clipped at full scale."""
    path = scratch.with_suffix(".wav")
    sf.write(path, audio.samples, audio.rate, subtype="FLOAT")
    return str(path)


def _read_video(cell: Any, pre: VideoPreprocessor, base_dir: Path) -> list[Image.Image]:
    """The frames the video reader samples for evaluation, fitted to its square."""
    return [Image.fromarray(frame.permute(1, 2, 0).numpy()) for frame in pre.read(cell, base_dir)]


def _write_video(frames: list[Image.Image], scratch: Path) -> str:
    """A folder of PNG frames in name order (the reader keeps them all: at most ``frames``)."""
    scratch.mkdir()
    for i, frame in enumerate(frames):
        frame.save(scratch / f"{i:05d}.png")
    return str(scratch)


def _write_list(array: np.ndarray, scratch: Path) -> list[Any]:
    """The JSON list of an array, NaN written as null."""
    return np.where(np.isnan(array), None, array).tolist()


_AS_IS = _Codec(lambda cell, pre, base_dir: cell, lambda value, scratch: value)
_CODECS = {
    "image": _Codec(_read_image, _write_image),
    "text": _AS_IS,
    "tabular": _AS_IS,  # the cell: the field's {column: value}
    "audio": _Codec(_read_audio, _write_audio),
    "sequence": _Codec(lambda cell, pre, base_dir: pre.series(cell, base_dir), _write_list),
    "features": _Codec(lambda cell, pre, base_dir: pre.array(cell, base_dir), _write_list),
    "video": _Codec(_read_video, _write_video),
}


def raw_kind(pre: FieldPreprocessor) -> str:
    """The kind of raw value a field reads: its kind, but audio for a transcribed text field
    (its cell is an audio file)."""
    return "audio" if isinstance(pre, TranscribedTextPreprocessor) else pre.kind


def field_corruptions(pre: FieldPreprocessor) -> dict[str, Corruption]:
    """The corruptions of a field's raw value by name (none for a kind that has none)."""
    return CORRUPTIONS.get(raw_kind(pre), {})


def raw_value(row: Row, field: str, preprocessor: Preprocessor, base_dir: Path) -> Any:
    """What a corruption of the field takes (see ``polymodal.evaluate.corruptions``), read
    from ``row`` as the field's reader reads it; None where the field is absent."""
    cell = preprocessor.value(field, row)
    if cell is None:
        return None
    pre = preprocessor.fields[field]
    return _CODECS[raw_kind(pre)].read(cell, pre, base_dir)


def with_raw_value(
    row: Row, field: str, preprocessor: Preprocessor, value: Any, scratch: Path
) -> Row:
    """A copy of ``row`` whose field reads as the raw ``value`` (files it needs are written
    at ``scratch`` plus a suffix: a PNG image, a wav, a folder of frames)."""
    pre = preprocessor.fields[field]
    cell = _CODECS[raw_kind(pre)].write(value, scratch)
    out = dict(row)
    if isinstance(pre, TabularPreprocessor):
        out.update(cell)
    else:
        out[preprocessor.schema.columns(field)[0]] = cell
    return out


def _missing(examples: list[Example], field: str, rate: float, seed: int) -> list[Example]:
    """``field`` absent in a share of rows: what reading an absent raw value gives."""
    gone = missing_rows(len(examples), rate, seed)
    return [{**ex, field: None} if i in gone else ex for i, ex in enumerate(examples)]


def corrupted_examples(
    data: ReadRows,
    preprocessor: Preprocessor,
    field: str,
    corruption: str,
    severity: int,
    seed: int,
) -> list[Example]:
    """``data``'s examples with ``field`` corrupted in every row where it is present, then
    re-read by the field's reader; rows without it are left as they are.

    Each call replays the same random draws (rng seeded with ``seed``), row by row. The files
    a corrupted value needs live in a scratch folder for the call.
    """
    pre = preprocessor.fields[field]
    reader = Preprocessor(preprocessor.schema, {field: pre})
    corrupt = field_corruptions(pre)[corruption]
    rng = np.random.default_rng(seed)
    out = []
    with tempfile.TemporaryDirectory(prefix="polymodal-robustness-") as scratch:
        for i, (row, example) in enumerate(zip(data.rows, data.examples, strict=True)):
            if example[field] is None:
                out.append(example)
                continue
            value = corrupt(raw_value(row, field, preprocessor, data.base_dir), severity, rng, pre)
            changed = with_raw_value(row, field, preprocessor, value, Path(scratch) / str(i))
            out.append({**example, field: reader.example(changed, data.base_dir)[field]})
    return out


def _curves(report: Mapping[str, Any]) -> dict[str, dict[str, list[float | None]]]:
    """Each field's score curves (clean score first) from one task's report."""
    curves: dict[str, dict[str, list[float | None]]] = {}
    for field, points in report["missing"].items():
        curves.setdefault(field, {})["missing"] = [p["score"] for p in points]
    for field, corruptions in report["noise"].items():
        for corruption, points in corruptions.items():
            scores = [report["clean"], *(p["score"] for p in points)]
            curves.setdefault(field, {})[corruption] = scores
    return curves


def _complete(curve: list[float | None] | None) -> list[float] | None:
    """The curve, or None where it is unknown or holds a score that could not be computed."""
    if curve is None or any(score is None for score in curve):
        return None
    return [float(score) for score in curve if score is not None]


Summary = dict[str, dict[str, float | None]]  # field -> curve -> value


def _summaries(
    report: dict[str, Any], reference: Mapping[str, Any] | None
) -> tuple[Summary, Summary]:
    """Relative and effective robustness of every curve of one task's report."""
    baselines = None if reference is None else _curves(reference)
    relative: Summary = {}
    effective: Summary = {}
    for field, curves in _curves(report).items():
        relative[field], effective[field] = {}, {}
        for key, scores in curves.items():
            curve = _complete(scores)
            baseline = None if baselines is None else _complete(baselines.get(field, {}).get(key))
            relative[field][key] = None if curve is None else relative_robustness(curve)
            if curve is None or (baselines is not None and baseline is None):
                effective[field][key] = None
            else:
                effective[field][key] = effective_robustness(curve, baseline)
    return relative, effective


def _load_reference(reference: str | Path) -> dict[str, Any]:
    """A baseline's robustness report, checked to use the same missing rates and severities."""
    path = Path(reference)
    path = path / ROBUSTNESS_FILE if path.is_dir() else path
    if not path.is_file():
        raise DataError(f"{path} is missing; pass a robustness.json or the run folder holding one")
    report = json.loads(path.read_text(encoding="utf-8"))
    levels = (report.get("missing_rates"), report.get("severities"))
    if levels != (list(MISSING_RATES), list(SEVERITIES)):
        raise DataError(
            f"{path} was scored at missing rates {levels[0]} and severities {levels[1]}; "
            f"effective robustness needs {list(MISSING_RATES)} and {list(SEVERITIES)}"
        )
    return report


@dataclass
class _Measured:
    """Scores per task: clean, per field and missing rate, per field, corruption and severity."""

    clean: Scores
    missing: dict[str, dict[float, Scores]]
    noise: dict[str, dict[str, dict[int, Scores]]]


def _measure(
    model: MultimodalModel, data: ReadRows, seed: int, batch_size: int, device: str
) -> _Measured:
    """Score every condition; rate 0 is the clean examples, so it reuses the clean score."""
    preprocessor = model.preprocessor
    clean = _scores(model, data.examples, batch_size, device)
    measured = _Measured(clean, {f: {0.0: clean} for f in model.inputs}, {})
    conditions: list[tuple[str, str | None, float]] = [
        (f, None, rate) for f in model.inputs for rate in MISSING_RATES[1:]
    ]
    for field in model.inputs:
        for corruption in field_corruptions(preprocessor.fields[field]):
            conditions += [(field, corruption, k) for k in SEVERITIES]
    for field, corruption, level in progress_bar(conditions, "robustness"):
        if corruption is None:
            examples = _missing(data.examples, field, level, seed)
            measured.missing[field][level] = _scores(model, examples, batch_size, device)
            continue
        severity = int(level)
        examples = corrupted_examples(data, preprocessor, field, corruption, severity, seed)
        by_severity = measured.noise.setdefault(field, {}).setdefault(corruption, {})
        by_severity[severity] = _scores(model, examples, batch_size, device)
    return measured


def _task_report(name: str, metric: str, measured: _Measured, reference: Any) -> dict[str, Any]:
    """One task's part of the report (the module doc shows its keys)."""
    clean = measured.clean[name]
    report: dict[str, Any] = {
        "metric": metric,
        "clean": clean,
        "missing": {
            field: [{"rate": rate, "score": scores[name]} for rate, scores in by_rate.items()]
            for field, by_rate in measured.missing.items()
        },
        "noise": {
            field: {
                corruption: [{"severity": k, "score": s[name]} for k, s in by_severity.items()]
                for corruption, by_severity in by_corruption.items()
            }
            for field, by_corruption in measured.noise.items()
        },
    }
    report["relative_robustness"], report["effective_robustness"] = _summaries(report, reference)
    report["contribution"] = {}
    for field, by_rate in measured.missing.items():
        without = by_rate[1.0][name]
        drop = None if without is None or clean is None else clean - without
        report["contribution"][field] = {"score_without": without, "drop": drop}
    return report


def evaluate_robustness(
    source: str | Path | MultimodalModel,
    rows: list[Row] | None = None,
    split: str = "test",
    seed: int = 0,
    *,
    base_dir: str | Path = ".",
    reference: str | Path | None = None,
    batch_size: int = 256,
    device: str = "cpu",
) -> dict[str, Any]:
    """Score a model with each input field missing, corrupted and dropped (see the module doc).

    ``source`` is a run folder (its best/ model scores ``split`` re-read from its manifest, and
    the report goes to RUN_DIR/robustness.json) or a model with raw ``rows`` (relative paths
    start at ``base_dir``; ``split`` only labels them). ``reference`` is the baseline run (or
    its robustness.json) for effective robustness, scored at the same levels. A given model
    must already be on ``device``.
    """
    if isinstance(source, MultimodalModel):
        if rows is None:
            raise ValueError("pass the rows to score with a model (or pass a run folder)")
        model, run_dir = source, None
        data = read_rows(model.preprocessor, rows, Path(base_dir), Quarantine(), "rows")
    else:
        if rows is not None:
            raise ValueError("a run folder's rows come from its manifest; pass rows with a model")
        run_dir = Path(source)
        model = MultimodalModel.from_pretrained(run_dir / "best", device=device)
        data = read_run_split(run_dir, split, model.preprocessor)
    if not data.examples:
        raise DataError(f"no row of split '{split}' could be read")
    baseline = None if reference is None else _load_reference(reference)
    was_training = model.training
    model.eval()
    try:
        measured = _measure(model, data, seed, batch_size, device)
    finally:
        model.train(was_training)
    tasks = {}
    for name, task in model.tasks.items():
        ref_task = None if baseline is None else baseline["tasks"].get(name)
        if baseline is not None and ref_task is None:
            raise DataError(f"the reference {reference} has no task '{name}'")
        tasks[name] = _task_report(name, task.main_metric, measured, ref_task)
    result = {
        "split": split,
        "rows": len(data.examples),
        "seed": seed,
        "quarantined": data.quarantine.counts(),
        "reference": None if reference is None else str(reference),
        "missing_rates": list(MISSING_RATES),
        "severities": list(SEVERITIES),
        "tasks": tasks,
    }
    if run_dir is not None:
        write_json(run_dir / ROBUSTNESS_FILE, result)
    return result
