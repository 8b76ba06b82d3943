"""Robustness of a tiny trained run: report shape, clean score, missing fields, MultiBench."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from polymodal.config import FieldSpec, validate
from polymodal.data.modalities.audio import AudioPreprocessor
from polymodal.data.modalities.features import FeaturesPreprocessor
from polymodal.data.modalities.image import ImagePreprocessor
from polymodal.data.modalities.sequence import SequencePreprocessor
from polymodal.data.modalities.tabular import TabularPreprocessor
from polymodal.data.modalities.text import TextPreprocessor
from polymodal.data.modalities.video import VideoPreprocessor
from polymodal.data.pipeline import Preprocessor
from polymodal.data.quarantine import Quarantine
from polymodal.data.schema import Schema
from polymodal.data.transcribe import TranscribedTextPreprocessor
from polymodal.errors import DataError
from polymodal.evaluate.corruptions import CORRUPTIONS, MISSING_RATES, SEVERITIES, Waveform
from polymodal.evaluate.robustness import (
    ROBUSTNESS_FILE,
    corrupted_examples,
    effective_robustness,
    evaluate_robustness,
    field_corruptions,
    maxmin_normalize,
    raw_kind,
    raw_value,
    read_rows,
    read_run_split,
    relative_robustness,
    with_raw_value,
)
from polymodal.inference import evaluate_model
from polymodal.models.model import MultimodalModel
from polymodal.train.run import RunResult, run_training

COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220)}
TASKS = {"classify_label": "accuracy", "retrieve_image_text": "mean_recall"}
INPUTS = ["image", "price", "text"]


def write_manifest(folder: Path) -> Path:
    """conftest's ``tiny_manifest`` rows plus a test row whose image file is missing."""
    rows = []
    for i in range(24):
        colour = "red" if i % 2 == 0 else "blue"
        image = folder / "img" / f"{i}.png"
        image.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (16, 16), COLOURS[colour]).save(image)
        split = "train" if i < 16 else ("val" if i < 20 else "test")
        rows.append(
            {
                "id": str(i),
                "split": split,
                "image": f"img/{i}.png",
                "text": f"a {colour} square number {i}",
                "price": float(i),
                "label": colour,
            }
        )
    rows.append({**rows[-1], "id": "24", "image": "img/missing.png"})
    path = folder / "manifest.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    root = tmp_path_factory.mktemp("robustness_run")
    manifest = write_manifest(root / "data")
    config = validate(
        {
            "name": "tiny",
            "seed": 1,
            "data": {"manifest": str(manifest), "image": {"size": 16}},
            "model": {
                "inputs": INPUTS,
                "encoders": {
                    "image": {"type": "cnn", "dim": 16, "channels": [8, 8]},
                    "text": {"type": "transformer", "dim": 16, "layers": 1, "heads": 2},
                    "price": {"type": "mlp", "dim": 16, "hidden": 16},
                },
                "fusion": {"dim": 16},
                "tasks": [
                    {"type": "classify", "target": "label", "hidden": 16},
                    {"type": "retrieve", "query": "image", "gallery": "text", "dim": 16},
                ],
            },
            "train": {"epochs": 2, "batch_size": 4, "lr": 0.005, "out_dir": str(root / "runs")},
        }
    )
    return run_training(config, log=lambda m: None)


@pytest.fixture(scope="module")
def report(run: RunResult) -> dict:
    return evaluate_robustness(run.run_dir, seed=3)


def test_report_has_the_documented_structure(run, report):
    written = json.loads((run.run_dir / ROBUSTNESS_FILE).read_text(encoding="utf-8"))
    assert written == report
    assert report["split"] == "test" and report["seed"] == 3 and report["rows"] == 4
    assert report["quarantined"] == {"missing image file": 1}
    assert report["reference"] is None
    assert report["missing_rates"] == list(MISSING_RATES)
    assert report["severities"] == list(SEVERITIES)
    assert set(report["tasks"]) == set(TASKS)
    kinds = {"image": "image", "text": "text", "price": "tabular"}
    for name, result in report["tasks"].items():
        assert result["metric"] == TASKS[name]
        assert set(result) == {
            "metric",
            "clean",
            "missing",
            "noise",
            "relative_robustness",
            "effective_robustness",
            "contribution",
        }
        for key in ("missing", "noise", "relative_robustness", "effective_robustness"):
            assert sorted(result[key]) == INPUTS, key
        assert sorted(result["contribution"]) == INPUTS
        for field, kind in kinds.items():
            assert [p["rate"] for p in result["missing"][field]] == list(MISSING_RATES)
            assert set(result["noise"][field]) == set(CORRUPTIONS[kind])
            for points in result["noise"][field].values():
                assert [p["severity"] for p in points] == list(SEVERITIES)
            expected = {"missing", *CORRUPTIONS[kind]}
            assert set(result["relative_robustness"][field]) == expected
            assert set(result["effective_robustness"][field]) == expected
            assert set(result["contribution"][field]) == {"score_without", "drop"}


