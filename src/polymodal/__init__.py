"""polymodal: build, train, evaluate and serve multimodal models."""

from __future__ import annotations

__version__ = "0.1.0"
