"""Corruptions of raw values: seeded, type-keeping, growing with severity; missing-row picks."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from PIL import Image

from polymodal.config import ENCODER_TYPES
from polymodal.data.modalities.sequence import SequencePreprocessor
from polymodal.data.modalities.tabular import TabularPreprocessor
from polymodal.evaluate.corruptions import (
    CLIPPED_SHARE,
    CORRUPTIONS,
    DROP_RATE,
    MISSING_RATES,
    SERIES_STD,
    SEVERITIES,
    SNR_DB,
    TABULAR_STD,
    Waveform,
    missing_rows,
)

TEXT = " ".join(f"word{i} is here" for i in range(40))


@pytest.fixture(scope="module")
def image() -> Image.Image:
    """A 32x24 image with structure (a gradient plus a bright square), not one flat colour."""
    ys, xs = np.mgrid[0:24, 0:32]
    pixels = np.stack([xs * 6, ys * 8, (xs + ys) * 3], axis=-1).astype(np.uint8)
    pixels[6:14, 10:20] = 250
    return Image.fromarray(pixels, "RGB")


@pytest.fixture(scope="module")
def tabular() -> TabularPreprocessor:
    pre = TabularPreprocessor(["small", "large"], ["colour"])
    pre.fit(
        [{"small": i, "large": 100.0 * i, "colour": "red" if i % 2 else "blue"} for i in range(10)]
    )
    return pre


RATE = 8000


def speech_like(seconds: float = 1.0) -> Waveform:
    """Two tones under a slow amplitude envelope, with a quiet gap (not one flat level)."""
    t = np.arange(round(seconds * RATE)) / RATE
    envelope = 0.2 + 0.8 * np.abs(np.sin(2 * np.pi * 1.5 * t))
    samples = envelope * (0.5 * np.sin(2 * np.pi * 220 * t) + 0.2 * np.sin(2 * np.pi * 1330 * t))
    samples[RATE // 2 : RATE // 2 + RATE // 10] *= 0.01
    return Waveform(samples.astype(np.float32), RATE)


def series() -> np.ndarray:
    """40 steps of 3 channels on very different scales."""
    walk = np.cumsum(np.random.default_rng(0).standard_normal((40, 3)), axis=0)
    return walk * np.array([0.01, 1.0, 100.0])


@pytest.fixture(scope="module")
def sequence() -> SequencePreprocessor:
    rows = [{"s": (series() * (1 + i / 10)).tolist()} for i in range(4)]
    return SequencePreprocessor("s").fit(rows)


@pytest.fixture(scope="module")
def pres(tabular, sequence) -> dict[str, object]:
    """The fitted preprocessor each kind's corruptions are given."""
    return {"tabular": tabular, "sequence": sequence}


def _frames(image: Image.Image) -> list[Image.Image]:
    return [image.rotate(15 * i) for i in range(6)]


def _value(kind: str, image: Image.Image) -> object:
    values = {
        "image": lambda: image,
        "text": lambda: TEXT,
        "tabular": lambda: {"small": 3.0, "large": 300.0, "colour": "red"},
        "audio": speech_like,
        "sequence": series,
        "features": lambda: np.linspace(-1.0, 2.0, 32) ** 2,
        "video": lambda: _frames(image),
    }
    return values[kind]()


def _run(kind, name, value, severity, seed, pre):
    return CORRUPTIONS[kind][name](value, severity, np.random.default_rng(seed), pre)


def _same(a: object, b: object) -> bool:
    if isinstance(a, Image.Image):
        return np.array_equal(np.asarray(a), np.asarray(b))
    if isinstance(a, Waveform):
        return a.rate == b.rate and np.array_equal(a.samples, b.samples)
    if isinstance(a, np.ndarray):
        return a.shape == b.shape and np.array_equal(a, b, equal_nan=True)
    if isinstance(a, list) and a and isinstance(a[0], Image.Image):
        return len(a) == len(b) and all(map(_same, a, b))
    return a == b


