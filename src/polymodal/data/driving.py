"""Driving: a seeded synthetic dataset whose decision needs the camera, the track and the road.

Each row: ``camera``, a PNG of the road seen from above, behind the car (three lanes, the car at
the bottom of the middle one, an obstacle ahead in its lane, a vehicle in one neighbouring
lane); ``track``, the car's last five seconds as 20 noisy ``[x, y, speed, heading]`` steps
(metres, m/s, radians; the last step is now, at y = 0); the road condition in three tabular
columns, ``surface`` (dry, wet, icy), ``visibility`` (metres) and ``speed_limit`` (km/h); and
the ``decision``: keep, slow_down, brake, steer_left or steer_right.

**The rule** (``decide``), on latent variables each shown by one modality only:

- camera: ``distance``, how far ahead the obstacle is (six levels, 0 the nearest), and
  ``free_lane``, the neighbouring lane without a vehicle (left or right);
- track: ``speed``, three levels (30-48, 60-78, 90-108 km/h);
- road: ``surface`` (grip: dry, wet, icy), ``fog`` (visibility under 80 m, else over 150 m)
  and ``limit`` (50, 80 or 110 km/h).

The braking need is the speed level, plus one per grip level below dry, plus one in fog; the
``margin`` is the distance level minus that need. A negative margin means the car cannot stop
in time: it steers into the free lane. A margin of 0: brake. A margin of 1, or speeding (a
speed level above the limit's): slow down. Otherwise: keep.

Every latent is drawn uniformly and independently, so the decision classes come out near
balanced (brake 1/6, the others 0.21 each). Each pair of modalities misses a variable that
moves the margin over its whole range, and ``bayes_accuracy`` works out what the best possible
model on a subset of modalities can reach: 0.679 from camera + track, 0.651 from camera +
road, 0.386 from track + road; 1.0 from all three.

The cues are plain: the obstacle's distance levels lie 7 pixels apart (at 64 px), the speed
levels 12 km/h apart, the visibility ranges 70 m apart. Nothing in one modality depends on
another's latent: the camera shows no weather, the track no road.
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from collections.abc import Iterable
from itertools import product
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image, ImageDraw

from polymodal.data.synthetic import SPLITS, check_count, split_names, stream, write_jsonl
from polymodal.errors import ConfigError
from polymodal.progress import progress_bar

DECISIONS = ("keep", "slow_down", "brake", "steer_left", "steer_right")
SURFACES = ("dry", "wet", "icy")
LIMITS_KMH = (50, 80, 110)
SPEEDS_KMH = ((30.0, 48.0), (60.0, 78.0), (90.0, 108.0))  # each speed level's range
DISTANCES = 6
VISIBILITY_M = {False: (150.0, 400.0), True: (20.0, 80.0)}  # by fog
STEPS, STEP_SECONDS = 20, 0.25
MIN_IMAGE_SIZE = 32


class Latent(NamedTuple):
    """The variables the decision follows from; each modality shows only its own."""

    distance: int  # camera: 0 (nearest) .. DISTANCES - 1
    free_lane: str  # camera: "left" or "right"
    speed: int  # track: index into SPEEDS_KMH
    surface: str  # road
    fog: bool  # road: poor visibility
    limit: int  # road: km/h, one of LIMITS_KMH


# Every latent's values; each is drawn uniformly, all independently.
VALUES: dict[str, tuple[Any, ...]] = {
    "distance": tuple(range(DISTANCES)),
    "free_lane": ("left", "right"),
    "speed": tuple(range(len(SPEEDS_KMH))),
    "surface": SURFACES,
    "fog": (False, True),
    "limit": LIMITS_KMH,
}
MODALITIES = {
    "camera": ("distance", "free_lane"),
    "track": ("speed",),
    "road": ("surface", "fog", "limit"),
}


def margin(latent: Latent) -> int:
    """The obstacle's distance level minus the braking need (speed, grip, fog)."""
    need = latent.speed + SURFACES.index(latent.surface) + int(latent.fog)
    return latent.distance - need


