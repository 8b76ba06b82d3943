"""Old module paths of the metrics, kept for one release after they moved to polymodal.metrics."""

from __future__ import annotations

import importlib
import warnings
from types import ModuleType


def moved(old: str, new: str) -> ModuleType:
    """The module ``new``, with a DeprecationWarning that ``old`` is its former name."""
    warnings.warn(
        f"{old} moved to {new}; the old name goes in the next release",
        DeprecationWarning,
        stacklevel=3,
    )
    return importlib.import_module(new)
