"""Voice commands: short spoken commands from the speech synthesisers on PATH, for audio
classification.

Each clip says one of ``COMMANDS`` ("turn left", "volume up", ...), sometimes inside a carrier
phrase ("please turn left", "turn left now"), in a voice drawn from those installed (flite's
kal, awb, rms, slt...; espeak-ng's English accents with its male and female variants), at a
drawn speaking rate and pitch, after a short random silence, under white, pink or brown noise
at a drawn signal-to-noise ratio; it is resampled to 16 kHz with soxr and written as a 16-bit
mono wav. Columns: ``audio``, ``transcript`` (the words spoken), ``command`` (the label),
``split``, and how it was made (``voice``, ``rate``, ``pitch``, ``noise``, ``snr_db``).

Synthesis needs flite or espeak-ng (Debian packages) on PATH; the clips' parameters and noise
come from the seed, so the same synthesisers give the same files.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile
import soxr

from polymodal.data.synthetic import (
    SPLITS,
    check_count,
    split_names,
    stream,
    write_jsonl,
    write_wav,
)
from polymodal.errors import ConfigError, DataError
from polymodal.progress import progress_bar

COMMANDS = (
    "turn left",
    "turn right",
    "stop",
    "go forward",
    "go back",
    "play music",
    "volume up",
    "volume down",
    "lights on",
    "lights off",
    "call home",
    "open the door",
)
CARRIERS = ("{}", "{}", "please {}", "{} please", "{} now", "could you {}")
SAMPLE_RATE = 16_000
NOISES = ("white", "pink", "brown")
SNR_DB = (5.0, 30.0)
LEAD_SECONDS = (0.05, 0.4)  # silence before the speech, and (half as much) after it
# flite's voices and their mean pitch (Hz) as measured; awb_time only says the time.
FLITE_VOICES = {"kal": 95.0, "kal16": 91.0, "awb": 125.0, "rms": 103.0, "slt": 172.0}
ESPEAK_VARIANTS = ("m1", "m3", "m5", "m7", "f1", "f2", "f3", "f4", "croak", "klatt")
INSTALL_HINT = "apt-get install flite (or espeak-ng)"


@dataclass(frozen=True)
class Voice:
    """One voice of one synthesiser; ``name`` as the synthesiser's -voice / -v option takes it."""

    engine: str  # "flite" or "espeak-ng"
    name: str

    def __str__(self) -> str:
        return f"{self.engine}:{self.name}"


