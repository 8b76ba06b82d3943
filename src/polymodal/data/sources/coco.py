"""COCO captions: the official annotation files (``captions_train2014.json``: ``images`` and
``annotations``) and Karpathy's split file (``dataset_coco.json``, also ``dataset_flickr8k.json``
and ``dataset_flickr30k.json``: ``images``, each with its ``split`` and ``sentences``).

Both write one row per image: ``image_id`` (COCO's id, what a results file
``[{"image_id", "caption"}]`` names), ``split``, ``image``, ``caption`` (the first reference, in
file order) and ``captions`` (every reference, the list captioning metrics score against).
Captions are kept as written, but for surrounding whitespace; the metrics tokenise them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from polymodal.data.quarantine import Quarantine
from polymodal.data.sources.convert import (
    Conversion,
    ImageFiles,
    PathLike,
    folder_for,
    lacking,
    read_lists,
    skip,
    write_manifest,
)
from polymodal.data.sources.manifest import Row
from polymodal.errors import ConfigError, DataError

KARPATHY_SPLITS = ("train", "val", "test", "restval")
RESTVAL = ("train", "restval")  # what Karpathy's restval images become


def convert_coco_captions(
    out_dir: PathLike,
    captions: Mapping[str, PathLike],
    images: PathLike | Mapping[str, PathLike],
    check_images: bool = True,
) -> Conversion:
    """Write out_dir/manifest.jsonl from COCO caption files, ``captions`` = {split: file}.

    An image is ``images/file_name`` (``images`` is one folder, or one per split). Left out,
    with their reasons: malformed entries, images with no caption, captions of an image the
    file does not list, images not on disk (unless ``check_images`` is off).
    """
    files, skipped = ImageFiles(out_dir, check_images), Quarantine()
    rows = (
        row
        for split, path in captions.items()
        for row in _coco_rows(path, split, folder_for(images, split, "images"), files, skipped)
    )
    return write_manifest(out_dir, rows, skipped, "coco-captions")


def _coco_rows(
    path: PathLike, split: str, folder: Path, files: ImageFiles, skipped: Quarantine
) -> Iterator[Row]:
    data = read_lists(path, ("images", "annotations"), "COCO captions")
    listing, captioning = f"{path}:images", f"{path}:annotations"
    references: dict[int, list[str]] = {}
    listed: dict[int, int] = {}  # image id -> its entry's index
    for index, entry in enumerate(data["images"]):
        if why := lacking(entry, {"id": int, "file_name": str}):
            skip(skipped, listing, index, "malformed entry", why)
        elif entry["id"] in listed:
            skip(skipped, listing, index, "duplicate id", f"image id {entry['id']} again", "id")
        else:
            listed[entry["id"]] = index
            references[entry["id"]] = []
    for index, entry in enumerate(data["annotations"]):
        why = lacking(entry, {"image_id": int, "caption": str})
        if why is None and not entry["caption"].strip():
            why = "an empty 'caption'"
        if why:
            skip(skipped, captioning, index, "malformed entry", why)
        elif entry["image_id"] not in references:
            detail = f"caption of image {entry['image_id']}, which 'images' does not list"
            skip(skipped, captioning, index, "unknown image", detail, "image_id")
        else:
            references[entry["image_id"]].append(entry["caption"].strip())
    for image_id, index in listed.items():
        image = folder / data["images"][index]["file_name"]
        row = _caption_row(image_id, split, image, references[image_id], files)
        if isinstance(row, dict):
            yield row
        else:
            skip(skipped, listing, index, *row)


def convert_karpathy(
    out_dir: PathLike,
    split_file: PathLike,
    images: PathLike,
    restval: str = "train",
    check_images: bool = True,
) -> Conversion:
    """Write out_dir/manifest.jsonl from a Karpathy split file.

    An image is ``images/filepath/filename`` (``images/filename`` where an entry has no
    ``filepath``, as in Flickr8k and Flickr30k); ``image_id`` is ``cocoid``, else ``imgid``;
    the captions are the sentences' ``raw`` texts. ``restval`` images (COCO's validation
    images outside Karpathy's val and test) join ``train``, as in Karpathy's training, or keep
    the split ``restval``.
    """
    if restval not in RESTVAL:
        raise ConfigError(f"restval '{restval}': use one of {', '.join(RESTVAL)}")
    files, skipped = ImageFiles(out_dir, check_images), Quarantine()
    rows = _karpathy_rows(split_file, Path(images), restval, files, skipped)
    return write_manifest(out_dir, rows, skipped, "karpathy")


def _karpathy_rows(
    path: PathLike, folder: Path, restval: str, files: ImageFiles, skipped: Quarantine
) -> Iterator[Row]:
    data = read_lists(path, ("images",), "Karpathy split")
    if "annotations" in data:
        raise DataError(
            f"Karpathy split file {path} has an 'annotations' list: it looks like a COCO "
            "captions file; convert it as coco-captions"
        )
    source = f"{path}:images"
    for index, entry in enumerate(data["images"]):
        if why := _karpathy_problem(entry):
            skip(skipped, source, index, "malformed entry", why)
            continue
        image_id = entry["cocoid"] if isinstance(entry.get("cocoid"), int) else entry["imgid"]
        split = restval if entry["split"] == "restval" else entry["split"]
        captions = [s["raw"].strip() for s in entry["sentences"] if s["raw"].strip()]
        image = folder / entry.get("filepath", "") / entry["filename"]
        row = _caption_row(image_id, split, image, captions, files)
        if isinstance(row, dict):
            yield row
        else:
            skip(skipped, source, index, *row)


def _karpathy_problem(entry: Any) -> str | None:
    """Why a Karpathy image entry is unusable, or None."""
    if why := lacking(entry, {"filename": str, "split": str, "sentences": list}):
        return why
    if entry["split"] not in KARPATHY_SPLITS:
        return f"split '{entry['split']}' is none of {', '.join(KARPATHY_SPLITS)}"
    if not any(isinstance(entry.get(key), int) for key in ("cocoid", "imgid")):
        return "no 'cocoid' or 'imgid' integer"
    if not isinstance(entry.get("filepath", ""), str):
        return "a 'filepath' that is not a string"
    if any(lacking(sentence, {"raw": str}) for sentence in entry["sentences"]):
        return "a sentence without a 'raw' string"
    return None


def _caption_row(
    image_id: int, split: str, image: Path, captions: list[str], files: ImageFiles
) -> Row | tuple[str, str, str]:
    """The manifest row of one image, or why there is none: (reason, detail, field)."""
    if not captions:
        return "no captions", f"image {image_id} has no caption", "captions"
    located = files.locate(image)
    if located is None:
        return "missing image", f"{image} is not a file", "image"
    return {
        "image_id": image_id,
        "split": split,
        "image": located,
        "caption": captions[0],
        "captions": captions,
    }
