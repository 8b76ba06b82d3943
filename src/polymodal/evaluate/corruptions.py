"""Seeded corruptions of raw field values, severities 1-5, for every input kind.

Every corruption is ``fn(value, severity, rng, pre)``: ``value`` is the raw value as a manifest
row gives it, ``pre`` the field's fitted preprocessor (tabular and sequence noise is scaled by
the train std it knows) and ``rng`` the only source of randomness. The raw values:

- image: the file loaded upright as RGB (full size);
- text: the string; tabular: the field's ``{column: value}``;
- audio: a ``Waveform``, the samples the audio reader decodes (mono, resampled, the evaluation
  window), so corruptions act on what the model hears;
- sequence: the (T, C) float64 steps the reader keeps from the cell (free of NaN, the last
  ``max_length``), before standardisation;
- features: the (D,) or (T, D) float64 array as stored;
- video: the frames as the reader samples and fits them (PIL images at the model's size:
  ImageNet-C's convention of corrupting at the input resolution).

Each function draws the same numbers at every severity, so with equal seeds a higher severity
extends a lower one (a larger noise scale, a superset of edited words or dropped columns, steps,
segments or frames, a patch that contains the smaller one). A dropout never removes every step,
segment or frame, so the value still reads.
"""

from __future__ import annotations

import math
import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from polymodal.data.modalities.sequence import SequencePreprocessor
from polymodal.data.modalities.tabular import TabularPreprocessor

SEVERITIES = (1, 2, 3, 4, 5)
MISSING_RATES = (0.0, 0.25, 0.5, 0.75, 1.0)

Corruption = Callable[[Any, int, np.random.Generator, Any], Any]

# Per-severity strengths (index severity - 1). Image noise follows ImageNet-C's Gaussian noise
# (Hendrycks & Dietterich, 2019); the others scale with the image size or the text length.
NOISE_STD = (0.08, 0.12, 0.18, 0.26, 0.38)  # of the 0-255 range
BLUR_STD = (0.01, 0.02, 0.03, 0.045, 0.06)  # of the shorter image side
PATCH_SIDE = (0.15, 0.25, 0.35, 0.45, 0.55)  # of each image side
COLOUR_SHIFT = (0.05, 0.1, 0.2, 0.3, 0.4)  # largest channel offset, of the 0-255 range
WORD_RATE = (0.1, 0.2, 0.3, 0.4, 0.5)  # words edited, dropped or swapped
TABULAR_STD = (0.1, 0.2, 0.4, 0.7, 1.0)  # of each numeric column's train std
COLUMN_RATE = (0.1, 0.2, 0.3, 0.4, 0.5)  # columns dropped (at least one)
SNR_DB = (30.0, 20.0, 10.0, 5.0, 0.0)  # audio signal-to-noise ratio after white noise
CLIPPED_SHARE = (0.02, 0.05, 0.1, 0.2, 0.4)  # audio samples beyond the clipping level
SERIES_STD = (0.1, 0.2, 0.4, 0.7, 1.0)  # of each sequence channel's train std, each vector's std
SHIFT = (0.05, 0.1, 0.2, 0.3, 0.4)  # of a series' length, the steps it is moved by (at least 1)
DROP_RATE = (0.1, 0.2, 0.3, 0.4, 0.5)  # audio segments, steps, frames or feature dims dropped
SEGMENT_SECONDS = 0.05  # the audio segments a dropout silences (a lost packet)


def _strength(table: tuple[float, ...], severity: int) -> float:
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {SEVERITIES}, got {severity}")
    return table[severity - 1]


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float32)


def _image(pixels: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "RGB")


def image_gaussian_noise(
    image: Image.Image, severity: int, rng: np.random.Generator, pre: Any = None
) -> Image.Image:
    """Add i.i.d. Gaussian noise to every pixel channel; returns an RGB image of the same size."""
    pixels = _pixels(image)
    noise = rng.standard_normal(pixels.shape).astype(np.float32)
    return _image(pixels + noise * _strength(NOISE_STD, severity) * 255)


