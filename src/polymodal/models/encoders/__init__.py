"""One encoder per modality; every encoder returns an ``Encoded``.

``ENCODERS`` maps (modality kind, encoder type) to what builds the encoder; ``build_model``
passes it the encoder config's options and the field preprocessor's ``encoder_args`` that its
signature names.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from torch import nn

from polymodal.models.encoders.audio import AudioCNN, AudioTransformer
from polymodal.models.encoders.base import Encoded
from polymodal.models.encoders.features import FeaturesPassthrough
from polymodal.models.encoders.image import ImageCNN, ImageViT
from polymodal.models.encoders.pretrained import PretrainedEncoder
from polymodal.models.encoders.sequence import SequenceRNN, SequenceTransformer
from polymodal.models.encoders.tabular import TabularMLP
from polymodal.models.encoders.text import TextBag, TextRNN, TextTransformer
from polymodal.models.encoders.video import VideoCNN, VideoEncoder, VideoViT

ENCODERS: dict[tuple[str, str], Callable[..., nn.Module]] = {
    ("image", "cnn"): ImageCNN,
    ("image", "vit"): ImageViT,
    ("text", "transformer"): TextTransformer,
    ("text", "gru"): partial(TextRNN, cell="gru"),
    ("text", "lstm"): partial(TextRNN, cell="lstm"),
    ("text", "bag"): TextBag,
    ("tabular", "mlp"): TabularMLP,
    ("audio", "cnn"): AudioCNN,
    ("audio", "transformer"): AudioTransformer,
    ("sequence", "gru"): partial(SequenceRNN, cell="gru"),
    ("sequence", "lstm"): partial(SequenceRNN, cell="lstm"),
    ("sequence", "transformer"): SequenceTransformer,
    ("video", "cnn"): VideoCNN,
    ("video", "vit"): VideoViT,
    ("features", "passthrough"): FeaturesPassthrough,
    ("image", "pretrained"): partial(PretrainedEncoder, "image"),
    ("text", "pretrained"): partial(PretrainedEncoder, "text"),
    ("audio", "pretrained"): partial(PretrainedEncoder, "audio"),
}

__all__ = [
    "ENCODERS",
    "AudioCNN",
    "AudioTransformer",
    "Encoded",
    "FeaturesPassthrough",
    "ImageCNN",
    "ImageViT",
    "PretrainedEncoder",
    "SequenceRNN",
    "SequenceTransformer",
    "TabularMLP",
    "TextBag",
    "TextRNN",
    "TextTransformer",
    "VideoCNN",
    "VideoEncoder",
    "VideoViT",
]
