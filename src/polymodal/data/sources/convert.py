"""What the converters share: reading a dataset's JSON files with clear errors, placing image
paths, and writing the manifest with the entries left out and why.

An entry that cannot become a row (a malformed entry, an image not on disk, a question without
its annotation...) is left out, never a crash: it is counted under its reason and listed in
``OUT/skipped.jsonl``, one ``QuarantinedRow`` a line: its ``source`` is ``FILE:LIST`` (the
file, and the list in it that holds the entry) and its ``line`` the entry's 1-based position in
that list. A file that is missing, not JSON, or not of the format asked for is a ``DataError``
naming the file and the key it lacks; so is a conversion left with no row.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from polymodal.data.quarantine import Quarantine, QuarantinedRow
from polymodal.data.sources.manifest import Row
from polymodal.errors import DataError
from polymodal.io import atomic_write, read_json

PathLike = str | Path
MANIFEST = "manifest.jsonl"
SKIPPED = "skipped.jsonl"
SPLIT_WORDS = ("train", "val", "test")
# Top-level keys that tell which published format a JSON file is (for error messages).
FORMAT_HINTS = {
    "questions": "a VQA questions file",
    "dataset": "a Karpathy split file",
    "annotations": "an annotations file (VQA or COCO)",
    "images": "a COCO captions or Karpathy split file",
}
_SPLIT_PREFIX = re.compile(r"([A-Za-z][\w-]*)=(.+)")


@dataclass
class Conversion:
    """What a converter wrote: the manifest, its rows per split, the entries it left out."""

    manifest: Path
    splits: dict[str, int]
    skipped: Quarantine

    @property
    def rows(self) -> int:
        return sum(self.splits.values())

    def describe(self) -> str:
        """One line per fact: rows per split, then what was left out and where it is listed."""
        splits = ", ".join(f"{name} {count}" for name, count in self.splits.items())
        lines = [f"wrote {self.rows} rows ({splits}): {self.manifest}"]
        if len(self.skipped):
            reasons = ", ".join(f"{r} {n}" for r, n in self.skipped.counts().items())
            lines.append(
                f"left out {len(self.skipped)} entries ({reasons}): "
                f"{self.manifest.parent / SKIPPED}"
            )
        return "\n".join(lines)


def split_from_name(path: PathLike) -> str:
    """The split a file's name gives: the first of train, val, test in it."""
    name = Path(path).name.lower()
    found = [(name.find(word), word) for word in SPLIT_WORDS if word in name]
    if not found:
        raise DataError(
            f"{path}: cannot tell its split from the name (no train, val or test in it); "
            f"give it as SPLIT=PATH, e.g. train={path}"
        )
    return min(found)[1]


def by_split(values: Iterable[PathLike], what: str) -> dict[str, Path]:
    """``SPLIT=PATH`` or ``PATH`` items as {split: path}; a plain path's split is the first of
    train, val or test in its name. A split given twice is an error."""
    files: dict[str, Path] = {}
    for value in values:
        match = _SPLIT_PREFIX.fullmatch(str(value))
        split, path = (match[1], Path(match[2])) if match else (split_from_name(value), Path(value))
        if split in files:
            raise DataError(f"{what}: two files for split '{split}' ({files[split]}, {path})")
        files[split] = path
    return files


def one_or_by_split(values: list[str], what: str) -> Path | dict[str, Path]:
    """One plain path (for every split), or ``by_split`` of several."""
    if len(values) == 1 and not _SPLIT_PREFIX.fullmatch(values[0]):
        return Path(values[0])
    return by_split(values, what)


def folder_for(folders: PathLike | Mapping[str, PathLike], split: str, what: str) -> Path:
    """The folder of a split's files: one folder for all, or one per split."""
    if not isinstance(folders, Mapping):
        return Path(folders)
    if split not in folders:
        raise DataError(f"no {what} folder for split '{split}'; give it as {split}=FOLDER")
    return Path(folders[split])