def test_clean_score_is_the_evaluate_model_score(run, report):
    best = MultimodalModel.from_pretrained(run.model_dir)
    examples = read_run_split(run.run_dir, "test", best.preprocessor).examples
    metrics = evaluate_model(best, examples)
    assert metrics == run.test
    for name, metric in TASKS.items():
        assert report["tasks"][name]["clean"] == metrics[name][metric]


@torch.no_grad()
def accuracy(model: MultimodalModel, examples: list) -> float:
    batch = model.preprocessor.collate(examples)
    predicted = model(batch)["classify_label"].argmax(-1)
    return float((predicted == batch.values["label"]).float().mean())


def test_missing_rates_and_contribution(run, report):
    best = MultimodalModel.from_pretrained(run.model_dir)
    examples = read_run_split(run.run_dir, "test", best.preprocessor).examples
    classify = report["tasks"]["classify_label"]
    for field in INPUTS:
        points = classify["missing"][field]
        assert points[0]["score"] == classify["clean"]  # rate 0 leaves every row as it is
        score = accuracy(best, [{**ex, field: None} for ex in examples])
        assert points[-1]["score"] == pytest.approx(score)
        assert classify["contribution"][field] == {
            "score_without": points[-1]["score"],
            "drop": pytest.approx(classify["clean"] - score),
        }
    retrieve = report["tasks"]["retrieve_image_text"]
    for field in ("image", "text"):  # retrieval cannot score a row without both sides
        assert retrieve["missing"][field][-1]["score"] is None
        assert retrieve["contribution"][field] == {"score_without": None, "drop": None}
        assert retrieve["relative_robustness"][field]["missing"] is None
        assert retrieve["effective_robustness"][field]["missing"] is None
    assert retrieve["missing"]["price"][-1]["score"] == retrieve["clean"]
    assert retrieve["contribution"]["price"]["drop"] == 0.0


def test_summaries_follow_the_multibench_formulas(report):
    result = report["tasks"]["classify_label"]
    for field in INPUTS:
        curve = [p["score"] for p in result["missing"][field]]
        assert result["relative_robustness"][field]["missing"] == relative_robustness(curve)
        assert result["effective_robustness"][field]["missing"] == effective_robustness(curve)
        for corruption, points in result["noise"][field].items():
            curve = [result["clean"], *(p["score"] for p in points)]
            assert result["relative_robustness"][field][corruption] == relative_robustness(curve)


def test_a_model_with_rows_and_a_reference(run, report, tmp_path):
    """The same rows given to a model score the same; against itself as the baseline, every
    effective robustness is 0."""
    best = MultimodalModel.from_pretrained(run.model_dir)
    manifest = run.data.index.path
    rows = [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines()]
    test_rows = [r for r in rows if r["split"] == "test"]
    again = evaluate_robustness(
        best, test_rows, seed=3, base_dir=manifest.parent, reference=run.run_dir
    )
    assert again["quarantined"] == {"missing image file": 1}
    assert again["reference"] == str(run.run_dir)
    for name, result in again["tasks"].items():
        expected = report["tasks"][name]
        for key in ("clean", "missing", "noise", "relative_robustness", "contribution"):
            assert result[key] == expected[key], (name, key)
        for by_curve in result["effective_robustness"].values():
            assert all(v is None or v == pytest.approx(0.0) for v in by_curve.values())
    bad = tmp_path / ROBUSTNESS_FILE
    bad.write_text(json.dumps({**report, "severities": [1, 2, 3]}), encoding="utf-8")
    with pytest.raises(DataError, match="effective robustness needs"):
        evaluate_robustness(best, test_rows, base_dir=manifest.parent, reference=tmp_path)


