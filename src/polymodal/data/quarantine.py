"""Rows that cannot be used, kept with their reason so a long run goes on and loses nothing."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from polymodal.errors import DataError


@dataclass(frozen=True)
class QuarantinedRow:
    """One rejected row: where it came from, which field failed and why."""

    source: str
    line: int
    reason: str
    detail: str
    field: str | None = None


class Quarantine:
    """Collects rejected rows; ``strict`` turns the first one into an error."""

    def __init__(self, strict: bool = False) -> None:
        self.strict = strict
        self.rows: list[QuarantinedRow] = []
        self._seen: set[tuple[str, int]] = set()

    def add(self, row: QuarantinedRow) -> None:
        """Keep ``row``; one already kept (the same source line, met again in a later epoch)
        is not kept twice."""
        if (row.source, row.line) in self._seen:
            return
        if self.strict:
            where = f"{row.source}:{row.line}" + (f" field '{row.field}'" if row.field else "")
            raise DataError(
                f"{where}: {row.reason}: {row.detail} "
                "(strict mode; fix the row or run without --strict to quarantine it)"
            )
        self._seen.add((row.source, row.line))
        self.rows.append(row)

    def __len__(self) -> int:
        return len(self.rows)

    def counts(self) -> dict[str, int]:
        return dict(Counter(row.reason for row in self.rows).most_common())

    def summary(self, examples: int = 3) -> dict[str, dict]:
        """Count per reason with the first few examples of each."""
        out: dict[str, dict] = {}
        for reason, count in self.counts().items():
            first = [asdict(r) for r in self.rows if r.reason == reason][:examples]
            out[reason] = {"count": count, "examples": first}
        return out

    def write(self, path: str | Path) -> Path:
        """Write one JSON object per quarantined row."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as f:
            for row in self.rows:
                f.write(json.dumps(asdict(row), ensure_ascii=False) + "\n")
        return path
