"""An image folder with one sub-folder per class (``ROOT/cat/1.jpg``, ``ROOT/dog/2.png``...).

One row per image: ``image`` (relative to the manifest's folder), ``label`` (the class folder's
name), ``split``. Images may lie deeper inside their class folder; hidden files and folders are
passed over. A single root is split per class, seeded (each class gets ``round(n * fraction)``
val and test images, the rest train); a root per split keeps the splits it is given.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from pathlib import Path

from polymodal.data.quarantine import Quarantine
from polymodal.data.schema import IMAGE_SUFFIXES
from polymodal.data.sources.convert import (
    Conversion,
    ImageFiles,
    PathLike,
    skip,
    write_manifest,
)
from polymodal.data.sources.manifest import Row
from polymodal.data.synthetic import split_names
from polymodal.errors import ConfigError, DataError


def convert_image_folder(
    out_dir: PathLike,
    root: PathLike | Mapping[str, PathLike],
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> Conversion:
    """Write out_dir/manifest.jsonl from class folders: one ``root`` split by the fractions,
    or {split: root}. Files that are not images (by suffix) and files outside every class
    folder are left out, listed in out_dir/skipped.jsonl (``line`` 0: the file itself)."""
    if min(val_fraction, test_fraction) < 0 or val_fraction + test_fraction >= 1:
        raise ConfigError(
            f"val {val_fraction}, test {test_fraction}: fractions must be non-negative and "
            "leave some images to train on"
        )
    files, skipped = ImageFiles(out_dir, check=False), Quarantine()
    if isinstance(root, Mapping):
        classes = {split: _classes(Path(folder), skipped) for split, folder in root.items()}
        rows = _rows_as_given(classes, files)
    else:
        splits = (1 - val_fraction - test_fraction, val_fraction, test_fraction)
        rows = _rows_split(_classes(Path(root), skipped), splits, seed, files)
    return write_manifest(out_dir, rows, skipped, "image-folder")


def _classes(root: Path, skipped: Quarantine) -> dict[str, list[Path]]:
    """Each class folder's images, in name order."""
    if not root.is_dir():
        raise DataError(f"image folder {root} is not a folder")
    classes: dict[str, list[Path]] = {}
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if not entry.is_dir():
            skip(skipped, entry, -1, "outside a class folder", f"{entry} is not in one")
            continue
        classes[entry.name] = []
        for path in sorted(entry.rglob("*")):
            hidden = any(part.startswith(".") for part in path.relative_to(root).parts)
            if hidden or not path.is_file():
                continue
            if path.suffix.lower() in IMAGE_SUFFIXES:
                classes[entry.name].append(path)
            else:
                detail = f"{path.suffix or 'no suffix'}: not one of {' '.join(IMAGE_SUFFIXES)}"
                skip(skipped, path, -1, "not an image", detail)
    if not classes:
        raise DataError(f"image folder {root} has no class folder (one sub-folder per class)")
    return classes


def _rows_as_given(classes: dict[str, dict[str, list[Path]]], files: ImageFiles) -> Iterator[Row]:
    for split, by_class in classes.items():
        for label, paths in by_class.items():
            for path in paths:
                yield {"image": files.locate(path), "label": label, "split": split}


def _rows_split(
    classes: dict[str, list[Path]],
    splits: tuple[float, float, float],
    seed: int,
    files: ImageFiles,
) -> Iterator[Row]:
    rng = random.Random(seed)
    for label, paths in classes.items():
        for path, split in zip(paths, split_names(rng, len(paths), splits), strict=True):
            yield {"image": files.locate(path), "label": label, "split": split}
