"""Corruptions of raw values: seeded, type-keeping, growing with severity; missing-row picks."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from PIL import Image

from polymodal.data.modalities.tabular import TabularPreprocessor
from polymodal.evaluate.corruptions import (
    CORRUPTIONS,
    MISSING_RATES,
    SEVERITIES,
    TABULAR_STD,
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


def _value(kind: str, image: Image.Image) -> object:
    if kind == "image":
        return image
    if kind == "text":
        return TEXT
    return {"small": 3.0, "large": 300.0, "colour": "red"}


def _run(kind, name, value, severity, seed, pre):
    return CORRUPTIONS[kind][name](value, severity, np.random.default_rng(seed), pre)


def _same(a: object, b: object) -> bool:
    if isinstance(a, Image.Image):
        return np.array_equal(np.asarray(a), np.asarray(b))
    return a == b


def test_registry_covers_each_kind():
    assert {k: sorted(v) for k, v in CORRUPTIONS.items()} == {
        "image": ["blur", "colour_shift", "gaussian_noise", "occlusion"],
        "text": ["typos", "word_dropout", "word_swap"],
        "tabular": ["feature_dropout", "gaussian_noise"],
    }
    assert SEVERITIES == (1, 2, 3, 4, 5)
    assert MISSING_RATES == (0.0, 0.25, 0.5, 0.75, 1.0)


@pytest.mark.parametrize(("kind", "name"), [(k, n) for k, fns in CORRUPTIONS.items() for n in fns])
def test_deterministic_changing_and_type_keeping(kind, name, image, tabular):
    value = _value(kind, image)
    for severity in SEVERITIES:
        first = _run(kind, name, value, severity, 7, tabular)
        assert _same(first, _run(kind, name, value, severity, 7, tabular))
        assert not _same(first, value), f"{name} severity {severity} left the value unchanged"
        assert type(first) is type(value)
        if kind == "image":
            assert first.size == image.size and first.mode == "RGB"
        if kind == "tabular":
            assert set(first) == set(value)
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