def _run(*argv: str) -> str:
    """A synthesiser's output; its failure as a DataError with what it said."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as err:
        said = getattr(err, "stderr", None) or err
        raise DataError(f"{argv[0]} failed ({' '.join(argv[1:3])} ...): {said}") from None
    return done.stdout


def available_voices() -> list[Voice]:
    """The voices of flite and espeak-ng found on PATH; a clear error when there are none."""
    voices = []
    if shutil.which("flite"):
        listed = _run("flite", "-lv").split(":", 1)[-1].split()
        voices += [Voice("flite", name) for name in FLITE_VOICES if name in listed]
    if shutil.which("espeak-ng"):
        # Columns: Pty Language Age/Gender VoiceName File [Other languages]; mbrola (mb/)
        # voices need separate data, variants (!v/) are not accents.
        listed = [line.split() for line in _run("espeak-ng", "--voices=en").splitlines()[1:]]
        accents = sorted({c[1] for c in listed if len(c) > 4 and c[4][:3] not in ("mb/", "!v/")})
        rows = map(str.split, _run("espeak-ng", "--voices=variant").splitlines())
        found = {c[4] for c in rows if len(c) > 4}
        variants = [v for v in ESPEAK_VARIANTS if f"!v/{v}" in found]
        voices += [Voice("espeak-ng", f"{a}+{v}") for a in accents for v in variants]
    if not voices:
        raise DataError(
            "voice_commands needs a speech synthesiser on PATH and found neither flite nor "
            f"espeak-ng: {INSTALL_HINT}"
        )
    return voices


@dataclass(frozen=True)
class Clip:
    """What one clip says and how."""

    index: int
    transcript: str
    command: str
    voice: Voice
    rate: float  # speaking speed relative to the synthesiser's default
    pitch: float  # relative to the voice's default
    noise: str
    snr_db: float


def generate(
    out_dir: str | Path,
    n: int,
    seed: int = 0,
    splits: tuple[float, float, float] = SPLITS,
    snr_db: tuple[float, float] = SNR_DB,
    workers: int | None = None,
    progress: bool = False,
) -> Path:
    """Write out_dir/audio/000000.wav ... and out_dir/manifest.jsonl; return the manifest.

    Commands are balanced (each said n / 12 times, give or take one); ``snr_db`` is the range
    the signal-to-noise ratios are drawn from; ``workers`` clips are made at once (default:
    the CPUs). The same arguments and synthesisers give byte-identical files.
    """
    check_count(n, "clips")
    if snr_db[0] > snr_db[1]:
        raise ConfigError(f"snr_db {snr_db!r}: give the lowest ratio first")
    voices = available_voices()
    rng = random.Random(seed)
    names = split_names(rng, n, splits)
    commands = [COMMANDS[i % len(COMMANDS)] for i in range(n)]
    rng.shuffle(commands)
    clips = [_draw(rng, i, command, voices, snr_db) for i, command in enumerate(commands)]
    out = Path(out_dir)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    # Threads suffice: each clip's synthesiser runs as a process of its own.
    with ThreadPoolExecutor(workers or os.cpu_count()) as pool:
        written: Iterable[str] = pool.map(lambda clip: _write(out, clip, seed), clips)
        if progress:
            written = progress_bar(written, "synthesising voice commands", total=n)
        rows = [
            _row(clip, path, split) for clip, path, split in zip(clips, written, names, strict=True)
        ]
    return write_jsonl(out / "manifest.jsonl", rows)


def _draw(
    rng: random.Random,
    index: int,
    command: str,
    voices: Sequence[Voice],
    snr_db: tuple[float, float],
) -> Clip:
    engines = sorted({voice.engine for voice in voices})
    engine = rng.choice(engines)  # each synthesiser as often, however many voices it has
    return Clip(
        index=index,
        transcript=rng.choice(CARRIERS).format(command),
        command=command.replace(" ", "_"),
        voice=rng.choice([voice for voice in voices if voice.engine == engine]),
        rate=rng.uniform(0.75, 1.3),
        pitch=rng.uniform(0.8, 1.25),
        noise=rng.choice(NOISES),
        snr_db=rng.uniform(*snr_db),
    )


def _row(clip: Clip, path: str, split: str) -> dict[str, Any]:
    return {
        "id": f"{clip.index:06d}",
        "split": split,
        "audio": path,
        "transcript": clip.transcript,
        "command": clip.command,
        "voice": str(clip.voice),
        "rate": round(clip.rate, 3),
        "pitch": round(clip.pitch, 3),
        "noise": clip.noise,
        "snr_db": round(clip.snr_db, 2),
    }


def _write(out: Path, clip: Clip, seed: int) -> str:
    """Synthesise, resample, pad and add noise; write the clip, return its relative path."""
    speech = _synthesise(clip)
    rng = stream(seed, f"voice commands clip {clip.index}")
    lead = round(rng.uniform(*LEAD_SECONDS) * SAMPLE_RATE)
    tail = round(rng.uniform(*LEAD_SECONDS) / 2 * SAMPLE_RATE)
    signal = np.concatenate([np.zeros(lead), speech, np.zeros(tail)])
    speech_rms = np.sqrt(np.mean(speech**2))
    noise = _noise(rng, clip.noise, len(signal))
    mixed = signal + noise * speech_rms / 10 ** (clip.snr_db / 20)
    mixed *= min(1.0, 0.95 / np.abs(mixed).max())
    path = f"audio/{clip.index:06d}.wav"
    write_wav(out / path, mixed, SAMPLE_RATE)
    return path


def _synthesise(clip: Clip) -> np.ndarray:
    """The clip's words from its voice, mono float at SAMPLE_RATE."""
    with tempfile.TemporaryDirectory(prefix="polymodal-tts-") as tmp:
        wav = str(Path(tmp) / "speech.wav")
        if clip.voice.engine == "flite":
            _run(
                "flite",
                "-voice",
                clip.voice.name,
                "--setf",
                f"duration_stretch={1 / clip.rate:.3f}",
                "--setf",
                f"int_f0_target_mean={FLITE_VOICES[clip.voice.name] * clip.pitch:.1f}",
                "-t",
                clip.transcript,
                "-o",
                wav,
            )
        else:
            _run(
                "espeak-ng",
                "-v",
                clip.voice.name,
                "-s",
                str(round(175 * clip.rate)),
                "-p",
                str(round(50 * clip.pitch)),
                "-w",
                wav,
                clip.transcript,
            )
        samples, rate = soundfile.read(wav, dtype="float64", always_2d=True)
    return soxr.resample(samples.mean(axis=1), rate, SAMPLE_RATE)


def _noise(rng: np.random.Generator, colour: str, length: int) -> np.ndarray:
    """Unit-RMS noise: white (flat), pink (1/f power) or brown (1/f^2 power)."""
    white = rng.normal(size=length)
    if colour != "white":
        spectrum = np.fft.rfft(white)
        f = np.arange(len(spectrum), dtype=float)
        f[0] = 1.0
        spectrum /= f ** (0.5 if colour == "pink" else 1.0)
        white = np.fft.irfft(spectrum, length)
    return white / np.sqrt(np.mean(white**2))