def image_blur(
    image: Image.Image, severity: int, rng: np.random.Generator, pre: Any = None
) -> Image.Image:
    """Gaussian blur with a standard deviation proportional to the shorter side."""
    radius = _strength(BLUR_STD, severity) * min(image.size)
    return image.convert("RGB").filter(ImageFilter.GaussianBlur(radius))


def image_occlusion(
    image: Image.Image, severity: int, rng: np.random.Generator, pre: Any = None
) -> Image.Image:
    """A mid-grey square-ish patch (a fraction of each side) at a random place, fully inside."""
    pixels = _pixels(image)
    height, width = pixels.shape[:2]
    side = _strength(PATCH_SIDE, severity)
    h, w = max(1, round(side * height)), max(1, round(side * width))
    u, v = rng.random(2)
    top, left = int(u * (height - h)), int(v * (width - w))
    pixels[top : top + h, left : left + w] = 127.0
    return _image(pixels)


def image_colour_shift(
    image: Image.Image, severity: int, rng: np.random.Generator, pre: Any = None
) -> Image.Image:
    """Offset each channel by a random direction scaled so the largest offset is the strength."""
    direction = rng.uniform(-1.0, 1.0, 3).astype(np.float32)
    direction /= max(float(np.abs(direction).max()), 1e-6)
    return _image(_pixels(image) + direction * _strength(COLOUR_SHIFT, severity) * 255)


def _word_draws(words: list[str], rng: np.random.Generator) -> np.ndarray:
    """One uniform draw per word: a word is affected when its draw is below the rate."""
    return rng.random(len(words))


def text_typos(text: str, severity: int, rng: np.random.Generator, pre: Any = None) -> str:
    """One character edit (substitute, insert, delete or swap neighbours) in a share of words."""
    rate = _strength(WORD_RATE, severity)
    words = text.split()
    draws = _word_draws(words, rng)
    letters = string.ascii_lowercase
    out = []
    for word, draw in zip(words, draws, strict=True):
        op, where, letter = int(rng.integers(4)), float(rng.random()), int(rng.integers(25))
        if draw >= rate:
            out.append(word)
            continue
        i = min(int(where * len(word)), len(word) - 1)
        if op == 3 and len(word) < 2:
            op = 0  # nothing to swap: substitute instead
        if op == 2 and len(word) < 2:
            op = 1  # deleting the only character would drop the word: insert instead
        other = letters.replace(word[i].lower(), "")[letter % (len(letters) - 1)]
        if op == 0:
            word = word[:i] + other + word[i + 1 :]
        elif op == 1:
            word = word[:i] + other + word[i:]
        elif op == 2:
            word = word[:i] + word[i + 1 :]
        else:
            i = min(i, len(word) - 2)
            word = word[:i] + word[i + 1] + word[i] + word[i + 2 :]
        out.append(word)
    return " ".join(out)


def text_word_dropout(text: str, severity: int, rng: np.random.Generator, pre: Any = None) -> str:
    """Drop a share of the words (all of them may go: an empty string is an absent field)."""
    rate = _strength(WORD_RATE, severity)
    words = text.split()
    draws = _word_draws(words, rng)
    return " ".join(w for w, draw in zip(words, draws, strict=True) if draw >= rate)


def text_word_swap(text: str, severity: int, rng: np.random.Generator, pre: Any = None) -> str:
    """Swap a share of the words with their right-hand neighbour, left to right."""
    rate = _strength(WORD_RATE, severity)
    words = text.split()
    draws = _word_draws(words, rng)
    i = 0
    while i < len(words) - 1:
        if draws[i] < rate:
            words[i], words[i + 1] = words[i + 1], words[i]
            i += 2
        else:
            i += 1
    return " ".join(words)


def _numeric(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) else None