def read_lists(path: PathLike, keys: tuple[str, ...], what: str) -> dict[str, Any]:
    """A JSON object with a list under each of ``keys``; any other shape is an error naming
    the file, the key it lacks and, when it is another published file, which one it seems."""
    data = read_json(path, what)
    if not isinstance(data, dict):
        raise DataError(
            f"{what} file {path}: expected a JSON object with a list under '{keys[0]}', "
            f"got a {type(data).__name__}"
        )
    for key in keys:
        if not isinstance(data.get(key), list):
            hints = [hint for name, hint in FORMAT_HINTS.items() if name in data]
            looks = f"; it looks like {hints[0]}" if hints else ""
            raise DataError(
                f"{what} file {path}: expected a list under '{key}' at the top level; its keys are "
                f"{', '.join(map(repr, data)) or 'none'}{looks}"
            )
    return data


def lacking(entry: Any, fields: Mapping[str, type | tuple[type, ...]]) -> str | None:
    """Why ``entry`` is not an object with these fields of these types, or None."""
    if not isinstance(entry, dict):
        return f"expected a JSON object, got {type(entry).__name__}"
    for name, kind in fields.items():
        value = entry.get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            return f"no '{name}' {_kind_name(kind)}"
    return None


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(
        {str: "string", int: "integer", list: "list"}.get(k, k.__name__) for k in kinds
    )


def skip(
    skipped: Quarantine,
    source: PathLike,
    index: int,
    reason: str,
    detail: str,
    field: str | None = None,
) -> None:
    """Leave out entry ``index`` (0-based) of ``source``, ``FILE:LIST`` (or a file that is one
    list); ``field`` is the entry's field at fault, where one is."""
    skipped.add(QuarantinedRow(str(source), index + 1, reason, detail, field))


class ImageFiles:
    """Image paths as the manifest in ``out_dir`` names them, each looked for on disk once.

    A path is written relative to ``out_dir`` (absolute when no relative path leads there);
    ``locate`` gives None for a file that is not there, unless ``check`` is off.
    """

    def __init__(self, out_dir: PathLike, check: bool = True) -> None:
        self.out_dir = os.path.abspath(out_dir)
        self.check = check
        self._seen: dict[str, str | None] = {}

    def locate(self, path: PathLike) -> str | None:
        key = os.path.abspath(path)
        if key not in self._seen:
            found = not self.check or os.path.isfile(key)
            self._seen[key] = _relative(key, self.out_dir) if found else None
        return self._seen[key]


def _relative(path: str, start: str) -> str:
    try:
        return Path(os.path.relpath(path, start)).as_posix()
    except ValueError:  # another drive
        return Path(path).as_posix()


def write_manifest(
    out_dir: PathLike, rows: Iterable[Row], skipped: Quarantine, what: str
) -> Conversion:
    """Write ``rows`` to out_dir/manifest.jsonl (atomically) and the entries left out to
    out_dir/skipped.jsonl (removed when none); no row at all is an error naming ``what``."""
    out = Path(out_dir)
    splits: Counter[str] = Counter()

    def write(tmp: Path) -> None:
        with tmp.open("w", encoding="utf-8", newline="\n") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
                splits[row["split"]] += 1
        if not splits:
            reasons = ", ".join(f"{r} {n}" for r, n in skipped.counts().items())
            first = skipped.rows[0] if len(skipped) else None
            example = f"; e.g. {first.source} entry {first.line}: {first.detail}" if first else ""
            raise DataError(f"{what}: no entry became a row ({reasons or 'none found'}){example}")

    manifest = atomic_write(out / MANIFEST, write)
    (out / SKIPPED).unlink(missing_ok=True)
    if len(skipped):
        skipped.write(out / SKIPPED)
    return Conversion(manifest, dict(sorted(splits.items(), key=_split_order)), skipped)


def _split_order(item: tuple[str, int]) -> tuple[int, str]:
    name = item[0]
    return (SPLIT_WORDS.index(name) if name in SPLIT_WORDS else len(SPLIT_WORDS), name)
