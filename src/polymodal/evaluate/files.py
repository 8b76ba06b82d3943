"""Arrays and JSON from other models' output files, read safely (nothing is unpickled)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from polymodal.errors import DataError

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