def test_relative_robustness_by_hand():
    assert relative_robustness([1.0, 0.8, 0.6]) == pytest.approx(0.8)  # d = 0.5
    assert relative_robustness([0.5, 0.5]) == pytest.approx(0.5)
    eleven = [1.0 - 0.05 * i for i in range(11)]  # MultiBench's levels 0, 0.1, .., 1
    multibench = sum((eleven[i] + eleven[i + 1]) * 0.1 / 2 for i in range(10))
    assert relative_robustness(eleven) == pytest.approx(multibench) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="at least 2 levels"):
        relative_robustness([1.0])


def test_effective_robustness_by_hand():
    # b = g + (f0 - g0) = [0.9, 0.85, 0.7]; ER = 0 - 0.05 - 0.2
    assert effective_robustness([0.9, 0.8, 0.5], [0.7, 0.65, 0.5]) == pytest.approx(-0.25)
    assert effective_robustness([0.9, 0.8, 0.5]) == pytest.approx(-0.5)  # flat baseline
    assert effective_robustness([0.6, 0.6, 0.6], [0.9, 0.5, 0.1]) == pytest.approx(1.2)
    with pytest.raises(ValueError, match="levels"):
        effective_robustness([0.9, 0.8], [0.9, 0.8, 0.7])


def test_maxmin_normalize_by_hand():
    assert maxmin_normalize({"a": 1.0, "b": 3.0, "c": 2.0}) == {"a": 0.0, "b": 1.0, "c": 0.5}
    lower = maxmin_normalize({"a": 1.0, "b": 3.0}, lower_is_better=True)
    assert lower == {"a": 1.0, "b": 0.0}
    assert maxmin_normalize({"only": 0.4}) == {"only": 0.0}


def test_bad_arguments(run):
    best = MultimodalModel.from_pretrained(run.model_dir)
    with pytest.raises(ValueError, match="pass the rows"):
        evaluate_robustness(best)
    with pytest.raises(ValueError, match="pass rows with a model"):
        evaluate_robustness(run.run_dir, rows=[])
    with pytest.raises(DataError, match="split 'holdout' has no rows"):
        evaluate_robustness(run.run_dir, split="holdout")


# Every kind: raw values read and written back as the readers read them; a tiny model of the
# newer kinds (audio, sequence, features, video) scored end to end.

RATE = 8000
AUDIO = {"sample_rate": RATE, "max_seconds": 0.25, "n_mels": 16, "n_fft": 128, "hop_length": 64}
KINDS = {"audio": "audio", "seq": "sequence", "feat": "features", "video": "video"}