def test_registry_covers_each_kind():
    assert {k: sorted(v) for k, v in CORRUPTIONS.items()} == {
        "image": ["blur", "colour_shift", "gaussian_noise", "occlusion"],
        "text": ["typos", "word_dropout", "word_swap"],
        "tabular": ["feature_dropout", "gaussian_noise"],
        "audio": ["clipping", "dropout", "gaussian_noise"],
        "sequence": ["gaussian_noise", "step_dropout", "time_shift"],
        "video": ["blur", "frame_dropout", "gaussian_noise"],
        "features": ["feature_dropout", "gaussian_noise"],
    }
    assert set(CORRUPTIONS) == set(ENCODER_TYPES)  # every kind a model can take as input
    assert SEVERITIES == (1, 2, 3, 4, 5)
    assert MISSING_RATES == (0.0, 0.25, 0.5, 0.75, 1.0)


@pytest.mark.parametrize(("kind", "name"), [(k, n) for k, fns in CORRUPTIONS.items() for n in fns])
def test_deterministic_changing_and_type_keeping(kind, name, image, pres):
    value = _value(kind, image)
    pre = pres.get(kind)
    for severity in SEVERITIES:
        first = _run(kind, name, value, severity, 7, pre)
        assert _same(first, _run(kind, name, value, severity, 7, pre))
        assert not _same(first, value), f"{name} severity {severity} left the value unchanged"
        assert type(first) is type(value)
        if kind == "image":
            assert first.size == image.size and first.mode == "RGB"
        if kind == "tabular":
            assert set(first) == set(value)
        if kind == "audio":
            assert first.rate == value.rate and first.samples.dtype == np.float32
            assert first.samples.shape == value.samples.shape
        if kind in ("sequence", "features"):
            assert first.shape == value.shape
        if kind == "video":
            assert all(f.size == image.size and f.mode == "RGB" for f in first)
    assert _same(value, _value(kind, image)), "the input must not be modified"


@pytest.mark.parametrize("name", sorted(CORRUPTIONS["image"]))
def test_image_pixel_error_grows_with_severity(name, image):
    clean = np.asarray(image, dtype=float)
    errors = [
        float(
            np.mean((np.asarray(_run("image", name, image, k, 3, None), dtype=float) - clean) ** 2)
        )
        for k in SEVERITIES
    ]
    assert all(a < b for a, b in itertools.pairwise(errors)), errors


def test_text_corruptions_grow_with_severity():
    words = TEXT.split()

    def edited(name: str, severity: int) -> int:
        out = _run("text", name, TEXT, severity, 5, None).split()
        return sum(a != b for a, b in zip(words, out, strict=False)) + abs(len(words) - len(out))

    typos = [edited("typos", k) for k in SEVERITIES]
    assert all(a <= b for a, b in itertools.pairwise(typos)) and typos[0] < typos[-1], typos
    assert edited("word_swap", 1) < edited("word_swap", 5)
    kept = [len(_run("text", "word_dropout", TEXT, k, 5, None).split()) for k in SEVERITIES]
    assert kept == sorted(kept, reverse=True) and kept[-1] < len(words)
    swapped = _run("text", "word_swap", TEXT, 5, 5, None).split()
    assert sorted(swapped) == sorted(words)  # the same words, reordered


def test_typos_edit_at_most_one_character_per_word():
    out = _run("text", "typos", TEXT, 5, 1, None).split()
    assert len(out) == len(TEXT.split())
    for before, after in zip(TEXT.split(), out, strict=True):
        assert abs(len(before) - len(after)) <= 1
        if len(before) == len(after):
            assert sum(a != b for a, b in zip(before, after, strict=True)) <= 2


def test_tabular_noise_is_scaled_by_train_std(tabular):
    values = {"small": 3.0, "large": 300.0, "colour": "red"}
    draws = np.random.default_rng(11).standard_normal(2)
    std = [tabular.std["small"], tabular.std["large"]]
    assert std[1] == pytest.approx(100 * std[0])
    for severity in SEVERITIES:
        out = _run("tabular", "gaussian_noise", values, severity, 11, tabular)
        scale = TABULAR_STD[severity - 1]
        assert out["small"] - 3.0 == pytest.approx(draws[0] * scale * std[0])
        assert out["large"] - 300.0 == pytest.approx(draws[1] * scale * std[1])
        assert out["colour"] == "red"
    absent = _run("tabular", "gaussian_noise", {"small": None, "large": 1.0}, 3, 0, tabular)
    assert absent["small"] is None


