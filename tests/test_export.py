"""ONNX export: one model with every kind of task (classify, regress, retrieve, caption, VQA)
exported once, its graphs run by ONNX Runtime on rows the trace never saw."""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from polymodal.cli import main
from polymodal.config import validate
from polymodal.data.shapeworld import generate
from polymodal.errors import DataError, ModelError
from polymodal.export import manifest_rows, quantize_export, sample_rows
from polymodal.models.model import MultimodalModel
from polymodal.onnx_backend import EXPORT_FILE, ExportInfo
from polymodal.predictor import Predictor
from polymodal.train.run import run_training

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

TOLERANCE = 1e-4


@dataclass(frozen=True)
class Exported:
    model_dir: Path
    out: Path
    manifest: Path
    info: ExportInfo
    printed: str


def write_manifest(world: Path) -> Path:
    """One row per scene: image, statement, label, count, caption and its wordings, and the
    scene's first question and answer."""
    captions = {}
    for line in (world / "captions.jsonl").read_text().splitlines():
        row = json.loads(line)
        captions[row["image"]] = row["captions"]
    questions = {}
    for line in (world / "questions.jsonl").read_text().splitlines():
        row = json.loads(line)
        questions.setdefault(row["image"], row)
    rows = []
    for line in (world / "manifest.jsonl").read_text().splitlines():
        scene = json.loads(line)
        question = questions[scene["image"]]
        rows.append(
            {
                **{k: scene[k] for k in ("split", "image", "statement", "label", "count")},
                "caption": scene["caption"],
                "captions": captions[scene["image"]],
                "question": question["question"],
                "answers": question["answer"],
            }
        )
    path = world / "all_tasks.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    root = tmp_path_factory.mktemp("export")
    world = root / "world"
    generate(world, n=40, seed=0, image_size=32)
    manifest = write_manifest(world)
    config = {
        "name": "all_tasks",
        "seed": 0,
        "data": {
            "manifest": str(manifest),
            "fields": {
                "image": {"kind": "image"},
                "statement": {"kind": "text"},
                "question": {"kind": "text"},
                "caption": {"kind": "text"},
                "label": {"kind": "label", "role": "target"},
                "count": {"kind": "number", "role": "target"},
                "answers": {"kind": "answers", "role": "target"},
                "captions": {"kind": "text", "role": "target"},
            },
            "image": {"size": 16},
            "text": {"max_length": 12},
        },
        "model": {
            "inputs": ["image", "statement", "question", "caption"],
            "encoders": {
                "image": {"type": "cnn", "dim": 16, "channels": [8, 16]},
                "statement": {"type": "transformer", "dim": 16, "layers": 1, "heads": 2},
                "question": {"type": "bag", "dim": 16},
                "caption": {"type": "transformer", "dim": 16, "layers": 1, "heads": 2},
            },
            "fusion": {"type": "attention", "dim": 16},
            "tasks": [
                {"type": "classify", "target": "label", "inputs": ["image", "statement"]},
                {"type": "regress", "target": "count", "inputs": ["image"], "hidden": 16},
                {"type": "retrieve", "query": "image", "gallery": "caption", "dim": 16},
                {
                    "type": "caption",
                    "image": "image",
                    "target": "captions",
                    "dim": 16,
                    "layers": 2,
                    "heads": 2,
                    "beam_size": 3,
                    "max_length": 8,
                },
                {"type": "vqa", "target": "answers", "inputs": ["image", "question"], "hidden": 16},
            ],
        },
        "train": {"epochs": 1, "batch_size": 8, "out_dir": str(root / "runs")},
    }
    run = run_training(validate(config), log=lambda m: None)
    out = root / "onnx"
    command = ["export", str(run.model_dir), "--format", "onnx", "--out", str(out)]
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        assert main([*command, "--data", str(manifest), "--rows", "6"]) == 0
    return Exported(run.model_dir, out, manifest, ExportInfo.load(out), printed.getvalue())


def test_parity_is_checked_on_every_output(exported):
    info = exported.info
    assert set(info.decoders) == {"caption_captions"}
    assert info.parity.keys() >= {
        "classify_label",
        "regress_count",
        "retrieve_image_caption:query",
        "retrieve_image_caption:gallery",
        "caption_captions:tokens",
        "caption_captions:scores",
        "vqa_answers",
    }
    assert max(info.parity.values()) <= TOLERANCE
    saved = json.loads((exported.out / EXPORT_FILE).read_text())
    assert saved["parity"] == pytest.approx(info.parity)


