"""ShapeWorld: a seeded synthetic world of coloured shapes, with captions, questions, statements
and, on request, a sound track.

``generate`` draws scenes of one to three shapes and writes them as PNG files with JSONL
manifests: one row per scene, and its question, VQA and captioning views (see ``generate``).
Each scene carries a statement whose label ("is it true of the image?") is a fair coin flip
made apart from the image, and true and false statements share one distribution of texts, so
only image and text together predict the label. ``count``, the number of shapes (1 to 3),
is a number to regress, read off the scene: it draws nothing, so a seed's files are
those of a generator without it but for that column.

**Sound** (``sound=True``): each scene also gets a 1.5 s, 16 kHz mono wav in which its shapes
sound in turn, left to right, one per half second: the timbre is the shape (circle: a sine,
square: odd harmonics, triangle: every harmonic, a sawtooth), the pitch the colour (five pitches
five semitones apart, ``PITCH_HZ``), the loudness the shape's area; seeded white noise lies
under it all. Everything the sound needs is drawn from its own random stream, so the images,
captions, statements and questions of a seed are the same with the sound on or off.

**Labels for three modalities.**

``largest``, the shape of the object of largest area (a large square, then a large circle, a
large triangle, a small square, a small circle, a small triangle: equal areas only ever belong
to equal shapes), is carried by each modality alone: the image shows it, the caption names
every object's size and shape, and it is the loudest sound.

``trimodal`` needs image, statement and ``paired_audio`` together. ``paired_audio`` is the
scene's own sound (``audio``) for half the scenes, a fair coin ``m``; for the others it is the
sound of a stand-in (``sounds/ID_other.wav``): a scene drawn as scenes are drawn, again and
again, until one comes with the same statement, as true of it as of this scene, and a sound of
its own (other shapes, colours or sizes). ``trimodal`` is "true" when the statement is true of
the image (``s``, the ``label``) and the sound is the image's (``m``). Any two modalities
leave a fair coin unknown, so none of the three pairs can beat 0.75, what always answering
"false" gets:

- image + statement know ``s``, not ``m``;
- image + sound know ``m``, not ``s`` (the statement's truth is a coin flip apart from both);
- statement + sound know whether the statement holds of the sound's scene, which is ``s`` for
  either sound, and not ``m``: own sound or stand-in's, the sound is a draw from one
  distribution, that of scenes given the statement and its truth (but for the stand-in's
  having to differ from the scene's).

With all three, ``trimodal`` follows exactly.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterable
from itertools import combinations
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image, ImageDraw

from polymodal.data.synthetic import SPLITS, check_count, split_names, stream, write_wav
from polymodal.errors import ConfigError
from polymodal.progress import progress_bar

SHAPES = ("circle", "square", "triangle")
COLOURS = ("red", "green", "blue", "yellow", "purple")
SIZES = ("small", "large")
STATEMENT_TYPES = ("existence", "count", "spatial")
# Spatial statements need relations between objects, which the first models do not yet learn
# in a few minutes on a CPU; ask for them with statement_mix={"spatial": ...}.
DEFAULT_STATEMENT_MIX = {"existence": 0.75, "count": 0.25, "spatial": 0.0}
MAX_OBJECTS = 3
MIN_IMAGE_SIZE = 32

# Base colours stay JITTER away from 0 and 255, so jittered channels need no clipping.
_RGB = {
    "red": (210, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 80, 210),
    "yellow": (230, 200, 30),
    "purple": (140, 60, 180),
}
_JITTER = 12
_BACKGROUND = (226, 246)  # grey level range of the plain background
_WIDTH = {"small": 12 / 64, "large": 20 / 64}  # object width as a fraction of the image
_PAIRS = tuple((colour, shape) for colour in COLOURS for shape in SHAPES)
_AREA = {"circle": math.pi / 4, "square": 1.0, "triangle": 0.5}  # share of the bounding square

SAMPLE_RATE = 16_000
SLOT_SECONDS = 0.5  # each object sounds in its own slot, left to right
SOUND_SECONDS = MAX_OBJECTS * SLOT_SECONDS
PITCH_HZ = {"red": 220.0, "green": 294.0, "blue": 392.0, "yellow": 523.0, "purple": 698.0}
# Amplitudes of harmonics 1, 2, 3... (band-limited: the highest stays under 8 kHz).
HARMONICS = {
    "circle": {1: 1.0},
    "square": {k: 1 / k for k in range(1, 12, 2)},
    "triangle": {k: 1 / k for k in range(1, 9)},
}
_TONE = (0.05, 0.45)  # a tone's onset and end within its slot, in seconds
_RAMPS = (0.02, 0.04)  # attack and release, in seconds
_LOUDEST_RMS = 0.2  # the steady-state RMS of a large square's tone
_NOISE_RMS = (0.004, 0.012)
_JITTER_PITCH, _JITTER_LEVEL = 0.01, 0.05  # relative: pitches and levels stay well apart

_CAPTIONS = {
    1: ("{0}", "there is {0}", "an image of {0}", "a picture showing {0}"),
    2: (
        "{0} to the left of {1}",
        "{1} to the right of {0}",
        "{0} and {1}, from left to right",
        "{0} on the left and {1} on the right",
    ),
    3: (
        "{0}, {1} and {2} from left to right",
        "from left to right: {0}, {1} and {2}",
        "{0} on the left, {1} in the middle and {2} on the right",
        "{1} between {0} on the left and {2} on the right",
    ),
}
_EXISTENCE = ("there is {0}", "the image contains {0}", "{0} is present")
_COUNT = (
    "there {verb} {k} {noun}",
    "the image contains {k} {noun}",
    "the image shows exactly {k} {noun}",
)
_SPATIAL = ("the {0} is to the left of the {1}", "the {1} is to the right of the {0}")


class SceneObject(NamedTuple):
    """One shape in a scene; ``x``, ``y`` is its centre in pixels."""

    shape: str
    colour: str
    size: str
    x: int
    y: int

    @property
    def name(self) -> str:
        """How statements and questions refer to it: unique within a scene."""
        return f"{self.colour} {self.shape}"


def generate(
    out_dir: str | Path,
    n: int,
    seed: int = 0,
    image_size: int = 64,
    splits: tuple[float, float, float] = SPLITS,
    statement_mix: dict[str, float] | None = None,
    sound: bool = False,
    progress: bool = False,
) -> Path:
    """Write out_dir/images/000000.png ..., out_dir/manifest.jsonl (one row per scene: its
    caption, statement, label, ``largest``, ``count``, objects and questions) and its views of
    the same scenes and splits; return the manifest path.

    - questions.jsonl: one row per question (``id``, ``scene``, ``split``, ``image``,
      ``question``, ``answer``, ``type``).
    - vqa.jsonl, the VQA view: one row per question with VQA v2's column names:
      ``question_id``, ``split``, ``image``, ``scene``, ``question``, ``answer``,
      ``question_type`` (colour, shape, count, existence, spatial) and ``answer_type`` ("yes/no",
      "number", "other"; it follows from the answer, so it is for reports, not an input).
    - captions.jsonl, the captioning view: one row per scene, ``id``, ``split``, ``image``,
      ``caption`` (the scene's caption) and ``captions``: every wording of the scene's caption
      (the caption's templates filled with its objects), the references to score against.

    The same arguments give byte-identical files. ``splits`` are the train/val/test fractions:
    val and test get ``round(n * fraction)`` scenes, train the rest, spread by the seeded rng.
    ``statement_mix`` weighs the statement types (spatial needs two objects; a one-object scene
    asked for one gets an existence statement instead). ``sound`` also writes
    out_dir/sounds/000000.wav ... and the columns ``audio``, ``paired_audio`` and ``trimodal``.
    """
    weights = _statement_weights(statement_mix)
    _check_sizes(n, image_size)
    rng = random.Random(seed)
    names = split_names(rng, n, splits)
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    track = _SoundTrack(out, seed, image_size, weights) if sound else None
    manifest = out / "manifest.jsonl"
    indices: Iterable[int] = range(n)
    if progress:
        indices = progress_bar(indices, "generating ShapeWorld", total=n)
    with (
        manifest.open("w", encoding="utf-8", newline="\n") as scenes,
        (out / "questions.jsonl").open("w", encoding="utf-8", newline="\n") as questions,
        (out / "vqa.jsonl").open("w", encoding="utf-8", newline="\n") as vqa,
        (out / "captions.jsonl").open("w", encoding="utf-8", newline="\n") as captions,
    ):
        for i in indices:
            scene_id = f"{i:06d}"
            objects = _place_objects(rng, image_size)
            _draw(rng, objects, image_size).save(out / "images" / f"{scene_id}.png", format="PNG")
            row = _scene_row(rng, scene_id, names[i], objects, weights)
            if track is not None:
                row = _before_objects(row, track.columns(row, objects))
            scenes.write(json.dumps(row) + "\n")
            captions.write(json.dumps(_caption_view(row, objects)) + "\n")
            for k, question in enumerate(row["questions"]):
                scope = {
                    "id": f"{scene_id}_q{k}",
                    "scene": scene_id,
                    "split": row["split"],
                    "image": row["image"],
                }
                questions.write(json.dumps({**scope, **question}) + "\n")
                vqa.write(json.dumps(_vqa_view(row, scope["id"], question)) + "\n")
    return manifest


def _vqa_view(row: dict[str, Any], question_id: str, question: dict[str, str]) -> dict[str, str]:
    answer = question["answer"]
    kind = "yes/no" if answer in ("yes", "no") else "number" if answer.isdigit() else "other"
    return {
        "question_id": question_id,
        "split": row["split"],
        "image": row["image"],
        "scene": row["id"],
        "question": question["question"],
        "answer": answer,
        "question_type": question["type"],
        "answer_type": kind,
    }


def _caption_view(row: dict[str, Any], objects: list[SceneObject]) -> dict[str, Any]:
    head = {key: row[key] for key in ("id", "split", "image", "caption")}
    return {**head, "captions": captions(objects)}


def _statement_weights(mix: dict[str, float] | None) -> list[float]:
    mix = DEFAULT_STATEMENT_MIX if mix is None else mix
    if not set(mix) <= set(STATEMENT_TYPES) or min(mix.values()) < 0 or sum(mix.values()) <= 0:
        raise ConfigError(
            f"statement_mix {mix!r}: keys must be among {STATEMENT_TYPES}, weights non-negative "
            "and not all zero"
        )
    return [mix.get(kind, 0.0) for kind in STATEMENT_TYPES]


def _check_sizes(n: int, image_size: int) -> None:
    check_count(n, "scenes")
    if image_size < MIN_IMAGE_SIZE:
        raise ConfigError(f"image_size is {image_size}: ShapeWorld needs at least {MIN_IMAGE_SIZE}")


def _pixels(size: str, image_size: int) -> int:
    return round(_WIDTH[size] * image_size)


def _place_objects(rng: random.Random, image_size: int) -> list[SceneObject]:
    """1-3 objects with distinct (colour, shape) pairs, sorted left to right."""
    pairs = rng.sample(_PAIRS, rng.randint(1, MAX_OBJECTS))
    sizes = [rng.choice(SIZES) for _ in pairs]
    centres = _centres(rng, [_pixels(size, image_size) for size in sizes], image_size)
    return [
        SceneObject(shape, colour, size, x, y)
        for (colour, shape), size, (x, y) in zip(pairs, sizes, centres, strict=True)
    ]


def _centres(rng: random.Random, widths: list[int], image_size: int) -> list[tuple[int, int]]:
    """Centres in increasing x, at least a quarter image apart in x, boxes apart by a margin."""
    low = _pixels("large", image_size) // 2 + 1
    gap = -(-image_size // 4)
    pad = max(1, image_size // 32)
    slack = image_size - 2 * low - (len(widths) - 1) * gap
    while True:
        offsets = sorted(rng.randint(0, slack) for _ in widths)
        centres = [
            (low + offset + i * gap, rng.randint(low, image_size - low))
            for i, offset in enumerate(offsets)
        ]
        if all(
            max(abs(centres[a][0] - centres[b][0]), abs(centres[a][1] - centres[b][1]))
            >= (widths[a] + widths[b]) / 2 + pad
            for a, b in combinations(range(len(widths)), 2)
        ):
            return centres


def _draw(rng: random.Random, objects: list[SceneObject], image_size: int) -> Image.Image:
    """The scene on a plain light grey background, each object's colour slightly jittered."""
    grey = rng.randint(*_BACKGROUND)
    image = Image.new("RGB", (image_size, image_size), (grey, grey, grey))
    draw = ImageDraw.Draw(image)
    for obj in objects:
        fill = tuple(v + rng.randint(-_JITTER, _JITTER) for v in _RGB[obj.colour])
        width = _pixels(obj.size, image_size)
        x0, y0 = obj.x - width // 2, obj.y - width // 2
        x1, y1 = x0 + width - 1, y0 + width - 1
        if obj.shape == "circle":
            draw.ellipse((x0, y0, x1, y1), fill=fill)
        elif obj.shape == "square":
            draw.rectangle((x0, y0, x1, y1), fill=fill)
        else:
            draw.polygon([(x0, y1), (x1, y1), ((x0 + x1) / 2, y0)], fill=fill)
    return image


def _scene_row(
    rng: random.Random, scene_id: str, split: str, objects: list[SceneObject], weights: list[float]
) -> dict[str, Any]:
    truth = rng.random() < 0.5  # a coin flip, made apart from the image and the statement type
    kind = rng.choices(STATEMENT_TYPES, weights)[0]
    if kind == "spatial" and len(objects) < 2:
        kind = "existence"
    return {
        "id": scene_id,
        "split": split,
        "image": f"images/{scene_id}.png",
        "caption": _caption(rng, objects),
        "statement": _statement(rng, objects, kind, truth),
        "label": "true" if truth else "false",
        "statement_type": kind,
        "largest": largest(objects),
        "count": len(objects),
        "objects": [obj._asdict() for obj in objects],
        "questions": _questions(rng, objects),
    }


def _a(phrase: str) -> str:
    """The phrase with its indefinite article."""
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def captions(objects: list[SceneObject]) -> list[str]:
    """Every wording of a scene's caption: each of its templates, filled in."""
    phrases = [_a(f"{obj.size} {obj.colour} {obj.shape}") for obj in objects]
    return [template.format(*phrases) for template in _CAPTIONS[len(objects)]]


def _caption(rng: random.Random, objects: list[SceneObject]) -> str:
    return rng.choice(captions(objects))


def _near_miss(rng: random.Random, objects: list[SceneObject]) -> str:
    """An absent colour-shape pair: a random object with its colour or its shape changed.

    Colours and shapes are drawn uniformly, so the result is uniform over pairs, just like a
    pair picked from the scene: the text of a false claim looks like that of a true one.
    """
    present = {obj.name for obj in objects}
    obj = rng.choice(objects)
    edits = [f"{colour} {obj.shape}" for colour in COLOURS if colour != obj.colour]
    edits += [f"{obj.colour} {shape}" for shape in SHAPES if shape != obj.shape]
    return rng.choice([name for name in edits if name not in present])


def _statement(rng: random.Random, objects: list[SceneObject], kind: str, truth: bool) -> str:
    if kind == "count":
        count = len(objects)
        if not truth:
            count = rng.choice([k for k in range(1, MAX_OBJECTS + 1) if k != count])
        noun, verb = ("shape", "is") if count == 1 else ("shapes", "are")
        return rng.choice(_COUNT).format(k=count, noun=noun, verb=verb)
    if kind == "spatial":
        a, b = sorted(rng.sample(range(len(objects)), 2))
        left, right = (objects[a], objects[b]) if truth else (objects[b], objects[a])
        return rng.choice(_SPATIAL).format(left.name, right.name)
    name = rng.choice(objects).name if truth else _absent_pair(rng, objects)
    return rng.choice(_EXISTENCE).format(_a(name))


def _absent_pair(rng: random.Random, objects: list[SceneObject]) -> str:
    """A colour-shape pair not in the scene, uniform over those pairs.

    Objects are uniform over pairs and every pair is equally likely to be absent, so a false
    claim names each pair as often as a true one: its text says nothing of the label.
    """
    present = {obj.name for obj in objects}
    return rng.choice([f"{c} {s}" for c, s in _PAIRS if f"{c} {s}" not in present])


def _alone(objects: list[SceneObject], attribute: str) -> list[SceneObject]:
    """The objects whose ``attribute`` no other object in the scene shares."""
    values = [getattr(obj, attribute) for obj in objects]
    return [obj for obj, value in zip(objects, values, strict=True) if values.count(value) == 1]


def _questions(rng: random.Random, objects: list[SceneObject]) -> list[dict[str, str]]:
    """One question of each type the scene allows, as question, answer and type."""
    asked: list[tuple[str, str, str]] = []
    if by_shape := _alone(objects, "shape"):
        obj = rng.choice(by_shape)
        asked.append((f"what colour is the {obj.shape}?", obj.colour, "colour"))
    if by_colour := _alone(objects, "colour"):
        obj = rng.choice(by_colour)
        asked.append((f"what shape is the {obj.colour} object?", obj.shape, "shape"))
    asked.append(("how many shapes are there?", str(len(objects)), "count"))
    if rng.random() < 0.5:
        asked.append((f"is there {_a(rng.choice(objects).name)}?", "yes", "existence"))
    else:
        asked.append((f"is there {_a(_near_miss(rng, objects))}?", "no", "existence"))
    if len(objects) >= 2:
        asked.append(_spatial_question(rng, objects))
    return [{"question": q, "answer": a, "type": t} for q, a, t in asked]


def _spatial_question(rng: random.Random, objects: list[SceneObject]) -> tuple[str, str, str]:
    """A yes/no left-of question (yes half the time) or which shape is beside a neighbour."""
    if rng.random() < 0.5:
        a, b = rng.sample(objects, 2)
        answer = "yes" if a.x < b.x else "no"
        return f"is the {a.name} to the left of the {b.name}?", answer, "spatial"
    if rng.random() < 0.5:  # objects[1] has exactly one object to its left
        return f"what shape is to the left of the {objects[1].name}?", objects[0].shape, "spatial"
    return f"what shape is to the right of the {objects[-2].name}?", objects[-1].shape, "spatial"


def area(shape: str, size: str) -> float:
    """An object's area as a share of the image's."""
    return _AREA[shape] * _WIDTH[size] ** 2


def largest(objects: list[SceneObject]) -> str:
    """The shape of the object of largest area (equal areas only belong to equal shapes)."""
    return max(objects, key=lambda obj: area(obj.shape, obj.size)).shape


def _before_objects(row: dict[str, Any], columns: dict[str, Any]) -> dict[str, Any]:
    """The row with ``columns`` placed before its (long) objects and questions."""
    head = {k: v for k, v in row.items() if k not in ("objects", "questions")}
    return {**head, **columns, "objects": row["objects"], "questions": row["questions"]}


class _SoundTrack:
    """Writes each scene's sound, and pairs the scene with it or with a stand-in's."""

    def __init__(self, out: Path, seed: int, image_size: int, weights: list[float]) -> None:
        self.out, self.image_size, self.weights = out, image_size, weights
        self.pairing = random.Random(f"{seed} shapeworld pairing")
        self.noise = stream(seed, "shapeworld sound")
        (out / "sounds").mkdir(exist_ok=True)

    def columns(self, row: dict[str, Any], objects: list[SceneObject]) -> dict[str, str]:
        audio = f"sounds/{row['id']}.wav"
        write_wav(self.out / audio, scene_sound(self.noise, objects), SAMPLE_RATE)
        paired = audio
        matched = self.pairing.random() < 0.5
        if not matched:
            paired = f"sounds/{row['id']}_other.wav"
            other = _stand_in(self.pairing, objects, row, self.image_size, self.weights)
            write_wav(self.out / paired, scene_sound(self.noise, other), SAMPLE_RATE)
        trimodal = matched and row["label"] == "true"
        return {"audio": audio, "paired_audio": paired, "trimodal": "true" if trimodal else "false"}


def _heard(objects: list[SceneObject]) -> list[tuple[str, str, str]]:
    """What a scene's sound tells of it: each object's shape, colour and size, left to right."""
    return [(obj.shape, obj.colour, obj.size) for obj in objects]


def _stand_in(
    rng: random.Random,
    objects: list[SceneObject],
    row: dict[str, Any],
    image_size: int,
    weights: list[float],
) -> list[SceneObject]:
    """Another scene with the row's statement, as true of it as of the row's scene, and a
    different sound: scenes drawn as ``generate`` draws them, until one fits.

    Kept scenes follow the distribution of scenes given the statement and its truth, the one
    the row's own scene comes from, so the statement tells nothing of which of the two sounds.
    """
    truth = row["label"] == "true"
    while True:
        other = _place_objects(rng, image_size)
        kind = rng.choices(STATEMENT_TYPES, weights)[0]
        if kind == "spatial" and len(other) < 2:
            kind = "existence"
        statement = _statement(rng, other, kind, truth)
        if statement == row["statement"] and _heard(other) != _heard(objects):
            return other


def scene_sound(rng: np.random.Generator, objects: list[SceneObject]) -> np.ndarray:
    """SOUND_SECONDS of noise with each object's tone in its slot, left to right."""
    samples = np.zeros(round(SOUND_SECONDS * SAMPLE_RATE))
    for slot, obj in enumerate(objects):
        start = round((slot * SLOT_SECONDS + _TONE[0]) * SAMPLE_RATE)
        tone = _tone(rng, obj)
        samples[start : start + len(tone)] += tone
    return samples + rng.normal(0.0, rng.uniform(*_NOISE_RMS), len(samples))


def _tone(rng: np.random.Generator, obj: SceneObject) -> np.ndarray:
    """The object's tone: its shape's harmonics at its colour's pitch, as loud as it is large."""
    t = np.arange(round((_TONE[1] - _TONE[0]) * SAMPLE_RATE)) / SAMPLE_RATE
    pitch = PITCH_HZ[obj.colour] * (1 + rng.uniform(-_JITTER_PITCH, _JITTER_PITCH))
    wave = sum(a * np.sin(2 * np.pi * k * pitch * t) for k, a in HARMONICS[obj.shape].items())
    wave = wave / np.sqrt(np.mean(wave**2))
    attack, release = (round(r * SAMPLE_RATE) for r in _RAMPS)
    envelope = np.ones(len(t))
    envelope[:attack] = np.linspace(0, 1, attack)
    envelope[-release:] = np.linspace(1, 0, release)
    level = _LOUDEST_RMS * area(obj.shape, obj.size) / area("square", "large")
    return wave * envelope * level * (1 + rng.uniform(-_JITTER_LEVEL, _JITTER_LEVEL))
