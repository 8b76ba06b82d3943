"""``polymodal eval RUN_DIR --report``: a run's report as one self-contained HTML page.

RUN_DIR/report/ gets index.html (figures and thumbnails inline as data URIs; no external
scripts, styles or fonts, so it reads offline), results.json (the numbers behind it) and
results.md (its tables in markdown).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image

from polymodal.config import RunConfig, load_config
from polymodal.data.dataset import workers_for
from polymodal.data.pipeline import Example
from polymodal.data.schema import Batch
from polymodal.data.sources import LINE_KEY, Row
from polymodal.errors import DataError
from polymodal.evaluate.confidence import (
    RESAMPLES,
    Interval,
    bootstrap_mean,
    classification_intervals,
    numeric_leaves,
    regression_intervals,
    retrieval_intervals,
)
from polymodal.evaluate.run import read_rows, read_split
from polymodal.inference import batches, task_metrics
from polymodal.io import atomic_write_text, write_json
from polymodal.models.fusion import Attention
from polymodal.models.model import MultimodalModel
from polymodal.tasks import VQA, Caption, Classify, Regress, Retrieve, Task

SAMPLES = 12  # test rows shown with their predictions
QUERIES = 4  # retrieval queries shown with their top items
TOP_K = 5
MAX_CURVES = 10  # one-vs-rest ROC / PR curves drawn (every class is in the table)
PLOT_STYLE = {
    "svg.fonttype": "path",  # glyphs as outlines: no font files needed to read the figures
    "svg.hashsalt": "polymodal",  # stable element ids, so a report is reproducible
    "text.parse_math": False,  # labels from data ("$5 off") are shown as written
    "font.size": 9,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;
 color:#1f2328;background:#f6f8fa}
header{background:#24292f;color:#fff;padding:16px 32px}
header h1{margin:0 0 6px;font-size:22px}
nav a{color:#c9d1d9;margin-right:14px;text-decoration:none}
main{max-width:1180px;margin:0 auto;padding:4px 32px 48px}
section{background:#fff;border:1px solid #d0d7de;border-radius:8px;padding:14px 20px;margin:16px 0}
h2{margin:0 0 8px;font-size:18px}
h3{font-size:15px;margin:14px 0 6px}
table{border-collapse:collapse;margin:6px 0;font-variant-numeric:tabular-nums}
th,td{border:1px solid #d0d7de;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f6f8fa}
figure{margin:8px 0}
figure img{max-width:100%;height:auto}
pre{background:#f6f8fa;padding:8px;overflow:auto}
.note{color:#57606a}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(230px,1fr));gap:12px}
.card{border:1px solid #d0d7de;border-radius:6px;padding:8px;border-left-width:5px}
.ok{border-left-color:#2da44e}
.wrong{border-left-color:#cf222e}
.name{font-size:12px;color:#57606a}
.absent{color:#8c959f;font-style:italic}
img.thumb{width:72px;height:72px;image-rendering:pixelated;border:1px solid #d0d7de}
.query{display:flex;gap:10px;align-items:flex-start;margin:12px 0;flex-wrap:wrap}
.item{width:128px;font-size:12px;padding:4px;border:1px solid #d0d7de;border-radius:4px}
.item.match{outline:3px solid #2da44e}
"""


@dataclass
class TaskOutputs:
    """A task's ``collect`` output over a split, and the example index of each collected row."""

    collected: dict[str, torch.Tensor]
    rows: list[int]


def _kept(task: Task, outputs: Any, batch: Batch) -> torch.Tensor:
    """Which rows of ``batch`` the task's ``collect`` keeps."""
    if isinstance(task, Classify):
        return batch.present[task.target]
    if isinstance(task, Regress | VQA):
        return task.kept(batch)
    if isinstance(task, Caption):
        return task.kept(outputs, batch)
    return outputs["query_present"] & outputs["gallery_present"]