def tabular_gaussian_noise(
    values: dict[str, Any], severity: int, rng: np.random.Generator, pre: TabularPreprocessor
) -> dict[str, Any]:
    """Add Gaussian noise to each present numeric column, scaled by the column's train std."""
    scale = _strength(TABULAR_STD, severity)
    noise = rng.standard_normal(len(pre.numeric))
    out = dict(values)
    for column, draw in zip(pre.numeric, noise, strict=True):
        number = _numeric(values.get(column))
        if number is not None:
            out[column] = number + float(draw) * scale * pre.std.get(column, 1.0)
    return out


def tabular_feature_dropout(
    values: dict[str, Any], severity: int, rng: np.random.Generator, pre: TabularPreprocessor
) -> dict[str, Any]:
    """Set ``ceil(rate * columns)`` random columns (numeric and categorical) absent."""
    count = math.ceil(_strength(COLUMN_RATE, severity) * len(pre.columns))
    dropped = {pre.columns[i] for i in rng.permutation(len(pre.columns))[:count]}
    return {c: None if c in dropped else values.get(c) for c in pre.columns}


@dataclass(frozen=True, eq=False)
class Waveform:
    """Decoded audio: float32 ``samples``, (N,) or (N, channels), at ``rate`` Hz."""

    samples: np.ndarray
    rate: int


def _dropped(count: int, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Which of ``count`` parts a dropout removes: the first ``ceil(rate * count)`` of a seeded
    permutation, at most ``count - 1`` (one part always stays)."""
    drop = min(count - 1, math.ceil(_strength(DROP_RATE, severity) * count))
    return rng.permutation(count)[:drop]


def _power(samples: np.ndarray) -> float:
    return float(np.mean(np.square(samples, dtype=np.float64)))


def audio_gaussian_noise(
    audio: Waveform, severity: int, rng: np.random.Generator, pre: Any = None
) -> Waveform:
    """White Gaussian noise at exactly ``SNR_DB`` below the clip's power (the noise drawn is
    scaled to the power that ratio gives); a silent clip stays silent."""
    noise = rng.standard_normal(audio.samples.shape)
    target = _power(audio.samples) / 10 ** (_strength(SNR_DB, severity) / 10)
    noise *= math.sqrt(target / max(_power(noise), np.finfo(float).tiny))
    return Waveform((audio.samples + noise).astype(np.float32), audio.rate)


def audio_dropout(
    audio: Waveform, severity: int, rng: np.random.Generator, pre: Any = None
) -> Waveform:
    """Silence a share of the clip's ``SEGMENT_SECONDS`` segments, as lost packets do."""
    length = max(1, round(SEGMENT_SECONDS * audio.rate))
    samples = audio.samples.copy()
    for i in _dropped(math.ceil(len(samples) / length), severity, rng):
        samples[i * length : (i + 1) * length] = 0.0
    return Waveform(samples, audio.rate)


def audio_clipping(
    audio: Waveform, severity: int, rng: np.random.Generator, pre: Any = None
) -> Waveform:
    """Hard clipping, as too much input gain gives: samples limited to the amplitude that a
    share (``CLIPPED_SHARE``) of them exceed."""
    level = np.quantile(np.abs(audio.samples), 1.0 - _strength(CLIPPED_SHARE, severity))
    return Waveform(np.clip(audio.samples, -level, level).astype(np.float32), audio.rate)


def sequence_gaussian_noise(
    steps: np.ndarray, severity: int, rng: np.random.Generator, pre: SequencePreprocessor
) -> np.ndarray:
    """Add Gaussian noise to every value, scaled by its channel's train std (NaN stays NaN)."""
    noise = rng.standard_normal(steps.shape)
    return steps + noise * _strength(SERIES_STD, severity) * pre.std


def sequence_step_dropout(
    steps: np.ndarray, severity: int, rng: np.random.Generator, pre: Any = None
) -> np.ndarray:
    """Set a share of the steps to NaN (a lost reading: the reader leaves them out)."""
    out = steps.astype(np.float64)
    out[_dropped(len(steps), severity, rng)] = np.nan
    return out


