"""Progress bars that stay quiet under CI=true, --quiet, or when output is not a terminal."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
_quiet = False


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = quiet


def quiet() -> bool:
    return _quiet or os.environ.get("CI", "").lower() == "true" or not sys.stderr.isatty()


def progress_bar(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate with a rich progress bar on stderr when allowed."""
    if quiet():
        yield from items
        return
    from rich.progress import track

    yield from track(items, description=description, total=total, transient=True)
