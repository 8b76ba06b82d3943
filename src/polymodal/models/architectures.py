"""Named architectures: JSON data in ``models/configs/NAME.json`` that a config names with
``model.architecture``.

A file holds a one-line ``description``, the ``paper`` it follows, ``notes``, and a ``model``
section: an encoder per modality kind (given to each field of that kind the config names no
encoder for; other kinds get their defaults), a fusion, and options per task type. Keys the
config gives win. Fusion and task options are filled in when the config is validated
(:func:`with_architecture_defaults`), so a saved config.yaml reads back the same; the encoders
need the fields' kinds, so the model builder adds them (:func:`with_architecture_encoders`).

>>> "mult" in list_models()
True
>>> load_architecture("mult")["model"]["fusion"]["type"]
'mult'
"""

from __future__ import annotations

import json
import typing
from collections.abc import Mapping
from importlib import resources
from typing import Any

from pydantic import BaseModel, Field, model_validator

from polymodal.config import (
    ENCODER_TYPES,
    EncoderConfig,
    FusionConfig,
    ModelConfig,
    Strict,
    TaskConfig,
    default_encoder,
    union_members,
)
from polymodal.errors import ConfigError, did_you_mean

TASK_CONFIGS: dict[str, type[BaseModel]] = {
    typing.get_args(cls.model_fields["type"].annotation)[0]: cls
    for cls in union_members(TaskConfig)
}


class ArchitectureModel(Strict):
    """What a named architecture gives a model config."""

    encoders: dict[str, EncoderConfig] = Field(
        {}, description="encoder per modality kind, for each field of it the config names none"
    )
    fusion: FusionConfig | None = Field(None, description="the fusion; null: the config's own")
    tasks: dict[str, dict[str, Any]] = Field(
        {}, description="options per task type (retrieve: loss, dim...), for every such task"
    )

    @model_validator(mode="after")
    def _check(self) -> ArchitectureModel:
        for kind, encoder in self.encoders.items():
            if kind not in ENCODER_TYPES:
                raise ValueError(f"encoders.{kind}: no encoder reads kind '{kind}'")
            if encoder.type not in ENCODER_TYPES[kind]:
                raise ValueError(f"encoders.{kind}: a {encoder.type} encoder cannot read {kind}")
        for task, options in self.tasks.items():
            if task not in TASK_CONFIGS:
                raise ValueError(f"tasks.{task}: not a task type ({', '.join(TASK_CONFIGS)})")
            config = TASK_CONFIGS[task]
            fields = [name for name, info in config.model_fields.items() if info.is_required()]
            if set(fields) & set(options):
                raise ValueError(f"tasks.{task}: {fields} name data fields; only a config can")
            config.model_validate({**dict.fromkeys(fields, "field"), **options})
        return self


class Architecture(Strict):
    """One file of ``models/configs``."""

    description: str = Field(description="what it is, in one line")
    paper: str = Field(description="the paper it follows")
    notes: str = Field("", description="how it differs from the paper, and what to know")
    model: ArchitectureModel = Field(description="what it gives a model config")


def _folder() -> Any:
    return resources.files("polymodal.models") / "configs"


def list_models() -> list[str]:
    """The names of the named architectures, sorted."""
    return sorted(
        p.name.removesuffix(".json") for p in _folder().iterdir() if p.name.endswith(".json")
    )


def load_architecture(name: str) -> dict[str, Any]:
    """The JSON of architecture ``name`` (checked against :class:`Architecture`)."""
    names = list_models()
    if name not in names:
        raise ConfigError(
            f"model.architecture: no architecture '{name}'{did_you_mean(name, names)} "
            f"(named architectures: {', '.join(names)}; `polymodal models list` describes them)"
        )
    data = json.loads((_folder() / f"{name}.json").read_text(encoding="utf-8"))
    Architecture.model_validate(data)
    return data


def _given(value: Any) -> dict[str, Any] | None:
    """The keys a raw config value gives: a mapping's, or the set ones of a validated model."""
    if isinstance(value, BaseModel):
        return value.model_dump(exclude_unset=True)
    return dict(value) if isinstance(value, Mapping) else None


def with_architecture_defaults(model: Mapping[str, Any]) -> dict[str, Any]:
    """A raw ``model`` section naming an architecture, its fusion and task options filled in
    from the architecture under the keys the section gives."""
    architecture = Architecture.model_validate(load_architecture(model["architecture"])).model
    merged = dict(model)
    fusion = _given(model.get("fusion", {}))
    if architecture.fusion is not None and fusion is not None:
        merged["fusion"] = {**architecture.fusion.model_dump(exclude_unset=True), **fusion}
    tasks = model.get("tasks")
    if isinstance(tasks, list):
        merged["tasks"] = []
        for task in tasks:
            given = _given(task)
            if given is None:  # not a mapping: validation says what is wrong with it
                merged["tasks"].append(task)
                continue
            options = architecture.tasks.get(str(given.get("type")), {})
            merged["tasks"].append({**options, **given})
    return merged


def with_architecture_encoders(config: ModelConfig, kinds: Mapping[str, str]) -> ModelConfig:
    """``config`` with an encoder for each field of ``kinds`` (field -> modality kind) it names
    none for: its architecture's for that kind, else the kind's default.

    Every field's encoder is then written out, so a saved model reads back the same even if the
    architecture's file changes. Without an architecture ``config`` comes back as it is.
    """
    if config.architecture is None:
        return config
    by_kind = Architecture.model_validate(load_architecture(config.architecture)).model.encoders
    added = {
        name: by_kind[kind] if kind in by_kind else default_encoder(kind)
        for name, kind in kinds.items()
        if name not in config.encoders and kind in ENCODER_TYPES
    }
    return config.model_copy(update={"encoders": {**config.encoders, **added}})