def decide(latent: Latent) -> str:
    """The decision: steer (cannot stop), brake, slow down (little room, or speeding), keep."""
    room = margin(latent)
    if room < 0:
        return f"steer_{latent.free_lane}"
    if room == 0:
        return "brake"
    if room == 1 or latent.speed > LIMITS_KMH.index(latent.limit):
        return "slow_down"
    return "keep"


def bayes_accuracy(modalities: Iterable[str]) -> float:
    """The best accuracy any model can reach seeing only ``modalities``: over every latent
    combination (all equally likely), the share of the decision most often taken among the
    combinations those modalities cannot tell apart."""
    seen = [name for modality in modalities for name in MODALITIES[modality]]
    counts: dict[tuple[Any, ...], Counter[str]] = defaultdict(Counter)
    combos = [Latent(*values) for values in product(*VALUES.values())]
    for latent in combos:
        counts[tuple(getattr(latent, name) for name in seen)][decide(latent)] += 1
    return sum(max(c.values()) for c in counts.values()) / len(combos)


def generate(
    out_dir: str | Path,
    n: int,
    seed: int = 0,
    image_size: int = 64,
    splits: tuple[float, float, float] = SPLITS,
    progress: bool = False,
) -> Path:
    """Write out_dir/camera/000000.png ... and out_dir/manifest.jsonl; return the manifest.

    The same arguments give byte-identical files. ``splits`` are the train/val/test fractions
    (exact counts, spread by the seeded rng). Each row also keeps its ``latent`` variables.
    """
    check_count(n)
    if image_size < MIN_IMAGE_SIZE:
        raise ConfigError(f"image_size is {image_size}: driving needs at least {MIN_IMAGE_SIZE}")
    rng = random.Random(seed)
    names = split_names(rng, n, splits)
    noise = stream(seed, "driving track")
    out = Path(out_dir)
    (out / "camera").mkdir(parents=True, exist_ok=True)
    indices: Iterable[int] = range(n)
    if progress:
        indices = progress_bar(indices, "generating driving", total=n)

    def rows() -> Iterable[dict[str, Any]]:
        for i in indices:
            latent = Latent(*(rng.choice(values) for values in VALUES.values()))
            camera = f"camera/{i:06d}.png"
            _camera(rng, latent, image_size).save(out / camera, format="PNG")
            yield {
                "id": f"{i:06d}",
                "split": names[i],
                "camera": camera,
                "track": _track(noise, latent),
                "surface": latent.surface,
                "visibility": round(rng.uniform(*VISIBILITY_M[latent.fog])),
                "speed_limit": latent.limit,
                "decision": decide(latent),
                "latent": latent._asdict(),
            }

    return write_jsonl(out / "manifest.jsonl", rows())


# --- the camera ----------------------------------------------------------------------------
# Coordinates are drawn on a 64-pixel canvas and scaled to the image size.

_ROAD = (10.0, 54.0)  # the road's left and right edges
_LANE = (_ROAD[1] - _ROAD[0]) / 3
_NEAREST, _STEP = 48.0, 7.0  # the obstacle's near edge at distance level 0, and per level
_CAR = (8.0, 11.0)  # width, length
_EGO_COLOUR = (245, 245, 245)
_COLOURS = [(200, 40, 40), (40, 90, 200), (230, 190, 30), (30, 150, 70), (150, 60, 170)]
_OBSTACLES = {"car": (8.0, 11.0), "truck": (9.0, 16.0), "crate": (8.0, 6.0)}


def _lane_centre(lane: int) -> float:
    """Lane 0 left, 1 the car's, 2 right."""
    return _ROAD[0] + (lane + 0.5) * _LANE


