"""Progress for long loops: a rich bar on a terminal, a plain line every few seconds elsewhere
(a log file, a pipe), nothing under ``--quiet`` or ``CI=true``."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
PLAIN_INTERVAL = 10.0  # seconds between plain progress lines when stderr is not a terminal
_quiet = False


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = quiet


def quiet() -> bool:
    return _quiet or os.environ.get("CI", "").lower() == "true"


def progress_bar(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate ``items``, showing progress on stderr when allowed."""
    if quiet():
        yield from items
        return
    if not sys.stderr.isatty():
        yield from plain_progress(items, description, total)
        return
    from rich.progress import track

    yield from track(items, description=description, total=total, transient=True)


def plain_progress(
    items: Iterable[T], description: str, total: int | None = None, interval: float = PLAIN_INTERVAL
) -> Iterator[T]:
    """Iterate, printing ``description: done/total (pct), elapsed, left`` to stderr at most once
    per ``interval`` seconds (none for a loop shorter than that)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    start = last = time.monotonic()
    for done, item in enumerate(items, start=1):
        yield item
        now = time.monotonic()
        if now - last < interval:
            continue
        last, elapsed = now, now - start
        line = f"{description}: {done}"
        if total:
            left = elapsed / done * (total - done)
            line += f"/{total} ({done / total:.0%}), {elapsed:.0f} s elapsed, ~{left:.0f} s left"
        else:
            line += f", {elapsed:.0f} s elapsed"
        print(line, file=sys.stderr, flush=True)
