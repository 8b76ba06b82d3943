"""Driving: determinism, layout, what each modality shows, and that the decision needs all three."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from itertools import combinations, pairwise
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

import polymodal
from polymodal.config import load_config
from polymodal.data.driving import (
    DECISIONS,
    LIMITS_KMH,
    MODALITIES,
    SPEEDS_KMH,
    SURFACES,
    Latent,
    bayes_accuracy,
    decide,
    generate,
)
from polymodal.errors import ConfigError

Row = dict[str, Any]


def read_jsonl(path: Path) -> list[Row]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def drives(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Row]]:
    manifest = generate(tmp_path_factory.mktemp("driving") / "data", n=600, seed=0)
    return manifest, read_jsonl(manifest)


def test_no_two_modalities_decide_and_all_three_do():
    """The best any model can do from a subset of modalities, enumerated over the latents."""
    for pair in combinations(MODALITIES, 2):
        assert bayes_accuracy(pair) <= 0.78, pair
    assert bayes_accuracy(MODALITIES) == 1.0
    assert bayes_accuracy(("camera", "track")) == pytest.approx(0.679, abs=1e-3)
    assert bayes_accuracy(("camera", "road")) == pytest.approx(0.651, abs=1e-3)
    assert bayes_accuracy(("track", "road")) == pytest.approx(0.386, abs=1e-3)


def test_the_rule_on_examples():
    def latent(**changes: Any) -> Latent:
        base = Latent(distance=3, free_lane="left", speed=1, surface="dry", fog=False, limit=80)
        return base._replace(**changes)

    assert decide(latent()) == "keep"  # margin 3 - 1 = 2, 60-78 km/h under 80
    assert decide(latent(limit=50)) == "slow_down"  # speeding
    assert decide(latent(distance=2)) == "slow_down"  # margin 1
    assert decide(latent(surface="wet")) == "slow_down"  # margin 1
    assert decide(latent(surface="icy")) == "brake"  # margin 0
    assert decide(latent(surface="icy", fog=True)) == "steer_left"
    assert decide(latent(surface="icy", fog=True, free_lane="right")) == "steer_right"


def test_same_seed_same_bytes(tmp_path: Path):
    a = generate(tmp_path / "a", n=30, seed=4).parent
    b = generate(tmp_path / "b", n=30, seed=4, progress=True).parent
    c = generate(tmp_path / "c", n=30, seed=5).parent
    assert (a / "manifest.jsonl").read_bytes() == (b / "manifest.jsonl").read_bytes()
    assert (a / "manifest.jsonl").read_bytes() != (c / "manifest.jsonl").read_bytes()
    pngs = sorted(p.name for p in (a / "camera").iterdir())
    assert pngs == [f"{i:06d}.png" for i in range(30)]
    assert all((a / "camera" / p).read_bytes() == (b / "camera" / p).read_bytes() for p in pngs)


@pytest.mark.parametrize(("n", "image_size"), [(0, 64), (1, 64), (41, 96)])
def test_any_size_columns_and_splits(tmp_path: Path, n, image_size):
    manifest = generate(tmp_path, n=n, seed=1, image_size=image_size)
    rows = read_jsonl(manifest)
    assert [r["id"] for r in rows] == [f"{i:06d}" for i in range(n)]
    counts = Counter(r["split"] for r in rows)
    assert (counts["val"], counts["test"]) == (round(n * 0.1), round(n * 0.2))
    assert counts["train"] == n - round(n * 0.1) - round(n * 0.2)
    columns = ["id", "split", "camera", "track", "surface", "visibility", "speed_limit"]
    for row in rows:
        assert list(row) == [*columns, "decision", "latent"]
        with Image.open(manifest.parent / row["camera"]) as image:
            assert image.mode == "RGB" and image.size == (image_size, image_size)
        assert len(row["track"]) == 20 and all(len(step) == 4 for step in row["track"])


@pytest.mark.parametrize("kwargs", [{"n": -1}, {"n": 5, "image_size": 16}])
def test_bad_arguments(tmp_path: Path, kwargs):
    with pytest.raises(ConfigError):
        generate(tmp_path, **kwargs)


def test_each_modality_shows_its_latents(drives):
    manifest, rows = drives
    speeds: dict[int, list[float]] = defaultdict(list)
    for row in rows:
        latent = Latent(**row["latent"])
        assert row["decision"] == decide(latent)
        assert (row["surface"], row["speed_limit"]) == (latent.surface, latent.limit)
        assert (row["visibility"] <= 80) == latent.fog and 20 <= row["visibility"] <= 400
        x, y, speed, heading = zip(*row["track"], strict=True)
        low, high = SPEEDS_KMH[latent.speed]
        assert low - 2 <= 3.6 * sum(speed) / len(speed) <= high + 2
        speeds[latent.speed] += [3.6 * s for s in speed]
        assert abs(y[-1]) < 1 and all(a < b for a, b in pairwise(y))
        assert max(map(abs, x)) < 1 and max(map(abs, heading)) < 0.1
    assert max(speeds[0]) + 5 < min(speeds[1]) and max(speeds[1]) + 5 < min(speeds[2])
    for row in rows[:200]:
        assert read_camera(manifest.parent / row["camera"]) == (
            row["latent"]["distance"],
            row["latent"]["free_lane"],
        )


def read_camera(path: Path) -> tuple[int, str]:
    """(distance level, free lane) read from the pixels of a 64 px camera image: the lowest
    row above the car where something covers the middle lane, and the side lane left bare."""
    with Image.open(path) as image:
        pixels = image.load()
    road = pixels[11, 0]  # just inside the left edge line: nothing is drawn there
    near = next(y for y in range(49, -1, -1) if pixels[32, y] != road)
    bare = [
        lane
        for lane, x in (("left", 17), ("right", 47))
        if all(pixels[x, y] == road for y in range(64))
    ]
    assert len(bare) == 1, path
    return round((48 - (near + 1)) / 7), bare[0]


def test_classes_are_near_balanced(drives):
    _, rows = drives
    counts = Counter(r["decision"] for r in rows)
    assert set(counts) == set(DECISIONS)
    assert all(0.1 <= c / len(rows) <= 0.3 for c in counts.values()), counts
    assert {r["surface"] for r in rows} == set(SURFACES)
    assert {r["speed_limit"] for r in rows} == set(LIMITS_KMH)


def test_the_packaged_config_reads_the_manifest_s_columns(drives):
    manifest, rows = drives
    path = Path(polymodal.__file__).parent / "configs" / "driving.yaml"
    config = load_config(path, [f"data.manifest={manifest}"])
    fields = config.data.fields
    assert fields is not None
    columns = set(rows[0])
    for name, spec in fields.items():
        assert set(spec.numeric + spec.categorical or [name]) <= columns, name
    assert fields["decision"].labels == list(DECISIONS)
    assert config.model.encoders["track"].type == "lstm"
