"""Speech to text with the packaged Whisper tiny.en: sentences spoken by flite (8 kHz, resampled
to Whisper's 16 kHz with soxr on reading), transcribed exactly, cached per file."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf

from polymodal.cli import main
from polymodal.config import DataConfig, ModelConfig
from polymodal.data.pipeline import Preprocessor, prepare_data
from polymodal.data.transcribe import TranscribedTextPreprocessor, Transcriber, transcribe_manifest
from polymodal.errors import ModelError, RowError
from polymodal.metrics.wer import words
from polymodal.models.model import build_model
from polymodal.predictor import Predictor

SENTENCES = {"lights": "turn on the lights", "door": "please open the door"}


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of sentences spoken by flite (8 kHz wav files)."""
    folder = tmp_path_factory.mktemp("speech")
    for name, sentence in SENTENCES.items():
        subprocess.run(["flite", "-t", sentence, "-o", str(folder / f"{name}.wav")], check=True)
    assert sf.info(folder / "lights.wav").samplerate == 8000
    return folder


@pytest.fixture(scope="module")
def transcriber(tmp_path_factory: pytest.TempPathFactory) -> Transcriber:
    return Transcriber(cache_dir=tmp_path_factory.mktemp("cache"))


@pytest.mark.slow
def test_whisper_transcribes_a_synthesised_sentence_exactly(speech, transcriber):
    text = transcriber(speech / "lights.wav")
    assert words(text) == SENTENCES["lights"].split()
    assert text.lower().rstrip(".") == SENTENCES["lights"]


@pytest.mark.slow
def test_each_file_is_transcribed_once(speech, transcriber, tmp_path):
    text = transcriber(speech / "door.wav")
    again = Transcriber(cache_dir=transcriber.cache_dir.parent)

    def no_model() -> None:
        raise AssertionError("the model ran again")

    again._load = no_model  # type: ignore[method-assign]
    shutil.copy(speech / "door.wav", tmp_path / "copy.wav")  # the same bytes elsewhere
    assert again(tmp_path / "copy.wav") == text == "Please open the door."


@pytest.mark.slow
def test_a_manifest_gets_a_transcript_column_and_a_word_error_rate(speech, transcriber, capsys):
    rows = [
        {"id": 1, "audio": "lights.wav", "said": "Turn on the lights!"},
        {"id": 2, "audio": "door.wav", "said": "please close the door"},  # one word differs
        {"id": 3, "audio": "missing.wav", "said": "nothing"},
        {"id": 4, "audio": None, "said": "no audio"},
    ]
    manifest = speech / "calls.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = speech / "out" / "calls.jsonl"
    report = transcribe_manifest(manifest, "audio", out, reference="said", transcriber=transcriber)
    written = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [row["transcript"] for row in written] == [
        "Turn on the lights.",
        "Please open the door.",
        None,
        None,
    ]
    assert [row["said"] for row in written] == [row["said"] for row in rows]  # kept as they were
    assert (report.rows, report.transcribed, report.scored) == (4, 2, 2)
    assert [(r.line, r.reason) for r in report.failed] == [(3, "missing audio file")]
    assert report.wer == pytest.approx(1 / 8)  # one substitution in eight reference words

    cli_out = speech / "cli.jsonl"
    argv = ["data", "transcribe", str(manifest), "--audio", "audio", "--out", str(cli_out)]
    assert main([*argv, "--reference", "said", "--text-column", "heard", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "word error rate: 0.1250 over 2 rows" in printed
    assert "line 3: missing audio file" in printed
    assert json.loads(cli_out.read_text(encoding="utf-8").splitlines()[0])["heard"]


@pytest.mark.slow
def test_a_text_field_can_be_transcribed_from_an_audio_column(speech, tmp_path, monkeypatch):
    monkeypatch.setenv("POLYMODAL_CACHE_DIR", str(tmp_path / "cache"))
    rows = [{"audio": f"{name}.wav", "label": name} for name in SENTENCES] * 2
    manifest = speech / "fields.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    fields = {"spoken": {"kind": "text", "transcribe": "audio"}}
    fields["label"] = {"kind": "label", "role": "target"}
    data = DataConfig.model_validate(
        {"manifest": manifest, "fields": fields, "val_fraction": 0, "test_fraction": 0}
    )
    prepared = prepare_data(data)
    spoken = prepared.preprocessor.fields["spoken"]
    assert isinstance(spoken, TranscribedTextPreprocessor)
    vocabulary = spoken.tokenizer.vocab  # type: ignore[union-attr]
    assert {"turn", "lights", "please", "door"} <= set(vocabulary)
    example = prepared.splits["train"][0]
    assert spoken.tokenizer.decode(example["spoken"].tolist()) == "turn on the lights ."  # type: ignore[union-attr]

    prepared.preprocessor.save(tmp_path)
    loaded = Preprocessor.load(tmp_path)
    assert isinstance(loaded.fields["spoken"], TranscribedTextPreprocessor)
    model_config = ModelConfig.model_validate(
        {
            "encoders": {"spoken": {"type": "bag", "dim": 8}},
            "tasks": [{"type": "classify", "target": "label", "hidden": 8}],
        }
    )
    predictor = Predictor(build_model(model_config, loaded))
    prediction = predictor({"audio": "door.wav"}, speech)
    assert prediction["absent_inputs"] == [] and "classify_label" in prediction


def test_an_unreadable_file_is_a_row_error(tmp_path):
    (tmp_path / "noise.wav").write_text("not audio", encoding="utf-8")
    with pytest.raises(RowError, match="unreadable audio"):
        Transcriber(cache_dir=tmp_path)(tmp_path / "noise.wav")


def test_without_faster_whisper_the_error_names_the_extra(speech, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "faster_whisper", None)
    with pytest.raises(ModelError, match='pip install "polymodal\\[speech\\]"'):
        Transcriber(cache_dir=tmp_path)(speech / "lights.wav")
