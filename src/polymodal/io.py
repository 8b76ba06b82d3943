"""Files: atomic writes, so a crash mid-save never leaves a half-written file, and safe readers
of other programs' outputs (arrays and JSON; nothing is ever unpickled). Every layer may use it.

A write goes to a hidden temporary file beside its target (``.NAME.RANDOM.tmp``) and is renamed
into place; a process killed mid-write leaves that temporary file behind, and the next save
into the same folder removes it (``remove_stale_temp_files``).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from polymodal.errors import DataError

TEMP_SUFFIX = ".tmp"


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)  # the bytes reach the disk before the name does
        finally:
            os.close(fd)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def remove_stale_temp_files(directory: str | Path) -> list[Path]:
    """Delete the temporary files that killed writes left in ``directory``; returns them."""
    stale = sorted(Path(directory).glob(f".*{TEMP_SUFFIX}"))
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(path: str | Path, value: Any) -> Path:
    """``value`` as indented UTF-8 JSON, written atomically."""
    return atomic_write_text(path, json.dumps(value, indent=1, ensure_ascii=False))


ARRAY_SUFFIXES = (".npy", ".json", ".csv", ".txt")


def read_json(path: str | Path, what: str) -> Any:
    """A JSON file's value; a missing or malformed file is a DataError naming it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} file {path} does not exist")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{what} file {path} is not valid JSON: {err}") from None


def read_array(path: str | Path, what: str) -> np.ndarray:
    """A numeric array from .npy (no pickles), .json (nested lists) or .csv/.txt (rows)."""
    path = Path(path)
    if path.suffix not in ARRAY_SUFFIXES:
        raise DataError(
            f"{what} file {path}: unknown format; use one of {', '.join(ARRAY_SUFFIXES)}"
        )
    if not path.is_file():
        raise DataError(f"{what} file {path} does not exist")
    try:
        if path.suffix == ".npy":
            array = np.load(path, allow_pickle=False)
        elif path.suffix == ".json":
            array = np.asarray(read_json(path, what), dtype=np.float64)
        else:
            array = np.loadtxt(path, delimiter="," if path.suffix == ".csv" else None, ndmin=1)
    except (ValueError, OSError) as err:
        raise DataError(f"{what} file {path} does not hold a numeric array: {err}") from None
    if array.dtype.kind not in "biuf":
        raise DataError(f"{what} file {path} holds {array.dtype} values; expected numbers")
    return array


def read_class_ids(path: str | Path, what: str) -> np.ndarray:
    """Integer class ids (a text or JSON file reads them as floats: whole numbers are taken)."""
    array = read_array(path, what)
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)) or not np.all(array == np.round(array)):
            raise DataError(f"{what} file {path} must hold whole-number class ids")
        array = array.astype(np.int64)
    return array