def test_onnxruntime_predictor_matches_eager_on_unseen_rows(exported):
    """Other batch sizes, text lengths and absent inputs than the two traced rows."""
    rows, base_dir = manifest_rows(exported.manifest, 40)
    rows = [
        {k: v for k, v in row.items() if k not in ("statement", "question")[: i % 3]}
        for i, row in enumerate(rows[5:])
    ]
    eager = Predictor.from_pretrained(exported.model_dir)
    onnx = Predictor.from_pretrained(exported.out, backend="onnxruntime")
    for size in (1, 7, 35):
        for want, got in zip(
            eager.predict(rows[:size], base_dir), onnx.predict(rows[:size], base_dir), strict=True
        ):
            assert want["caption_captions"]["caption"] == got["caption_captions"]["caption"]
            assert want["vqa_answers"]["answer"] == got["vqa_answers"]["answer"]
            assert want["classify_label"]["label"] == got["classify_label"]["label"]
            assert flat_numbers(want) == pytest.approx(flat_numbers(got), abs=TOLERANCE)
    for task in ("caption_captions", "vqa_answers"):  # one task alone: the others not run
        alone = onnx.predict(rows[:7], base_dir, tasks=[task])
        assert [set(row) for row in alone] == [{task, "absent_inputs"}] * 7
        every = onnx.predict(rows[:7], base_dir)
        assert [row[task] for row in alone] == [row[task] for row in every]


def flat_numbers(value: object) -> list[float]:
    """Every number in a prediction, in order."""
    if isinstance(value, dict):
        return [x for key in sorted(value) for x in flat_numbers(value[key])]
    if isinstance(value, list):
        return [x for item in value for x in flat_numbers(item)]
    return [float(value)] if isinstance(value, int | float) else []


def test_made_up_rows_vary_lengths_and_absent_inputs(exported):
    model = MultimodalModel.from_pretrained(exported.model_dir)
    rows = sample_rows(model, 4)
    assert len({len(row["statement"].split()) for row in rows if "statement" in row}) > 1
    assert len(rows[0]) == 4 and min(len(row) for row in rows[1:]) == 3


def test_int8_export_reports_its_difference(exported, tmp_path):
    info = quantize_export(exported.out, tmp_path / "int8", log=lambda m: None)
    assert info.quantized == "int8" and ExportInfo.load(exported.out).quantized is None
    assert 0 < info.parity["classify_label"] < 1  # weights rounded: close, not equal
    onnx = Predictor.from_pretrained(tmp_path / "int8", backend="onnxruntime")
    rows, base_dir = manifest_rows(exported.manifest, 1)
    assert onnx(rows[0], base_dir)["caption_captions"]["caption"]


def test_cli_export_prints_its_parity(exported):
    """The module's export ran through the command line: traced on 2 rows, checked on 6."""
    assert "caption_captions:tokens: max |onnx - eager| = 0.00e+00" in exported.printed
    assert "parity with eager PyTorch: max |difference|" in exported.printed.splitlines()[-1]


def test_cli_predicts_on_the_exported_graphs(exported, tmp_path, capsys):
    rows, base_dir = manifest_rows(exported.manifest, 2)
    request = tmp_path / "rows.json"
    request.write_text(json.dumps([{**row, "image": str(base_dir / row["image"])} for row in rows]))
    task = ["--tasks", "vqa_answers"]
    command = ["predict", str(exported.out), "--input", str(request), "--backend", "onnxruntime"]
    assert main([*command, *task]) == 0
    printed = json.loads(capsys.readouterr().out)
    expected = Predictor.from_pretrained(exported.model_dir).predict(rows, base_dir)
    assert [set(row) for row in printed] == [{"vqa_answers", "absent_inputs"}] * 2
    assert [row["vqa_answers"]["answer"] for row in printed] == [
        row["vqa_answers"]["answer"] for row in expected
    ]


def test_cli_export_names_a_missing_manifest(exported, tmp_path, capsys):
    missing = tmp_path / "nowhere.jsonl"
    assert main(["export", str(exported.model_dir), "--out", str(tmp_path), "--data", str(missing)])
    assert f"manifest {missing} does not exist" in capsys.readouterr().err


def test_a_model_folder_without_graphs_is_refused(exported):
    with pytest.raises(ModelError, match="polymodal export MODEL_DIR --format onnx"):
        Predictor.from_pretrained(exported.model_dir, backend="onnxruntime")
    with pytest.raises(ModelError, match="unknown backend 'tensorrt'"):
        Predictor.from_pretrained(exported.model_dir, backend="tensorrt")


def test_video_inputs_need_real_rows(exported):
    model = MultimodalModel.from_pretrained(exported.model_dir)
    model.preprocessor.fields["caption"].kind = "video"  # as a video field would read
    with pytest.raises(DataError, match=r"input .caption. is of kind video.*--data MANIFEST"):
        sample_rows(model, 2)
