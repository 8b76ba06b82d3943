"""easy-VQA (github.com/vzhou842/easy-VQA), read from its PyPI package ``easy-vqa``: 64x64
images of one coloured shape, and questions about its shape, its colour or whether it has a
shape or colour; 13 answers.

One row per question: ``image``, ``question``, ``answer``, ``question_type``, ``answer_type``,
``split``. easy-VQA publishes no types, so they are read off the text the way VQA v2 groups its
questions: ``answer_type`` is "yes/no", "color" or "shape"; ``question_type`` is the question with
the colour and shape it names replaced by ``COLOR`` and ``SHAPE`` (24 patterns, among them the
negated ones: "is there not a COLOR shape?"). The package's train set
is split into ``train`` and ``val`` by image (a seeded ``val_fraction`` of the train images,
with all their questions); its test set is ``test``. Images are copied to
``OUT/images/{train,test}/ID.png``, or linked there (``link``: symbolic links to the installed
package, fast, but the manifest then needs the package to stay where it is).
"""

from __future__ import annotations

import os
import random
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from polymodal.data.quarantine import Quarantine
from polymodal.data.sources.convert import (
    Conversion,
    ImageFiles,
    PathLike,
    skip,
    write_manifest,
)
from polymodal.data.sources.manifest import Row
from polymodal.errors import ConfigError, DataError

PACKAGE_HINT = "pip install easy-vqa (or polymodal[easyvqa])"
SHAPES = ("circle", "rectangle", "triangle")
COLORS = ("red", "green", "blue", "black", "gray", "teal", "brown", "yellow")
_NAMED = re.compile(rf"\b(?:(?P<color>{'|'.join(COLORS)})|(?P<shape>{'|'.join(SHAPES)}))\b")


def convert_easyvqa(
    out_dir: PathLike, val_fraction: float = 0.1, seed: int = 0, link: bool = False
) -> Conversion:
    """Write out_dir/manifest.jsonl and out_dir/images/ from the installed easy-VQA package."""
    if not 0 <= val_fraction < 1:
        raise ConfigError(f"val_fraction {val_fraction}: give a fraction in [0, 1)")
    try:
        import easy_vqa
    except ImportError:
        raise DataError(f"easy-VQA is not installed: {PACKAGE_HINT}") from None
    out = Path(out_dir)
    place = _symlink if link else shutil.copyfile
    files, skipped = ImageFiles(out), Quarantine()
    train_images = easy_vqa.get_train_image_paths()
    val_ids = _held_out(sorted(train_images), val_fraction, seed)
    sets = (
        ("train", easy_vqa.get_train_questions(), train_images),
        ("test", easy_vqa.get_test_questions(), easy_vqa.get_test_image_paths()),
    )
    rows = (
        row
        for name, questions, images in sets
        for row in _rows(
            name, questions, _copy(images, out / "images" / name, place), val_ids, files, skipped
        )
    )
    return write_manifest(out, rows, skipped, "easyvqa")


def _held_out(image_ids: list[int], fraction: float, seed: int) -> set[int]:
    """A seeded ``fraction`` of the train images, held out for validation."""
    return set(random.Random(seed).sample(image_ids, round(len(image_ids) * fraction)))


def _copy(
    images: dict[int, str], folder: Path, place: Callable[[str, Path], Any]
) -> dict[int, Path]:
    """The images placed in ``folder`` (copied or linked), by image id."""
    folder.mkdir(parents=True, exist_ok=True)
    placed = {}
    for image_id, source in sorted(images.items()):
        target = folder / f"{image_id}.png"
        place(source, target)
        placed[image_id] = target
    return placed


def _symlink(source: str, target: Path) -> None:
    target.unlink(missing_ok=True)
    os.symlink(os.path.abspath(source), target)


def _rows(
    name: str,
    questions: tuple[list[str], list[str], list[int]],
    images: dict[int, Path],
    val_ids: set[int],
    files: ImageFiles,
    skipped: Quarantine,
) -> Iterator[Row]:
    source = f"easy_vqa {name} questions"
    for index, (question, answer, image_id) in enumerate(zip(*questions, strict=True)):
        image = files.locate(images[image_id]) if image_id in images else None
        if image is None:
            detail = f"image {image_id} is not in the {name} images"
            skip(skipped, source, index, "missing image", detail, "image")
            continue
        split = "val" if name == "train" and image_id in val_ids else name
        yield {
            "image": image,
            "question": question,
            "answer": answer,
            "question_type": question_type(question),
            "answer_type": answer_type(answer),
            "split": split,
        }


def question_type(question: str) -> str:
    """The question with the colour and shape it names replaced by COLOR and SHAPE."""
    return _NAMED.sub(lambda named: "COLOR" if named["color"] else "SHAPE", question)


def answer_type(answer: str) -> str:
    """ "yes/no", "color" or "shape"."""
    return "shape" if answer in SHAPES else "color" if answer in COLORS else "yes/no"