def sequence_time_shift(
    steps: np.ndarray, severity: int, rng: np.random.Generator, pre: Any = None
) -> np.ndarray:
    """Delay or advance the series (a random direction) by a share of its length: the steps
    moved out are lost and the edge step repeats in their place (a lagging sensor)."""
    count = len(steps)
    shift = min(count - 1, max(1, round(_strength(SHIFT, severity) * count)))
    delay = rng.random() < 0.5
    pad = ((shift, 0) if delay else (0, shift),) + ((0, 0),) * (steps.ndim - 1)
    padded = np.pad(steps, pad, mode="edge")
    return padded[:count] if delay else padded[shift:]


def features_gaussian_noise(
    features: np.ndarray, severity: int, rng: np.random.Generator, pre: Any = None
) -> np.ndarray:
    """Add Gaussian noise scaled by each vector's own std (over its D values)."""
    scale = _strength(SERIES_STD, severity) * features.std(axis=-1, keepdims=True)
    return features + rng.standard_normal(features.shape) * scale


def features_dropout(
    features: np.ndarray, severity: int, rng: np.random.Generator, pre: Any = None
) -> np.ndarray:
    """Set a share of the D dimensions to 0 (the same ones in every vector of a (T, D) row)."""
    out = features.copy()
    out[..., _dropped(features.shape[-1], severity, rng)] = 0.0
    return out


def _per_frame(corrupt: Corruption) -> Corruption:
    """An image corruption applied to each frame of a video in turn, drawing from one rng."""

    def per_frame(
        frames: list[Image.Image], severity: int, rng: np.random.Generator, pre: Any = None
    ) -> list[Image.Image]:
        return [corrupt(frame, severity, rng, pre) for frame in frames]

    per_frame.__doc__ = f"{corrupt.__doc__} Applied to each frame."
    return per_frame


def video_frame_dropout(
    frames: list[Image.Image], severity: int, rng: np.random.Generator, pre: Any = None
) -> list[Image.Image]:
    """Remove a share of the frames (the video the reader reads is shorter)."""
    gone = set(_dropped(len(frames), severity, rng).tolist())
    return [frame for i, frame in enumerate(frames) if i not in gone]


CORRUPTIONS: dict[str, dict[str, Corruption]] = {
    "image": {
        "gaussian_noise": image_gaussian_noise,
        "blur": image_blur,
        "occlusion": image_occlusion,
        "colour_shift": image_colour_shift,
    },
    "text": {
        "typos": text_typos,
        "word_dropout": text_word_dropout,
        "word_swap": text_word_swap,
    },
    "tabular": {
        "gaussian_noise": tabular_gaussian_noise,
        "feature_dropout": tabular_feature_dropout,
    },
    "audio": {
        "gaussian_noise": audio_gaussian_noise,
        "dropout": audio_dropout,
        "clipping": audio_clipping,
    },
    "sequence": {
        "gaussian_noise": sequence_gaussian_noise,
        "step_dropout": sequence_step_dropout,
        "time_shift": sequence_time_shift,
    },
    "video": {
        "gaussian_noise": _per_frame(image_gaussian_noise),
        "blur": _per_frame(image_blur),
        "frame_dropout": video_frame_dropout,
    },
    "features": {
        "gaussian_noise": features_gaussian_noise,
        "feature_dropout": features_dropout,
    },
}


def missing_rows(count: int, rate: float, seed: int = 0) -> set[int]:
    """Indices of ``round(rate * count)`` rows picked by a seeded permutation.

    The same seed picks nested sets as the rate grows; rate 0 picks none and rate 1 all.
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate must be within [0, 1], got {rate}")
    order = np.random.default_rng(seed).permutation(count)
    return {int(i) for i in order[: round(rate * count)]}