@torch.no_grad()
def collect_outputs(
    model: MultimodalModel, examples: list[Example], batch_size: int = 256
) -> tuple[dict[str, TaskOutputs], np.ndarray | None]:
    """Each task's outputs over ``examples``; (N, M) attention fusion weights, else None."""
    parts: dict[str, dict[str, list[torch.Tensor]]] = {name: {} for name in model.tasks}
    rows: dict[str, list[int]] = {name: [] for name in model.tasks}
    weights = []
    offset = 0
    for chunk in batches(examples, batch_size):
        batch = model.preprocessor.collate(chunk)
        outputs = model(batch)
        for name, task in model.tasks.items():
            for key, value in task.collect(outputs[name], batch).items():
                parts[name].setdefault(key, []).append(value)
            rows[name] += (_kept(task, outputs[name], batch).nonzero().squeeze(1) + offset).tolist()
        if isinstance(model.fusion, Attention):
            present = {name: batch.present[name] for name in model.encoders}
            weights.append(model.fusion.modality_weights(model.encode(batch), present))
        offset += len(chunk)
    tasks = {
        name: TaskOutputs({k: torch.cat(v) for k, v in parts[name].items()}, rows[name])
        for name in model.tasks
    }
    return tasks, torch.cat(weights).numpy() if weights else None


def _ranked(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """True and false positives above each distinct score threshold, highest first."""
    order = np.argsort(-scores, kind="mergesort")
    ranked, hits = scores[order], positive[order].astype(np.float64)
    last = np.r_[np.nonzero(np.diff(ranked))[0], len(ranked) - 1]
    tps = np.cumsum(hits)[last]
    return tps, last + 1 - tps


def roc_points(scores: Any, positive: Any) -> tuple[np.ndarray, np.ndarray, float]:
    """False and true positive rates per threshold, and the area under the ROC curve."""
    tps, fps = _ranked(np.asarray(scores), np.asarray(positive, dtype=bool))
    tpr, fpr = np.r_[0.0, tps] / tps[-1], np.r_[0.0, fps] / fps[-1]
    return fpr, tpr, float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def pr_points(scores: Any, positive: Any) -> tuple[np.ndarray, np.ndarray, float]:
    """Recall and precision per threshold, and average precision (precision x recall gain)."""
    tps, fps = _ranked(np.asarray(scores), np.asarray(positive, dtype=bool))
    precision, recall = tps / (tps + fps), tps / tps[-1]
    return recall, precision, float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        if math.isfinite(value) and (value == 0 or 1e-3 <= abs(value) < 1e4):
            return f"{value:.4f}"
        return f"{value:.3g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_cell(v) for v in value)
    return str(value)


@dataclass
class Table:
    header: list[str]
    rows: list[list[Any]]
    caption: str = ""

    def html(self) -> str:
        caption = f"<h3>{html.escape(self.caption)}</h3>" if self.caption else ""
        head = "".join(f"<th>{html.escape(h)}</th>" for h in self.header)
        head = f"<thead><tr>{head}</tr></thead>" if any(self.header) else ""  # key-value tables
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row) + "</tr>"
            for row in self.rows
        )
        return f"{caption}<table>{head}<tbody>{body}</tbody></table>"

    def markdown(self) -> str:
        def line(cells: Sequence[Any]) -> str:
            text = (_cell(c).replace("|", "\\|").replace("\n", " ") for c in cells)
            return "| " + " | ".join(text) + " |"

        lines = [line(self.header), "|" + " --- |" * len(self.header)]
        lines += [line(row) for row in self.rows]
        caption = f"### {self.caption}\n\n" if self.caption else ""
        return caption + "\n".join(lines)


@dataclass
class Section:
    """A titled part of the report: tables (in HTML and markdown) and HTML-only pieces."""

    title: str
    parts: list[str | Table] = field(default_factory=list)

    def html(self, anchor: str) -> str:
        body = "".join(p.html() if isinstance(p, Table) else p for p in self.parts)
        return f'<section id="{anchor}"><h2>{html.escape(self.title)}</h2>{body}</section>'

    def markdown(self) -> str:
        """The title and tables; empty where the section has no table."""
        tables = [p.markdown() for p in self.parts if isinstance(p, Table)]
        return "\n\n".join([f"## {self.title}", *tables]) if tables else ""


