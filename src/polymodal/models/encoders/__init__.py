"""One encoder per modality; every encoder returns an ``Encoded``."""

from __future__ import annotations

from polymodal.models.encoders.base import Encoded
from polymodal.models.encoders.image import ImageCNN
from polymodal.models.encoders.tabular import TabularMLP
from polymodal.models.encoders.text import TextTransformer

ENCODERS = {"cnn": ImageCNN, "transformer": TextTransformer, "mlp": TabularMLP}

__all__ = ["ENCODERS", "Encoded", "ImageCNN", "TabularMLP", "TextTransformer"]