def test_feature_dropout_drops_more_columns_with_severity(tabular):
    values = {"small": 3.0, "large": 300.0, "colour": "red"}
    for seed in range(5):
        outs = [_run("tabular", "feature_dropout", values, k, seed, tabular) for k in SEVERITIES]
        dropped = [{c for c, v in out.items() if v is None} for out in outs]
        assert [len(d) for d in dropped] == [1, 1, 1, 2, 2]  # ceil(rate * 3 columns)
        assert all(a <= b for a, b in itertools.pairwise(dropped))  # nested


def snr_db(clean: np.ndarray, noisy: np.ndarray) -> float:
    noise = noisy.astype(np.float64) - clean
    return 10 * math.log10(np.mean(clean.astype(np.float64) ** 2) / np.mean(noise**2))


@pytest.mark.parametrize("channels", [1, 2])
def test_audio_noise_has_the_table_s_snr(channels):
    clip = speech_like()
    if channels == 2:
        clip = Waveform(np.stack([clip.samples, 0.3 * clip.samples[::-1]], axis=1), RATE)
    measured = [
        snr_db(clip.samples, _run("audio", "gaussian_noise", clip, k, 2, None).samples)
        for k in SEVERITIES
    ]
    assert measured == pytest.approx(SNR_DB, abs=0.5)
    silent = Waveform(np.zeros(100, np.float32), RATE)
    assert not _run("audio", "gaussian_noise", silent, 5, 0, None).samples.any()


def test_audio_dropout_silences_more_50_ms_segments_with_severity():
    clip = speech_like()  # 20 segments of 400 samples
    silenced = []
    for k in SEVERITIES:
        out = _run("audio", "dropout", clip, k, 4, None).samples
        changed = out != clip.samples
        assert not out[changed].any()  # what changed became silence
        segments = changed.reshape(20, 400).any(axis=1)
        silenced.append(set(np.flatnonzero(segments).tolist()))
        assert len(silenced[-1]) == math.ceil(DROP_RATE[k - 1] * 20)
    assert all(a <= b for a, b in itertools.pairwise(silenced))  # nested


def test_audio_clipping_limits_the_loudest_share():
    clip = speech_like()
    errors = []
    for k in SEVERITIES:
        out = _run("audio", "clipping", clip, k, 0, None).samples
        level = np.abs(out).max()
        assert np.mean(np.abs(clip.samples) > level) == pytest.approx(
            CLIPPED_SHARE[k - 1], abs=1e-3
        )
        errors.append(float(np.mean((out - clip.samples) ** 2)))
    assert all(a < b for a, b in itertools.pairwise(errors)), errors


def test_sequence_noise_is_scaled_by_each_channel_s_train_std(sequence):
    steps = series()
    steps[5, 1] = np.nan  # an absent reading stays absent
    draws = np.random.default_rng(9).standard_normal(steps.shape)
    for k in SEVERITIES:
        out = _run("sequence", "gaussian_noise", steps, k, 9, sequence)
        expected = steps + draws * SERIES_STD[k - 1] * sequence.std
        np.testing.assert_allclose(out, expected)
        assert np.isnan(out[5, 1]) and np.isnan(out).sum() == 1
    assert sequence.std[2] > 1000 * sequence.std[0]  # so each channel's noise differs


def test_step_dropout_sets_more_steps_to_nan_and_keeps_one():
    steps = series()
    dropped = []
    for k in SEVERITIES:
        out = _run("sequence", "step_dropout", steps, k, 3, None)
        gone = np.isnan(out).all(axis=1)
        assert not np.isnan(out[~gone]).any() and np.array_equal(out[~gone], steps[~gone])
        assert gone.sum() == math.ceil(DROP_RATE[k - 1] * len(steps))
        dropped.append(set(np.flatnonzero(gone).tolist()))
    assert all(a <= b for a, b in itertools.pairwise(dropped))
    two = _run("sequence", "step_dropout", steps[:2], 5, 3, None)
    assert np.isnan(two).all(axis=1).sum() == 1  # one step always stays


