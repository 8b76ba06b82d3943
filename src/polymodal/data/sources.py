"""Manifests: JSONL and CSV files of rows, paths resolved relative to the manifest."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from polymodal.data.quarantine import Quarantine, QuarantinedRow
from polymodal.errors import DataError

Row = dict[str, Any]
LINE_KEY = "_line"  # 1-based line of the row in its manifest, kept for error messages


@dataclass
class Manifest:
    """Rows read from one file; ``base_dir`` is where relative paths in them start."""

    path: Path
    rows: list[Row]

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    @property
    def columns(self) -> list[str]:
        """Every column that some row has, sorted."""
        return sorted({key for row in self.rows for key in row if key != LINE_KEY})


def _undecodable(text: str) -> bool:
    """True where bytes that are not UTF-8 were kept as surrogate escapes."""
    return any("\udc80" <= ch <= "\udcff" for ch in text)


def _jsonl_rows(text: str, path: Path, quarantine: Quarantine) -> list[Row]:
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        bad = None
        if _undecodable(line):
            bad = ("undecodable text", "the line is not valid UTF-8")
        else:
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                bad = ("malformed row", f"not valid JSON ({err.msg} at column {err.colno})")
            else:
                if not isinstance(row, dict):
                    bad = ("malformed row", f"expected a JSON object, got {type(row).__name__}")
        if bad:
            quarantine.add(QuarantinedRow(str(path), number, bad[0], bad[1]))
            continue
        row[LINE_KEY] = number
        rows.append(row)
    return rows


def _csv_rows(text: str, path: Path, quarantine: Quarantine) -> list[Row]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows = []
    for row in reader:
        number = reader.line_num
        if None in row:
            detail = f"{len(reader.fieldnames or [])} columns expected, more found"
            quarantine.add(QuarantinedRow(str(path), number, "malformed row", detail))
            continue
        bad = [k for k, v in row.items() if v is not None and _undecodable(v)]
        if bad:
            quarantine.add(
                QuarantinedRow(str(path), number, "undecodable text", "not valid UTF-8", bad[0])
            )
            continue
        clean: Row = {k: (None if v in ("", None) else v) for k, v in row.items()}
        clean[LINE_KEY] = number
        rows.append(clean)
    return rows


def read_manifest(path: str | Path, quarantine: Quarantine | None = None) -> Manifest:
    """Read a ``.jsonl`` or ``.csv`` manifest; malformed or undecodable rows are quarantined."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"manifest {path} does not exist; check the path in 'data.manifest'")
    quarantine = quarantine if quarantine is not None else Quarantine()
    text = path.read_bytes().decode("utf-8", errors="surrogateescape")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        rows = _jsonl_rows(text, path, quarantine)
    elif suffix == ".csv":
        rows = _csv_rows(text, path, quarantine)
    else:
        raise DataError(f"manifest {path}: unknown format '{suffix}'; use .jsonl or .csv")
    if not rows:
        bad = quarantine.rows[:3]
        why = "".join(f"; line {r.line}: {r.reason}: {r.detail}" for r in bad)
        raise DataError(f"manifest {path} has no readable rows{why}")
    return Manifest(path, rows)
