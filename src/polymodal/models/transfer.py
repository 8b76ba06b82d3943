"""Start encoders from a saved model (``init_from``): its weights and its field preprocessing.

An encoder only makes sense with the preprocessing it was trained with (the same vocabulary,
image size and normalisation), so a transferred field's fitted preprocessor comes from the
source model too, and ``load_encoders`` refuses a model whose preprocessing differs.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from safetensors.torch import load_file

from polymodal.config import ModelConfig
from polymodal.data.pipeline import FieldPreprocessor, Preprocessor
from polymodal.errors import ConfigError
from polymodal.models.model import WEIGHTS_FILE, MultimodalModel


class _Source(NamedTuple):
    """Where a field's encoder comes from: a saved model and the field there."""

    model_dir: Path
    field: str


def _sources(config: ModelConfig) -> dict[str, _Source]:
    return {
        name: _Source(encoder.init_from, encoder.init_field or name)
        for name, encoder in config.encoders.items()
        if encoder.init_from is not None
    }


def _source_preprocessor(name: str, source: _Source) -> FieldPreprocessor:
    where = f"model.encoders.{name}.init_from"
    if not (source.model_dir / WEIGHTS_FILE).is_file():
        raise ConfigError(
            f"{where}: {source.model_dir} holds no {WEIGHTS_FILE}; give a saved model directory "
            "(a run's best/ folder)"
        )
    fields = Preprocessor.load(source.model_dir).fields
    if source.field not in fields:
        raise ConfigError(
            f"{where}: the model in {source.model_dir} has no field '{source.field}' (it has "
            f"{', '.join(fields)}; model.encoders.{name}.init_field picks one)"
        )
    return fields[source.field]


def transferred_preprocessors(config: ModelConfig) -> dict[str, FieldPreprocessor]:
    """The fitted preprocessor of every field whose encoder starts from a saved model."""
    return {name: _source_preprocessor(name, source) for name, source in _sources(config).items()}


def load_encoders(model: MultimodalModel) -> list[str]:
    """Copy each ``init_from`` encoder's weights into ``model``; return the fields loaded."""
    loaded = []
    for name, source in _sources(model.config).items():
        where = f"model.encoders.{name}.init_from"
        if name not in model.encoders:
            raise ConfigError(f"{where}: '{name}' is not a model input")
        if _source_preprocessor(name, source).state() != model.preprocessor.fields[name].state():
            raise ConfigError(
                f"{where}: field '{name}' is preprocessed differently here than "
                f"'{source.field}' in {source.model_dir}; prepare the data with the source "
                "model's preprocessing"
            )
        prefix = f"encoders.{source.field}."
        weights = load_file(str(source.model_dir / WEIGHTS_FILE))
        state = {k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)}
        try:
            model.encoders[name].load_state_dict(state)
        except RuntimeError as err:
            raise ConfigError(
                f"{where}: the encoder of '{source.field}' in {source.model_dir} has another "
                "shape; give "
                f"model.encoders.{name} the same type and sizes as there ({err})"
            ) from None
        loaded.append(name)
    return loaded
