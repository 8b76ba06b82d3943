"""Errors for user mistakes: each names the field or file at fault and what to do."""

from __future__ import annotations

import difflib


class PolymodalError(Exception):
    """Base class for every mistake a user can fix; the CLI prints it and exits with code 2."""


class ConfigError(PolymodalError):
    """A config key, value or override is wrong."""


class DataError(PolymodalError):
    """A manifest, a row or a field value cannot be read."""


class ModelError(PolymodalError):
    """A saved model directory is missing files or does not match its config."""


class RowError(DataError):
    """One row's field cannot be used; the row is quarantined under ``reason``."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def did_you_mean(name: str, options: list[str] | tuple[str, ...]) -> str:
    """``"; did you mean 'x'?"`` for the closest of ``options`` (case-insensitive), else ``""``."""
    lowered = {option.lower(): option for option in options}
    close = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.5)
    return f"; did you mean '{lowered[close[0]]}'?" if close else ""