def _note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def _figure(fig: Figure, alt: str) -> str:
    """The figure as an <img> holding an SVG data URI."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<figure><img src="data:image/svg+xml;base64,{data}" alt="{html.escape(alt)}"></figure>'


def _thumbnail(pixels: torch.Tensor, alt: str) -> str:
    """A (3, H, W) uint8 image as an <img> holding a PNG data URI."""
    buffer = io.BytesIO()
    Image.fromarray(pixels.permute(1, 2, 0).numpy()).save(buffer, format="PNG")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img class="thumb" src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def _input(model: MultimodalModel, name: str, example: Example, row: Row) -> str:
    """One input field's value as HTML: a thumbnail, the text, or the tabular columns."""
    if example.get(name) is None:
        return '<span class="absent">(absent)</span>'
    kind = model.preprocessor.schema.fields[name].kind
    if kind == "image":
        return _thumbnail(example[name], str(row.get(name, name)))
    if kind == "tabular":
        columns = model.preprocessor.fields[name].columns  # type: ignore[attr-defined]
        return html.escape(", ".join(f"{c}={row.get(c)}" for c in columns))
    return html.escape(str(row.get(name, "")))


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as {dotted key: value}."""
    if not isinstance(value, Mapping):
        return {prefix[:-1]: value}
    flat: dict[str, Any] = {}
    for key, item in value.items():
        flat.update(_flat(item, f"{prefix}{key}."))
    return flat


def _summary(
    config: RunConfig,
    model: MultimodalModel,
    config_text: str,
    results: dict[str, Any],
    split: str,
    rows: int,
) -> Section:
    facts = [
        ["run", config.name],
        ["split", f"{split} ({rows} rows)"],
        ["best epoch", results.get("best_epoch")],
        ["validation score", results.get("val_score")],
        ["training seconds", results.get("train_seconds")],
        ["inputs", model.inputs],
        ["fusion", config.model.fusion.type if model.fusion is not None else None],
        ["tasks", list(model.tasks)],
        ["quarantined rows", sum(results.get("quarantined", {}).values())],
    ]
    config_html = f"<pre>{html.escape(config_text)}</pre>"
    details = f"<details><summary>config.yaml</summary>{config_html}</details>"
    return Section("Summary", [Table(["", ""], facts), details])


def _training(history: list[dict[str, Any]], best_epoch: int | None) -> Section:
    epochs = [h["epoch"] for h in history]
    fig = Figure(figsize=(8, 2.8), layout="constrained")
    loss_ax, val_ax = fig.subplots(1, 2)
    loss_ax.plot(epochs, [h["train_loss"] for h in history], marker="o")
    loss_ax.set(title="train loss", xlabel="epoch")
    has_val = any(h.get("val") for h in history)
    if has_val:
        val_ax.plot(epochs, [h["val_score"] for h in history], marker="o", color="C1")
        if best_epoch is not None:
            val_ax.axvline(best_epoch, ls="--", color="grey", label=f"best (epoch {best_epoch})")
            val_ax.legend()
        val_ax.set(title="validation score", xlabel="epoch")
    else:
        val_ax.set_axis_off()
        val_ax.text(0.5, 0.5, "no validation split", ha="center")
    for ax in (loss_ax, val_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    columns = {"epoch": "epoch", "train_loss": "train loss", "val_score": "validation score"}
    columns |= {"lr": "learning rate", "seconds": "seconds"}
    if not has_val:
        del columns["val_score"]  # without validation rows there is no score
    table = Table(list(columns.values()), [[h[k] for k in columns] for h in history])
    return Section("Training", [_figure(fig, "training curves"), table])


def _metrics_table(metrics: dict[str, Any], intervals: dict[str, Any]) -> Table:
    values = _flat(metrics)
    bounds = {k: v for k, v in _flat(intervals).items() if isinstance(v, Interval)}
    rows = []
    for path in numeric_leaves(metrics):  # every number, shown as reported (ints stay ints)
        interval = bounds.get(path)
        rows.append(
            [path, values[path], *((interval.low, interval.high) if interval else ("", ""))]
        )
    return Table(["metric", "value", "95% CI low", "95% CI high"], rows, "Metrics")


def _confusion(labels: list[str], matrix: list[list[int]]) -> list[str | Table]:
    counts = np.asarray(matrix)
    size = min(9.0, 1.6 + 0.45 * len(labels))
    fig = Figure(figsize=(size, size * 0.85), layout="constrained")
    ax = fig.subplots()
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, label="share of the true class")
    ticks = range(len(labels))
    ax.set_xticks(ticks, labels, rotation=45, ha="right")
    ax.set_yticks(ticks, labels)
    ax.set(xlabel="predicted", ylabel="true", title="confusion matrix")
    ax.grid(False)
    if len(labels) <= 20:
        for (i, j), count in np.ndenumerate(counts):
            colour = "white" if rates[i, j] > 0.5 else "black"
            ax.text(j, i, str(count), ha="center", va="center", color=colour)
    table = Table(
        ["true \\ predicted", *labels],
        [[label, *row] for label, row in zip(labels, matrix, strict=True)],
        "Confusion matrix",
    )
    return [_figure(fig, "confusion matrix"), table]


def _roc_pr(labels: list[str], outputs: TaskOutputs) -> list[str | Table]:
    """ROC and precision-recall curves: the second class if binary, else one-vs-rest."""
    probs, targets = outputs.collected["probs"].numpy(), outputs.collected["targets"].numpy()
    classes = [1] if len(labels) == 2 else list(range(len(labels)))
    rows, curves = [], []
    for c in classes:
        positive = targets == c
        if positive.all() or not positive.any():
            rows.append([labels[c], int(positive.sum()), None, None])
            continue
        roc, pr = roc_points(probs[:, c], positive), pr_points(probs[:, c], positive)
        rows.append([labels[c], int(positive.sum()), roc[2], pr[2]])
        curves.append((labels[c], roc, pr))
    table = Table(["positive class", "positives", "ROC AUC", "average precision"], rows, "")
    if not curves:
        return [_note("ROC and PR curves need positive and negative examples of a class."), table]
    fig = Figure(figsize=(8, 3.2), layout="constrained")
    roc_ax, pr_ax = fig.subplots(1, 2)
    for label, (fpr, tpr, auc), (recall, precision, ap) in curves[:MAX_CURVES]:
        roc_ax.plot(fpr, tpr, label=f"{label} (AUC {auc:.3f})")
        pr_ax.step(
            np.r_[0.0, recall],
            np.r_[precision[0], precision],
            where="pre",
            label=f"{label} (AP {ap:.3f})",
        )
    roc_ax.plot([0, 1], [0, 1], ls=":", color="grey")
    roc_ax.set(title="ROC", xlabel="false positive rate", ylabel="true positive rate")
    pr_ax.set(title="precision-recall", xlabel="recall", ylabel="precision", ylim=(0, 1.02))
    for ax in (roc_ax, pr_ax):
        ax.legend(fontsize=7)
    how = "" if len(labels) == 2 else "one-vs-rest, "
    table.caption = f"ROC and precision-recall ({how}positive class named)"
    return [_figure(fig, "ROC and precision-recall curves"), table]


def _sample_rows(count: int, wanted: int, seed: int) -> list[int]:
    picked = np.random.default_rng(seed).choice(count, min(wanted, count), replace=False)
    return sorted(int(i) for i in picked)


@torch.no_grad()
def _samples(
    model: MultimodalModel, examples: list[Example], rows: dict[int, Row], seed: int
) -> Section:
    """A dozen rows: inputs, and per classification task truth, prediction and probability."""
    chosen = [examples[i] for i in _sample_rows(len(examples), SAMPLES, seed)]
    outputs = model(model.preprocessor.collate(chosen))
    classify = {n: t for n, t in model.tasks.items() if isinstance(t, Classify)}
    cards = []
    for i, example in enumerate(chosen):
        row = rows.get(int(example[LINE_KEY]), {})
        parts = [
            f'<div><span class="name">{html.escape(name)}</span><br>'
            f"{_input(model, name, example, row)}</div>"
            for name in model.inputs
        ]
        verdicts = []
        for name, task in classify.items():
            predicted = task.postprocess(outputs[name], i)
            label = predicted["label"]
            truth = example.get(task.target)
            true_label = None if truth is None else task.labels[int(truth)]
            if true_label is not None:
                verdicts.append(true_label == label)
            parts.append(
                f'<div><span class="name">{html.escape(name)}</span><br>'
                f"truth <b>{html.escape(_cell(true_label))}</b>, predicted "
                f"<b>{html.escape(label)}</b> (p={predicted['probabilities'][label]:.3f})</div>"
            )
        state = "ok" if all(verdicts) else "wrong"
        cards.append(f'<div class="card {state}">{"".join(parts)}</div>')
    note = _note(f"{len(chosen)} rows picked at random (seed {seed}); green: every task right.")
    return Section("Sample predictions", [note, f'<div class="grid">{"".join(cards)}</div>'])


def _caption_examples(
    model: MultimodalModel,
    task: Caption,
    outputs: TaskOutputs,
    examples: list[Example],
    rows: dict[int, Row],
    seed: int,
) -> str:
    """A dozen rows: the image, the generated text with its score, the references."""
    generated, references = task.captions(outputs.collected), task.references(outputs.collected)
    scores = outputs.collected["scores"].tolist()
    lines = []
    for i in _sample_rows(len(generated), SAMPLES, seed):
        example = examples[outputs.rows[i]]
        image = _input(model, task.image, example, rows.get(int(example[LINE_KEY]), {}))
        listed = "".join(f"<li>{html.escape(text)}</li>" for text in references[i])
        lines.append(
            f"<tr><td>{image}</td><td><b>{html.escape(generated[i])}</b><br>"
            f'<span class="name">score {scores[i]:.3f}</span></td><td><ul>{listed}</ul></td></tr>'
        )
    head = f"<th>{html.escape(task.image)}</th><th>generated</th><th>references</th>"
    return (
        f"<h3>Generated {html.escape(task.target)} beside the references</h3>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(lines)}</tbody></table>"
    )


def _retrieval_examples(
    model: MultimodalModel,
    task: Retrieve,
    outputs: TaskOutputs,
    examples: list[Example],
    rows: dict[int, Row],
    seed: int,
) -> str:
    """A few queries, each with its top items from the gallery (the true match outlined)."""

    def shown(name: str, index: int) -> str:
        example = examples[outputs.rows[index]]
        return _input(model, name, example, rows.get(int(example[LINE_KEY]), {}))

    similarity = outputs.collected["query"] @ outputs.collected["gallery"].T
    top = similarity.topk(min(TOP_K, similarity.shape[1]), dim=1)
    blocks = []
    for q in _sample_rows(len(similarity), QUERIES, seed):
        rank = int((similarity[q] > similarity[q, q]).sum()) + 1
        items = [
            f'<div class="item{" match" if j == q else ""}">{shown(task.gallery, j)}'
            f"<br>#{r} score {score:.3f}</div>"
            for r, (score, j) in enumerate(
                zip(top.values[q].tolist(), top.indices[q].tolist(), strict=True), start=1
            )
        ]
        blocks.append(
            f'<div class="query"><div class="item"><span class="name">query '
            f"({html.escape(task.query)}); true match at rank {rank}</span><br>"
            f"{shown(task.query, q)}</div>{''.join(items)}</div>"
        )
    gallery, query = html.escape(task.gallery), html.escape(task.query)
    return f"<h3>Top {TOP_K} {gallery} items per {query} query</h3>{''.join(blocks)}"


def mean_fusion_weights(
    model: MultimodalModel, weights: np.ndarray | None
) -> dict[str, float] | None:
    """Mean attention weight per modality over rows with some input present (None if no weights)."""
    if weights is None:
        return None
    fused = weights[weights.sum(axis=1) > 0]
    mean = fused.mean(axis=0) if len(fused) else np.zeros(weights.shape[1])
    fields = model.fusion.fields  # type: ignore[union-attr]
    return {name: float(w) for name, w in zip(fields, mean, strict=True)}


def _fusion(kind: str, means: dict[str, float] | None) -> Section:
    if means is None:
        return Section(
            "Fusion weights", [_note(f"fusion '{kind}' has no per-row modality weights")]
        )
    fig = Figure(figsize=(1.5 + 0.9 * len(means), 2.8), layout="constrained")
    ax = fig.subplots()
    ax.bar(list(means), list(means.values()), color=[f"C{i}" for i in range(len(means))])
    ax.set(ylabel="mean attention weight", ylim=(0, 1), title="fusion weight per modality")
    note = _note("Mean Attention.modality_weights over the rows with an input present.")
    table = Table(["modality", "mean weight"], [list(kv) for kv in means.items()])
    return Section("Fusion weights", [note, _figure(fig, "fusion weights per modality"), table])


def robustness_tasks(robustness: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """One robustness result per task, from either {"tasks": {name: result}} or one result.

    Per-task results in the first form take the outer "split" unless they name their own.
    """
    if "tasks" in robustness:
        outer = {"split": robustness.get("split")}
        return {name: {**outer, **result} for name, result in robustness["tasks"].items()}
    return {str(robustness.get("task", "")): robustness}


def _curve_table(
    header: list[str], curves: dict[tuple[str, ...], list[dict[str, Any]]], level: str, caption: str
) -> Table:
    """One row per curve, one column per ``level`` value (rate or severity) holding its score."""
    levels = list(dict.fromkeys(p[level] for points in curves.values() for p in points))
    rows = []
    for keys, points in curves.items():
        scores = {p[level]: p["score"] for p in points}
        rows.append([*keys, *(scores.get(x) for x in levels)])
    return Table([*header, *(f"{x:g}" for x in levels)], rows, caption)


def _plot_missing(ax: Any, missing: Mapping[str, Any], metric: str, clean: Any) -> None:
    for name, points in missing.items():
        ax.plot([p["rate"] for p in points], [p["score"] for p in points], marker="o", label=name)
    if clean is not None:
        ax.axhline(clean, ls="--", color="grey", label="clean")
    ax.set(title="score vs missing rate", xlabel="share of rows missing it", ylabel=metric)
    ax.legend(fontsize=7)


def _plot_noise(
    ax: Any, name: str, corruptions: Mapping[str, Any], metric: str, clean: Any
) -> None:
    for corruption, points in corruptions.items():
        severity, score = [p["severity"] for p in points], [p["score"] for p in points]
        ax.plot(severity, score, marker="o", label=corruption)
    if clean is not None:
        ax.axhline(clean, ls="--", color="grey", label="clean")
    ax.set(title=f"{name}: score vs corruption severity", xlabel="severity", ylabel=metric)
    ax.legend(fontsize=7)


def robustness_figure(result: Mapping[str, Any]) -> Figure:
    """One task's robustness on one figure: the missing-rate curves, then each field's noises."""
    metric, clean = str(result.get("metric", "score")), result.get("clean")
    noise = result.get("noise") or {}
    fig = Figure(figsize=(4.2 * (1 + len(noise)), 3.2), layout="constrained")
    axes = fig.subplots(1, 1 + len(noise), squeeze=False).ravel()
    _plot_missing(axes[0], result.get("missing") or {}, metric, clean)
    for ax, (name, corruptions) in zip(axes[1:], noise.items(), strict=True):
        _plot_noise(ax, name, corruptions, metric, clean)
    return fig


def _missing_parts(missing: Mapping[str, Any], metric: str, clean: Any) -> list[str | Table]:
    fig = Figure(figsize=(5, 3), layout="constrained")
    _plot_missing(fig.subplots(), missing, metric, clean)
    table = _curve_table(
        ["modality \\ missing rate"],
        {(name,): points for name, points in missing.items()},
        "rate",
        f"Missing modalities ({metric})",
    )
    return [_figure(fig, "score vs missing rate per modality"), table]


def _noise_parts(noise: Mapping[str, Any], metric: str, clean: Any) -> list[str | Table]:
    cols = min(3, len(noise))
    fig = Figure(figsize=(3.4 * cols, 2.8 * math.ceil(len(noise) / cols)), layout="constrained")
    axes = fig.subplots(math.ceil(len(noise) / cols), cols, squeeze=False).ravel()
    for ax, (name, corruptions) in zip(axes, noise.items(), strict=False):
        _plot_noise(ax, name, corruptions, metric, clean)
    for ax in axes[len(noise) :]:
        ax.set_axis_off()
    table = _curve_table(
        ["modality", "corruption \\ severity"],
        {(n, c): points for n, corruptions in noise.items() for c, points in corruptions.items()},
        "severity",
        f"Corruptions ({metric})",
    )
    return [_figure(fig, "score vs corruption severity per modality"), table]


def _robustness(task: str, result: Mapping[str, Any]) -> Section:
    metric, clean = str(result.get("metric", "score")), result.get("clean")
    facts = [["split", result.get("split")], ["metric", metric], ["clean", clean]]
    parts: list[str | Table] = [Table(["", ""], facts)]
    if result.get("missing"):
        parts += _missing_parts(result["missing"], metric, clean)
    if result.get("noise"):
        parts += _noise_parts(result["noise"], metric, clean)
    if result.get("contribution"):
        rows = [
            [n, c.get("score_without"), c.get("drop")] for n, c in result["contribution"].items()
        ]
        header = ["modality", f"{metric} without it", "drop"]
        parts.append(Table(header, rows, "Modality contribution"))
    for key in ("relative_robustness", "effective_robustness"):
        if result.get(key):
            caption = key.replace("_", " ").capitalize()
            parts.append(Table(["", ""], [list(kv) for kv in _flat(result[key]).items()], caption))
    return Section(f"Robustness: {task}" if task else "Robustness", parts)


def _efficiency(efficiency: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> Section:
    if isinstance(efficiency, Mapping):
        return Section(
            "Efficiency", [Table(["", ""], [list(kv) for kv in _flat(efficiency).items()])]
        )
    flat = [_flat(row) for row in efficiency]
    header = list(dict.fromkeys(key for row in flat for key in row))
    return Section("Efficiency", [Table(header, [[row.get(k) for k in header] for row in flat])])


def _slices(column: str, result: Mapping[str, Any]) -> Section:
    """Per task, a table of every metric (with its interval, where there is one) per value."""
    section = Section(f"Slices by {column}", [_note(f"{len(result)} values of column {column}")])
    tasks = dict.fromkeys(name for part in result.values() for name in part["tasks"])
    for task in tasks:
        leaves = {}
        for value, part in result.items():
            flat = _flat(part["tasks"][task])  # numbers as reported (ints stay ints)
            numbers = {path: flat[path] for path in numeric_leaves(part["tasks"][task])}
            leaves[value] = numbers, _flat(part["intervals"].get(task, {}))
        metrics = list(dict.fromkeys(path for numbers, _ in leaves.values() for path in numbers))
        rows = []
        for value, (numbers, bounds) in leaves.items():
            cells = []
            for path in metrics:
                low, high = bounds.get(f"{path}.low"), bounds.get(f"{path}.high")
                shown = _cell(numbers.get(path))
                cells.append(f"{shown} [{_cell(low)}, {_cell(high)}]" if low is not None else shown)
            rows.append([value, result[value]["rows"], *cells])
        section.parts.append(Table(["value", "rows", *metrics], rows, f"{task} (95% CI)"))
    return section


def task_intervals(task: Task, outputs: TaskOutputs, resamples: int, seed: int) -> dict[str, Any]:
    """Bootstrap intervals of a task's headline metrics, keyed as its metrics (none for a
    task without them: captions, whose corpus-level CIDEr-D a resample would re-score)."""
    collected = outputs.collected
    if isinstance(task, VQA):  # both are means over the questions
        return {
            metric: bootstrap_mean(collected[key].double().numpy(), resamples, seed=seed)
            for metric, key in (("vqa_accuracy", "vqa"), ("accuracy", "consensus"))
        }
    if isinstance(task, Classify):
        return classification_intervals(
            collected["targets"], collected["probs"], resamples, seed=seed
        )
    if isinstance(task, Regress):
        return regression_intervals(
            collected["targets"],
            collected["predicted"],
            collected["present"],
            task.targets,
            resamples,
            seed=seed,
        )
    if not isinstance(task, Retrieve):
        return {}
    similarity = collected["query"] @ collected["gallery"].T
    directions = (f"{task.query}_to_{task.gallery}", f"{task.gallery}_to_{task.query}")
    return retrieval_intervals(similarity, directions=directions, resamples=resamples, seed=seed)


def json_ready(value: Any) -> Any:
    """``value`` with every Interval as its dict."""
    if isinstance(value, Interval):
        return value.to_dict()
    if isinstance(value, dict):
        return {key: json_ready(item) for key, item in value.items()}
    return value


def _page(title: str, sections: list[Section]) -> str:
    nav = "".join(f'<a href="#s{i}">{html.escape(s.title)}</a>' for i, s in enumerate(sections))
    body = "".join(s.html(f"s{i}") for i, s in enumerate(sections))
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<title>{html.escape(title)}</title><link rel="icon" href="data:,">'
        f"<style>{CSS}</style></head><body><header><h1>{html.escape(title)}</h1>"
        f"<nav>{nav}</nav></header><main>{body}</main></body></html>\n"
    )


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def write_report(
    run_dir: str | Path,
    robustness: Mapping[str, Any] | None = None,
    efficiency: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
    split: str = "test",
    resamples: int = RESAMPLES,
    seed: int = 0,
    batch_size: int = 256,
    slices: Mapping[str, Any] | None = None,
) -> Path:
    """Score RUN_DIR/best on ``split``; write RUN_DIR/report/ index.html, results.json, results.md.

    ``robustness`` is a robustness result (or {"tasks": {task: result}}); ``efficiency`` a dict
    (or a list of dicts, one table row each); ``slices`` the metrics per value of manifest
    columns (``polymodal.evaluate.slices``). All are shown and kept in results.json. Returns
    the path of index.html.
    """
    run_dir = Path(run_dir)
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise DataError(f"{config_path} is missing; pass a folder written by 'polymodal train'")
    config = load_config(config_path)
    model = MultimodalModel.from_pretrained(run_dir / "best")
    data = read_split(config, model, split)
    examples, rows = read_rows(data, split, workers_for(config.data))
    results = _read_json(run_dir / "results.json")
    outputs, weights = collect_outputs(model, examples, batch_size)
    with torch.no_grad():
        metrics = {
            name: task_metrics(task, outputs[name].collected) for name, task in model.tasks.items()
        }
    intervals = {
        name: task_intervals(task, outputs[name], resamples, seed) if outputs[name].rows else {}
        for name, task in model.tasks.items()
    }
    fusion_weights = mean_fusion_weights(model, weights)
    history = _read_jsonl(run_dir / "metrics.jsonl")
    config_text = config_path.read_text(encoding="utf-8")
    with matplotlib.rc_context(PLOT_STYLE):
        sections = [_summary(config, model, config_text, results, split, len(examples))]
        if history:
            sections.append(_training(history, results.get("best_epoch")))
        for name, task in model.tasks.items():
            section = Section(f"Task: {name}", [_metrics_table(metrics[name], intervals[name])])
            if isinstance(task, Classify):
                section.parts += _confusion(task.labels, metrics[name]["confusion_matrix"])
                section.parts += _roc_pr(task.labels, outputs[name])
            elif isinstance(task, Retrieve):
                section.parts.append(
                    _retrieval_examples(model, task, outputs[name], examples, rows, seed)
                )
            elif isinstance(task, Caption):
                section.parts.append(
                    _caption_examples(model, task, outputs[name], examples, rows, seed)
                )
            sections.append(section)
        if any(isinstance(task, Classify) for task in model.tasks.values()):
            sections.append(_samples(model, examples, rows, seed))
        if model.fusion is not None:
            sections.append(_fusion(config.model.fusion.type, fusion_weights))
        if robustness:
            sections += [_robustness(t, r) for t, r in robustness_tasks(robustness).items()]
        if efficiency:
            sections.append(_efficiency(efficiency))
        sections += [_slices(column, result) for column, result in (slices or {}).items()]
    out = run_dir / "report"
    out.mkdir(exist_ok=True)
    title = f"polymodal report: {config.name}"
    summary = {
        "run": config.name,
        "split": split,
        "rows": len(examples),
        "tasks": metrics,
        "intervals": json_ready(intervals),
        "fusion_weights": fusion_weights,
        "robustness": robustness,
        "efficiency": efficiency,
        "slices": slices,
    }
    write_json(out / "results.json", summary)
    markdown = [f"# {title}", *(s.markdown() for s in sections)]
    atomic_write_text(out / "results.md", "\n\n".join(m for m in markdown if m) + "\n")
    return atomic_write_text(out / "index.html", _page(title, sections))
