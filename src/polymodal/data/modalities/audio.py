"""Audio: mono, resampled, cropped, as a Whisper-style log-mel spectrogram or the waveform.

A cell is a path (relative to the manifest's folder) to a file soundfile reads (wav, flac,
ogg, mp3); a row given in memory (``Predictor``, the service) may also hold the file's bytes or
a float array of samples at ``sample_rate``, (T,) or (T, channels). Channels are averaged; a
file at another rate is resampled with soxr; a clip longer than ``max_seconds`` is cropped (at
a random offset in a training read, the centre in evaluation) and a shorter one kept whole, its
length reported by ``collate``.

With ``features="log_mel"`` the features are Whisper's (``whisper/audio.py``,
``log_mel_spectrogram``): a periodic Hann window, ``|STFT|^2`` with the last frame dropped, a
Slaney mel filterbank, ``log10`` clamped at 1e-10, floored at the clip's maximum - 8 and mapped
by ``(x + 4) / 4``; with ``n_mels=80, n_fft=400, hop_length=160`` at 16 kHz they are what a
Whisper encoder expects.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
import soundfile as sf
import soxr
import torch

from polymodal.data.modalities.base import (
    FileField,
    GivenBytes,
    given_bytes,
    pad_batch,
    resolve_path,
)
from polymodal.errors import RowError

Features = Literal["log_mel", "waveform"]

# Slaney's mel scale (Auditory Toolbox; librosa's default, htk=False): linear below 1 kHz,
# logarithmic above it.
_F_SP = 200.0 / 3  # Hz per mel in the linear part
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP  # 15 mels
_LOG_STEP = math.log(6.4) / 27.0  # 27 mels from 1 kHz to 6.4 kHz


def hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Frequencies in Hz on Slaney's mel scale."""
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz / _F_SP
    logarithmic = _MIN_LOG_MEL + np.log(np.maximum(hz, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOG_STEP
    return np.where(hz >= _MIN_LOG_HZ, logarithmic, linear)


def mel_to_hz(mel: np.ndarray) -> np.ndarray:
    """The inverse of ``hz_to_mel``."""
    mel = np.asarray(mel, dtype=np.float64)
    logarithmic = _MIN_LOG_HZ * np.exp(_LOG_STEP * (mel - _MIN_LOG_MEL))
    return np.where(mel >= _MIN_LOG_MEL, logarithmic, _F_SP * mel)


def _array_samples(array: np.ndarray) -> np.ndarray:
    """A (T,) or (T, channels) array of real samples as float32 (T, channels)."""
    if (
        array.ndim not in (1, 2)
        or not np.issubdtype(array.dtype, np.number)
        or np.iscomplexobj(array)
    ):
        raise RowError(
            "bad audio array",
            f"an audio array must hold real samples of shape (T,) or (T, channels) at the "
            f"model's sample rate; got {array.dtype} {tuple(array.shape)}",
        )
    columns = array.shape[1] if array.ndim == 2 else 1
    return np.asarray(array.reshape(len(array), columns), dtype=np.float32)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) triangular filters from 0 Hz to Nyquist, as
    ``librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels)`` (htk=False,
    norm="slaney") makes them, and as Whisper's ``mel_filters.npz`` holds them.

    Written here rather than imported so that reading audio needs neither torchaudio (whose
    builds must match the torch build exactly) nor librosa (numba, scipy, scikit-learn) for
    twenty lines of numpy. Each filter rises from the mel point below its centre to 1 at the
    centre and falls to the point above; ``norm="slaney"`` scales it by 2 / (its width in Hz),
    so each band holds about the same energy.
    """
    bins = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    edges = mel_to_hz(np.linspace(0.0, hz_to_mel(sample_rate / 2.0), n_mels + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - bins[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights.astype(np.float32)


def log_mel(wave: torch.Tensor, filters: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """Whisper's log-mel features of a mono waveform: (frames, n_mels), frames = samples // hop
    (at least 1)."""
    pad_mode = "reflect" if len(wave) > n_fft // 2 else "constant"  # reflect needs samples
    spec = torch.stft(
        wave,
        n_fft,
        hop,
        window=torch.hann_window(n_fft),
        center=True,
        pad_mode=pad_mode,
        return_complex=True,
    )
    power = spec.abs().pow(2)
    if power.shape[1] > 1:
        power = power[:, :-1]  # Whisper drops the frame centred past the last hop
    logs = (filters @ power).clamp(min=1e-10).log10()
    logs = torch.maximum(logs, logs.max() - 8.0)
    return ((logs + 4.0) / 4.0).T.contiguous()


class AudioPreprocessor(FileField):
    """Reads an audio file into (frames, n_mels) log-mel features or (samples,) waveform;
    collates to (B, T, n_mels) or (B, S) with lengths in frames or samples."""

    kind = "audio"

    def __init__(
        self,
        column: str,
        sample_rate: int = 16000,
        max_seconds: float = 4.0,
        n_mels: int = 64,
        n_fft: int = 400,
        hop_length: int = 160,
        features: Features = "log_mel",
    ) -> None:
        self.column = column
        self.sample_rate = sample_rate
        self.max_seconds = max_seconds
        self.n_mels = n_mels
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.features = features
        self.filters = torch.from_numpy(mel_filterbank(sample_rate, n_fft, n_mels))

    @property
    def max_samples(self) -> int:
        return round(self.max_seconds * self.sample_rate)

    @staticmethod
    def resolve(value: Any, base_dir: Path) -> Path | GivenBytes | np.ndarray:
        if isinstance(value, np.ndarray):
            return value
        return given_bytes(value) or resolve_path(value, base_dir, "audio")

    def decode(self, path: Path | GivenBytes | np.ndarray, training: bool = False) -> torch.Tensor:
        wave = torch.from_numpy(self.waveform(path, training))
        if self.features == "waveform":
            return wave
        return log_mel(wave, self.filters, self.n_fft, self.hop_length)

    def _start(self, total: int, window: int, training: bool) -> int:
        """Where a ``window`` of ``total`` samples starts: random in training, else centred."""
        slack = total - window
        return int(torch.randint(slack + 1, ())) if training else slack // 2

    def waveform(self, path: Path | GivenBytes | np.ndarray, training: bool = False) -> np.ndarray:
        """The mono float32 samples at ``sample_rate``, at most ``max_seconds`` of them: a
        random window in a training read, the centre one otherwise. Only the samples kept
        are read from the file (and checked for NaN)."""
        source = "the samples given" if isinstance(path, np.ndarray) else str(path)
        if isinstance(path, np.ndarray):
            rate, samples = self.sample_rate, _array_samples(path)
            window = math.ceil(self.max_seconds * rate)
            if len(samples) > window:
                start = self._start(len(samples), window, training)
                samples = samples[start : start + window]
        else:
            try:
                with sf.SoundFile(path) as audio:
                    rate, total = audio.samplerate, audio.frames
                    window = math.ceil(self.max_seconds * rate)
                    if total > window:
                        audio.seek(self._start(total, window, training))
                    samples = audio.read(min(total, window), dtype="float32", always_2d=True)
            except (sf.SoundFileError, RuntimeError) as err:
                raise RowError("unreadable audio", f"{path}: {err}") from None
        if not len(samples):
            raise RowError("empty audio", f"{source} holds no samples")
        if not np.isfinite(samples).all():
            raise RowError("audio holds NaN", f"{source} holds NaN or infinite samples")
        mono = samples.mean(axis=1, dtype=np.float32)
        if rate != self.sample_rate:
            mono = soxr.resample(mono, rate, self.sample_rate)
        return np.ascontiguousarray(mono[: self.max_samples], dtype=np.float32)

    def collate(self, items: list[torch.Tensor | None]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, n_mels) or (B, S), zero-padded to the batch's longest, and the lengths."""
        step = () if self.features == "waveform" else (self.n_mels,)
        return pad_batch(items, step, torch.float32)

    def encoder_args(self) -> dict[str, Any]:
        if self.features == "waveform":
            return {"sample_rate": self.sample_rate, "max_samples": self.max_samples}
        return {"n_mels": self.n_mels, "max_frames": max(1, self.max_samples // self.hop_length)}

    def state(self) -> dict[str, Any]:
        return {
            "sample_rate": self.sample_rate,
            "max_seconds": self.max_seconds,
            "n_mels": self.n_mels,
            "n_fft": self.n_fft,
            "hop_length": self.hop_length,
            "features": self.features,
        }

    @classmethod
    def from_state(cls, column: str, state: dict[str, Any]) -> AudioPreprocessor:
        return cls(column, **state)