def tone(hz: float, rng: np.random.Generator, seconds: float = 0.25) -> np.ndarray:
    t = np.arange(round(seconds * RATE)) / RATE
    wave = rng.uniform(0.3, 0.6) * np.sin(2 * np.pi * hz * t)
    return (wave + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


def write_kinds_manifest(folder: Path) -> Path:
    """24 rows whose label shows in each field: a tone's pitch, a series' slope, a feature
    vector's mean, a video's colour. Test rows 22 and 23 lack the audio and the series."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(24):
        colour = "red" if i % 2 == 0 else "blue"
        sign = 1.0 if colour == "red" else -1.0
        audio = folder / "audio" / f"{i}.wav"
        audio.parent.mkdir(parents=True, exist_ok=True)
        sf.write(audio, tone(400 if colour == "red" else 1600, rng), RATE)
        frames = folder / "video" / str(i)
        frames.mkdir(parents=True)
        for j in range(4):
            noise = rng.integers(-20, 21, (8, 8, 3))
            pixels = np.clip(np.array(COLOURS[colour]) + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(frames / f"{j}.png")
        steps = np.linspace(0, sign, 12)[:, None] + 0.1 * rng.standard_normal((12, 2))
        rows.append(
            {
                "id": str(i),
                "split": "train" if i < 16 else ("val" if i < 18 else "test"),
                "audio": f"audio/{i}.wav",
                "seq": steps.tolist(),
                "feat": (sign + 0.3 * rng.standard_normal(6)).tolist(),
                "video": f"video/{i}",
                "label": colour,
            }
        )
    rows[22]["audio"] = None
    rows[23]["seq"] = None
    path = folder / "manifest.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def kinds_run(tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    root = tmp_path_factory.mktemp("kinds_run")
    manifest = write_kinds_manifest(root / "data")
    config = validate(
        {
            "name": "kinds",
            "seed": 1,
            "data": {
                "manifest": str(manifest),
                "fields": {
                    **{f: {"kind": k} for f, k in KINDS.items()},
                    "label": {"kind": "label", "role": "target"},
                },
                "audio": AUDIO,
                "sequence": {"max_length": 16},
                "video": {"frames": 4, "size": 8},
            },
            "model": {
                "encoders": {
                    "audio": {"type": "cnn", "dim": 8, "channels": [4, 4]},
                    "seq": {"type": "gru", "dim": 8, "hidden": 8},
                    "feat": {"type": "passthrough", "dim": 8},
                    "video": {"type": "cnn", "dim": 8, "channels": [4]},
                },
                "fusion": {"dim": 8},
                "tasks": [{"type": "classify", "target": "label", "hidden": 8}],
            },
            "train": {"epochs": 2, "batch_size": 4, "lr": 0.01, "out_dir": str(root / "runs")},
        }
    )
    return run_training(config, log=lambda m: None)


def test_every_corruption_of_the_new_kinds_gives_a_finite_curve(kinds_run):
    report = evaluate_robustness(kinds_run.run_dir, seed=2)
    assert report["rows"] == 6 and report["quarantined"] == {}
    result = report["tasks"]["classify_label"]
    assert 0.0 <= result["clean"] <= 1.0
    model = MultimodalModel.from_pretrained(kinds_run.model_dir)
    assert sorted(model.inputs) == sorted(KINDS)
    for field, kind in KINDS.items():
        assert [p["rate"] for p in result["missing"][field]] == list(MISSING_RATES)
        assert set(result["noise"][field]) == set(CORRUPTIONS[kind])
        for points in result["noise"][field].values():
            assert [p["severity"] for p in points] == list(SEVERITIES)
            assert all(math.isfinite(p["score"]) for p in points), (field, points)
        summary = result["relative_robustness"][field]
        assert set(summary) == {"missing", *CORRUPTIONS[kind]}
        assert all(math.isfinite(v) for v in summary.values())


def test_corrupted_examples_are_seeded_and_leave_absent_fields_alone(kinds_run):
    model = MultimodalModel.from_pretrained(kinds_run.model_dir)
    data = read_run_split(kinds_run.run_dir, "test", model.preprocessor)
    absent = {"audio": 4, "seq": 5}  # test rows 22 and 23
    for field, kind in KINDS.items():
        for corruption in CORRUPTIONS[kind]:
            args = (data, model.preprocessor, field, corruption, 5)
            first, again = corrupted_examples(*args, seed=1), corrupted_examples(*args, seed=1)
            other = corrupted_examples(*args, seed=2)
            for i, (clean, out) in enumerate(zip(data.examples, first, strict=True)):
                if absent.get(field) == i:
                    assert clean[field] is None and out is clean
                    continue
                assert torch.equal(out[field], again[i][field])
                assert not same_tensor(out[field], clean[field]), (field, corruption, i)
                assert all(out[f] is clean[f] for f in KINDS if f != field)
            if corruption not in ("blur", "clipping"):  # these draw no random numbers
                assert not all(
                    same_tensor(a[field], b[field])
                    for a, b in zip(first, other, strict=True)
                    if a[field] is not None
                ), (field, corruption)


def same_tensor(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.equal(a, b)


def test_a_kind_without_corruptions_still_gets_its_missing_curve(kinds_run, monkeypatch):
    for kind in KINDS.values():
        monkeypatch.delitem(CORRUPTIONS, kind)
    model = MultimodalModel.from_pretrained(kinds_run.model_dir)
    manifest = kinds_run.data.index.path
    rows = [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines()]
    report = evaluate_robustness(model, rows[18:], seed=0, base_dir=manifest.parent)
    result = report["tasks"]["classify_label"]
    assert result["noise"] == {}
    for field in KINDS:
        assert [p["rate"] for p in result["missing"][field]] == list(MISSING_RATES)
        assert set(result["relative_robustness"][field]) == {"missing"}
        assert result["contribution"][field]["score_without"] is not None


class ToneTranscriber:
    """Stands in for Whisper: the transcript is the clip's RMS level as a word."""

    def __init__(self) -> None:
        self.reader = AudioPreprocessor("audio", 16000, 60.0, features="waveform")
        self.heard: list[Path] = []

    def __call__(self, path: Path) -> str:
        self.heard.append(path)
        samples = self.reader.waveform(path)
        return f"level{round(1000 * float(np.sqrt(np.mean(samples**2))))}"


@pytest.fixture
def every_kind(tmp_path: Path) -> tuple[Preprocessor, dict, Path]:
    """One row holding a field of every kind (and a transcribed one), read by fitted readers."""
    rng = np.random.default_rng(3)
    sf.write(tmp_path / "a.wav", np.stack([tone(400, rng), tone(900, rng)], axis=1), 11025)
    Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(tmp_path / "i.png")
    (tmp_path / "v").mkdir()
    for j in range(6):
        pixels = rng.integers(0, 255, (12, 10, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / "v" / f"{j}.png")
    np.save(tmp_path / "s.npy", rng.standard_normal((30, 2)))
    np.save(tmp_path / "f.npy", rng.standard_normal((3, 5)).astype(np.float32))
    row = {
        "image": "i.png",
        "text": "a short line of text to read",
        "price": 3.5,
        "colour": "red",
        "audio": "a.wav",
        "seq": "s.npy",
        "feat": "f.npy",
        "video": "v",
    }
    specs = {
        "image": FieldSpec(kind="image"),
        "text": FieldSpec(kind="text"),
        "shop": FieldSpec(kind="tabular", numeric=["price"], categorical=["colour"]),
        "audio": FieldSpec(kind="audio"),
        "speech": FieldSpec(kind="text", transcribe="audio"),
        "seq": FieldSpec(kind="sequence"),
        "feat": FieldSpec(kind="features"),
        "video": FieldSpec(kind="video"),
    }
    fields = {
        "image": ImagePreprocessor("image", 16),
        "text": TextPreprocessor("text"),
        "shop": TabularPreprocessor(["price"], ["colour"]),
        "audio": AudioPreprocessor("audio", RATE, 0.2, 16, 128, 64),
        "speech": TranscribedTextPreprocessor(
            "audio", base_dir=tmp_path, transcriber=ToneTranscriber()
        ),
        "seq": SequencePreprocessor("seq", 20, tmp_path),
        "feat": FeaturesPreprocessor("feat", tmp_path),
        "video": VideoPreprocessor("video", frames=4, size=8),
    }
    preprocessor = Preprocessor(Schema(specs), fields).fit([row])
    return preprocessor, row, tmp_path


def test_raw_values_written_back_read_as_the_original(every_kind):
    preprocessor, row, folder = every_kind
    clean = preprocessor.example(row, folder)
    for field, pre in preprocessor.fields.items():
        value = raw_value(row, field, preprocessor, folder)
        changed = with_raw_value(row, field, preprocessor, value, folder / f"scratch-{field}")
        assert torch.equal(preprocessor.example(changed, folder)[field], clean[field]), field
        kind = raw_kind(pre)
        assert field_corruptions(pre) is CORRUPTIONS[kind]
        assert kind == ("audio" if field == "speech" else pre.kind)
    assert isinstance(raw_value(row, "speech", preprocessor, folder), Waveform)
    assert raw_value({**row, "seq": None}, "seq", preprocessor, folder) is None


def test_a_transcribed_field_is_corrupted_in_its_audio(every_kind):
    preprocessor, row, folder = every_kind
    transcriber = preprocessor.fields["speech"].transcriber
    data = read_rows(preprocessor, [row], folder, Quarantine(), "rows")
    out = corrupted_examples(data, preprocessor, "speech", "gaussian_noise", 5, seed=0)
    assert transcriber.heard[-1].suffix == ".wav" and transcriber.heard[-1].parent != folder
    assert not same_tensor(out[0]["speech"], data.examples[0]["speech"])  # another transcript
    assert out[0]["audio"] is data.examples[0]["audio"]  # the audio field is not touched
