"""Manifests: JSONL and CSV files of rows, indexed once and read one row at a time.

Indexing streams over the file once: it keeps each row's byte range, its line and its split
value (not the row), the columns that hold a value in some row, and a digest of the bytes. A
row is read again, when asked, from its byte range; memory holds the index, never the rows.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from polymodal.data.quarantine import Quarantine, QuarantinedRow
from polymodal.data.schema import is_absent
from polymodal.errors import DataError

Row = dict[str, Any]
LINE_KEY = "_line"  # 1-based line of the row in its manifest, kept for error messages
FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}


def _undecodable(text: str) -> bool:
    """True where bytes that are not UTF-8 were kept as surrogate escapes."""
    return any("\udc80" <= ch <= "\udcff" for ch in text)


def _decode(data: bytes) -> str:
    return data.decode("utf-8", errors="surrogateescape")


def _json_row(text: str) -> tuple[Row | None, tuple[str, str, str | None] | None]:
    """A JSONL line as a row, or why it is bad: (reason, detail, field)."""
    if _undecodable(text):
        return None, ("undecodable text", "the line is not valid UTF-8", None)
    try:
        row = json.loads(text)
    except json.JSONDecodeError as err:
        return None, ("malformed row", f"not valid JSON ({err.msg} at column {err.colno})", None)
    if not isinstance(row, dict):
        return None, ("malformed row", f"expected a JSON object, got {type(row).__name__}", None)
    return row, None


def _csv_row(record: list[str], header: list[str]) -> tuple[Row | None, tuple | None]:
    """A CSV record as a row (empty cells are None), or why it is bad."""
    if len(record) > len(header):
        return None, ("malformed row", f"{len(header)} columns expected, more found", None)
    row: Row = dict(zip(header, record, strict=False))
    bad = [k for k, v in row.items() if _undecodable(v)]
    if bad:
        return None, ("undecodable text", "not valid UTF-8", bad[0])
    return {k: row.get(k) or None for k in header}, None


@dataclass
class ManifestIndex:
    """Where each row of a manifest lies: byte ranges, lines and split values, in file order.

    ``columns`` are the columns that hold a value in some row; ``digest`` is the SHA-256 of
    the file's bytes (what a preprocessed cache is keyed by).
    """

    path: Path
    format: str
    starts: np.ndarray
    ends: np.ndarray
    lines: np.ndarray
    split_codes: np.ndarray  # index into split_names, per row
    split_names: list[str | None]  # the split column's distinct values (None: no value)
    columns: list[str]
    digest: str
    header: list[str] = field(default_factory=list)
    _handle: BinaryIO | None = field(default=None, repr=False, compare=False)
    _pid: int = field(default=-1, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.starts)

    @property
    def base_dir(self) -> Path:
        """Where relative paths in the rows start."""
        return self.path.parent

    def _file(self) -> BinaryIO:
        """The open manifest, one handle per process (a DataLoader worker opens its own)."""
        if self._handle is None or self._pid != os.getpid():
            self._handle, self._pid = self.path.open("rb"), os.getpid()
        return self._handle

    def read(self, position: int) -> Row:
        """Row ``position`` (0-based, file order) as parsed when the index was made."""
        handle = self._file()
        handle.seek(int(self.starts[position]))
        text = _decode(handle.read(int(self.ends[position] - self.starts[position])))
        if self.format == "jsonl":
            row, _ = _json_row(text)
        else:
            record = next(csv.reader(io.StringIO(text, newline="")))
            row, _ = _csv_row(record, self.header)
        if row is None:
            raise DataError(f"{self.path} changed since it was indexed; index it again")
        row[LINE_KEY] = int(self.lines[position])
        return row

    def rows(self, positions: Iterable[int]) -> Iterator[Row]:
        for position in positions:
            yield self.read(int(position))

    def __getstate__(self) -> dict[str, Any]:
        """Picklable for DataLoader workers: the open file stays behind."""
        return {**self.__dict__, "_handle": None, "_pid": -1}


class _Indexer:
    """Collects the index while the manifest streams past, quarantining bad rows."""

    def __init__(self, path: Path, split_column: str, quarantine: Quarantine) -> None:
        self.path, self.split_column, self.quarantine = path, split_column, quarantine
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.lines: list[int] = []
        self.split_codes: list[int] = []
        self.split_names: dict[str | None, int] = {}
        self.columns: set[str] = set()

    def add(self, start: int, end: int, line: int, row: Row | None, bad: tuple | None) -> None:
        if row is None:
            reason, detail, column = bad  # type: ignore[misc]
            self.quarantine.add(QuarantinedRow(str(self.path), line, reason, detail, column))
            return
        self.starts.append(start)
        self.ends.append(end)
        self.lines.append(line)
        value = row.get(self.split_column)
        name = None if is_absent(value) else str(value).strip()
        self.split_codes.append(self.split_names.setdefault(name, len(self.split_names)))
        self.columns.update(k for k, v in row.items() if not is_absent(v))


def _stream_jsonl(handle: Iterable[bytes], indexer: _Indexer) -> list[str]:
    offset = 0
    for number, raw in enumerate(handle, start=1):
        start, offset = offset, offset + len(raw)
        text = _decode(raw)
        if text.strip():
            indexer.add(start, offset, number, *_json_row(text))
    return []


def _stream_csv(handle: Iterable[bytes], indexer: _Indexer) -> list[str]:
    """CSV records may span lines (quoted newlines): a record's bytes run from the end of the
    previous record to the end of its last line, which the reader has just consumed."""
    offset = 0

    def lines() -> Iterator[str]:
        nonlocal offset
        for raw in handle:
            offset += len(raw)
            yield _decode(raw)

    reader = csv.reader(lines())
    header = next(reader, None)
    if header is None:
        return []
    start = offset
    for record in reader:
        if record:
            indexer.add(start, offset, reader.line_num, *_csv_row(record, header))
        start = offset
    return header


def index_manifest(
    path: str | Path, quarantine: Quarantine | None = None, split_column: str = "split"
) -> ManifestIndex:
    """Index a ``.jsonl`` or ``.csv`` manifest; malformed or undecodable rows are quarantined."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"manifest {path} does not exist; check the path in 'data.manifest'")
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise DataError(f"manifest {path}: unknown format '{path.suffix}'; use .jsonl or .csv")
    quarantine = quarantine if quarantine is not None else Quarantine()
    indexer = _Indexer(path, split_column, quarantine)
    digest = hashlib.sha256()
    with path.open("rb") as raw:
        handle = _Hashing(raw, digest)
        header = _stream_jsonl(handle, indexer) if kind == "jsonl" else _stream_csv(handle, indexer)
    if not indexer.starts:
        why = "".join(f"; line {r.line}: {r.reason}: {r.detail}" for r in quarantine.rows[:3])
        raise DataError(f"manifest {path} has no readable rows{why}")
    return ManifestIndex(
        path=path,
        format=kind,
        starts=np.asarray(indexer.starts, dtype=np.int64),
        ends=np.asarray(indexer.ends, dtype=np.int64),
        lines=np.asarray(indexer.lines, dtype=np.int64),
        split_codes=np.asarray(indexer.split_codes, dtype=np.int32),
        split_names=list(indexer.split_names),
        columns=sorted(indexer.columns),
        digest=digest.hexdigest(),
        header=header or [],
    )


class _Hashing:
    """Iterates a binary file's lines while feeding every byte to a hash."""

    def __init__(self, handle: BinaryIO, digest: Any) -> None:
        self.handle, self.digest = handle, digest

    def __iter__(self) -> Iterator[bytes]:
        for line in self.handle:
            self.digest.update(line)
            yield line