def test_time_shift_moves_the_series_further_with_severity():
    steps = series()
    for seed in range(4):
        shifts = []
        for k in SEVERITIES:
            out = _run("sequence", "time_shift", steps, k, seed, None)
            shift = next(
                n
                for n in range(1, len(steps))
                if np.array_equal(out[n:], steps[:-n]) or np.array_equal(out[:-n], steps[n:])
            )
            edge = out[:shift] if np.array_equal(out[shift:], steps[:-shift]) else out[-shift:]
            assert (edge == edge[0]).all()  # the edge step repeats where steps moved out
            shifts.append(shift)
        assert shifts == [2, 4, 8, 12, 16]  # round(SHIFT * 40)


def test_features_noise_is_scaled_by_each_vector_s_std():
    vectors = np.stack([np.linspace(0, 1, 16), 50 * np.linspace(-1, 1, 16)])
    draws = np.random.default_rng(5).standard_normal(vectors.shape)
    for k in SEVERITIES:
        out = _run("features", "gaussian_noise", vectors, k, 5, None)
        scale = SERIES_STD[k - 1] * vectors.std(axis=1, keepdims=True)
        np.testing.assert_allclose(out, vectors + draws * scale)


def test_feature_dropout_zeroes_more_dimensions_the_same_in_every_vector():
    vectors = np.arange(1.0, 1.0 + 3 * 20).reshape(3, 20)
    zeroed = []
    for k in SEVERITIES:
        out = _run("features", "feature_dropout", vectors, k, 6, None)
        dims = (out == 0).all(axis=0)
        assert not (out == 0)[:, ~dims].any()  # whole dimensions, in every vector
        assert dims.sum() == math.ceil(DROP_RATE[k - 1] * 20)
        zeroed.append(set(np.flatnonzero(dims).tolist()))
    assert all(a <= b for a, b in itertools.pairwise(zeroed))


def test_video_corruptions_act_on_each_frame_and_grow(image):
    frames = _frames(image)
    noisy = _run("video", "gaussian_noise", frames, 3, 1, None)
    rng = np.random.default_rng(1)  # the image corruption, frame after frame, from one rng
    for frame, out in zip(frames, noisy, strict=True):
        assert _same(out, CORRUPTIONS["image"]["gaussian_noise"](frame, 3, rng, None))
    for name in ("gaussian_noise", "blur"):
        errors = [
            np.mean(
                [
                    np.mean((np.asarray(o, float) - np.asarray(f, float)) ** 2)
                    for o, f in zip(_run("video", name, frames, k, 2, None), frames, strict=True)
                ]
            )
            for k in SEVERITIES
        ]
        assert all(a < b for a, b in itertools.pairwise(errors)), (name, errors)


def test_frame_dropout_removes_more_frames_keeping_order():
    frames = [Image.new("RGB", (4, 4), (i, 0, 0)) for i in range(8)]
    kept = []
    for k in SEVERITIES:
        out = _run("video", "frame_dropout", frames, k, 0, None)
        kept.append([f.getpixel((0, 0))[0] for f in out])
        assert kept[-1] == sorted(kept[-1])
        assert len(out) == 8 - math.ceil(DROP_RATE[k - 1] * 8)
    assert all(set(b) <= set(a) for a, b in itertools.pairwise(kept))
    one = _run("video", "frame_dropout", frames[:1], 5, 0, None)
    assert len(one) == 1  # a video never loses its last frame


def test_a_severity_outside_one_to_five_is_an_error(image):
    with pytest.raises(ValueError, match="severity must be one of"):
        _run("image", "blur", image, 6, 0, None)


def test_missing_rows_rates_are_exact_nested_and_seeded():
    picks = [missing_rows(40, rate, seed=3) for rate in MISSING_RATES]
    assert picks[0] == set() and picks[-1] == set(range(40))
    assert [len(p) for p in picks] == [0, 10, 20, 30, 40]
    assert all(a <= b for a, b in itertools.pairwise(picks))
    assert missing_rows(40, 0.5, seed=3) == picks[2]
    assert missing_rows(40, 0.5, seed=4) != picks[2]
    with pytest.raises(ValueError, match="rate must be within"):
        missing_rows(10, 1.5)