def _camera(rng: random.Random, latent: Latent, size: int) -> Image.Image:
    """Verges, road, markings, the car, the obstacle ahead and the vehicle beside it."""
    scale = size / 64
    grass = tuple(rng.randint(low, high) for low, high in ((60, 110), (110, 160), (40, 80)))
    road = rng.randint(70, 110)
    image = Image.new("RGB", (size, size), grass)
    draw = ImageDraw.Draw(image)

    def box(x0: float, y0: float, x1: float, y1: float, fill: tuple[int, ...]) -> None:
        draw.rectangle([x0 * scale, y0 * scale, x1 * scale - 1, y1 * scale - 1], fill=fill)

    for _ in range(rng.randint(0, 6)):  # bushes on the verges
        x = rng.choice([rng.uniform(0, _ROAD[0] - 3), rng.uniform(_ROAD[1] + 3, 64)])
        y, r = rng.uniform(0, 64), rng.uniform(1.5, 3)
        draw.ellipse(
            [(x - r) * scale, (y - r) * scale, (x + r) * scale, (y + r) * scale], (30, 80, 30)
        )
    box(_ROAD[0], 0, _ROAD[1], 64, (road, road, road))
    box(_ROAD[0], 0, _ROAD[0] + 1, 64, (235, 235, 235))
    box(_ROAD[1] - 1, 0, _ROAD[1], 64, (235, 235, 235))
    phase = rng.uniform(0, 8)
    for lane in (1, 2):
        x = _ROAD[0] + lane * _LANE
        for y in np.arange(phase - 8, 64, 8):
            box(x - 0.5, y, x + 0.5, y + 4, (220, 220, 200))

    def vehicle(x: float, near: float, width: float, length: float, fill: tuple[int, ...]) -> None:
        left, right, front = x - width / 2, x + width / 2, near - length
        box(left, front, right, near, fill)
        if length > 6:  # a windscreen
            box(left + 1, front + 2, right - 1, front + 4, (40, 40, 50))

    vehicle(_lane_centre(1), 62.0, *_CAR, _EGO_COLOUR)
    near = _NEAREST - _STEP * latent.distance + rng.uniform(-1, 1)
    kind = rng.choice(sorted(_OBSTACLES))
    colour = (120, 95, 60) if kind == "crate" else rng.choice(_COLOURS)
    vehicle(_lane_centre(1) + rng.uniform(-1, 1), near, *_OBSTACLES[kind], colour)
    blocked = 0 if latent.free_lane == "right" else 2
    beside = near + rng.uniform(-4, 4)
    vehicle(_lane_centre(blocked) + rng.uniform(-1, 1), beside, *_CAR, rng.choice(_COLOURS))
    return image


# --- the track -----------------------------------------------------------------------------


def _track(rng: np.random.Generator, latent: Latent) -> list[list[float]]:
    """20 steps of [x, y, speed, heading]: a steady speed in the level's range with a slight
    trend, a gentle weave in the lane, sensor noise; y is the distance back from now."""
    low, high = SPEEDS_KMH[latent.speed]
    now = rng.uniform(low, high) / 3.6
    ago = (STEPS - 1 - np.arange(STEPS)) * STEP_SECONDS  # seconds before now
    speed = now * (1 - rng.uniform(-0.03, 0.03) * ago / ago[0])
    y = -np.concatenate([np.cumsum((speed[1:] * STEP_SECONDS)[::-1])[::-1], [0.0]])
    amplitude, period, phase = rng.uniform(0.1, 0.4), rng.uniform(3, 8), rng.uniform(0, 2 * math.pi)
    x = amplitude * np.sin(2 * math.pi * -ago / period + phase)
    heading = np.arctan(
        amplitude * 2 * math.pi / period * np.cos(2 * math.pi * -ago / period + phase) / speed
    )
    noisy = [
        x + rng.normal(0, 0.05, STEPS),
        y + rng.normal(0, 0.2, STEPS),
        speed + rng.normal(0, 0.2, STEPS),
        heading + rng.normal(0, 0.01, STEPS),
    ]
    decimals = (2, 2, 2, 4)
    return [
        [round(float(v), d) for v, d in zip(step, decimals, strict=True)]
        for step in zip(*noisy, strict=True)
    ]
