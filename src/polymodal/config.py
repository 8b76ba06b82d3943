"""Run configs: pydantic models, YAML loading, ``--set a.b=c`` overrides, helpful key errors."""

from __future__ import annotations

import difflib
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from polymodal.data.schema import FieldSpec
from polymodal.errors import ConfigError


class Strict(BaseModel):
    """Every config section rejects unknown keys."""

    model_config = ConfigDict(extra="forbid")


class ImageOptions(Strict):
    size: int = Field(64, ge=8)
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)


class TextOptions(Strict):
    tokenizer: str = "word"  # "word", or a Hugging Face tokenizer.json / folder / hub id
    max_length: int = Field(64, ge=1)
    min_freq: int = Field(1, ge=1)
    max_vocab: int | None = None


class DataConfig(Strict):
    manifest: Path
    fields: dict[str, FieldSpec] | None = None  # inferred from the manifest when absent
    target: str | None = None  # the target column when fields are inferred
    split_column: str = "split"
    val_fraction: float = Field(0.1, ge=0, lt=1)  # used when the manifest has no split column
    test_fraction: float = Field(0.1, ge=0, lt=1)
    strict: bool = False
    image: ImageOptions = ImageOptions()
    text: TextOptions = TextOptions()


class EncoderTransfer(Strict):
    """Options every encoder has: start from a saved model's encoder, optionally frozen."""

    init_from: Path | None = None  # a saved model dir whose encoder for the same field is copied
    freeze: bool = False  # no gradient updates; normalisation statistics stay fixed


TRANSFER_OPTIONS = frozenset(EncoderTransfer.model_fields)


class CNNEncoderConfig(EncoderTransfer):
    type: Literal["cnn"] = "cnn"
    dim: int = Field(128, ge=1)
    channels: list[int] = [32, 64, 128, 128]
    dropout: float = Field(0.0, ge=0, lt=1)


class TransformerEncoderConfig(EncoderTransfer):
    type: Literal["transformer"] = "transformer"
    dim: int = Field(64, ge=1)
    layers: int = Field(2, ge=1)
    heads: int = Field(4, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)


class MLPEncoderConfig(EncoderTransfer):
    type: Literal["mlp"] = "mlp"
    dim: int = Field(64, ge=1)
    hidden: int = Field(128, ge=1)
    embedding_dim: int = Field(16, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)


EncoderConfig = Annotated[
    Union[CNNEncoderConfig, TransformerEncoderConfig, MLPEncoderConfig],  # noqa: UP007
    Field(discriminator="type"),
]
DEFAULT_ENCODERS: dict[str, type[BaseModel]] = {
    "image": CNNEncoderConfig,
    "text": TransformerEncoderConfig,
    "tabular": MLPEncoderConfig,
}


class FusionConfig(Strict):
    type: Literal["concat", "attention", "low_rank_tensor", "cross_attention"] = "concat"
    dim: int = Field(256, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)


class ClassifyConfig(Strict):
    type: Literal["classify"] = "classify"
    target: str
    hidden: int = Field(256, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)
    weight: float = 1.0


class RetrieveConfig(Strict):
    type: Literal["retrieve"] = "retrieve"
    query: str
    gallery: str
    dim: int = Field(128, ge=1)
    temperature: float = Field(0.07, gt=0)  # initial value; learned, clamped to >= 0.01
    weight: float = 1.0


TaskConfig = Annotated[
    Union[ClassifyConfig, RetrieveConfig],  # noqa: UP007
    Field(discriminator="type"),
]


class ModelConfig(Strict):
    inputs: list[str] | None = None  # input fields the model reads; default: every input field
    encoders: dict[str, EncoderConfig] = {}  # per field; a field's kind picks the default
    fusion: FusionConfig = FusionConfig()
    tasks: list[TaskConfig] = Field(min_length=1)


class TrainConfig(Strict):
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    grad_clip: float | None = Field(1.0, gt=0)
    out_dir: Path = Path("runs")
    device: str = "cpu"
    threads: int | None = None  # torch CPU threads; default: what torch picks


class RunConfig(Strict):
    name: str = "run"
    seed: int = 0
    data: DataConfig
    model: ModelConfig
    train: TrainConfig = TrainConfig()

    @property
    def run_dir(self) -> Path:
        return self.train.out_dir / self.name


def _members(annotation: Any) -> list[Any]:
    """The alternatives of a (possibly Annotated / Optional / Union) annotation."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _members(typing.get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return [m for a in typing.get_args(annotation) for m in _members(a)]
    return [annotation]


def _model_at(root: type[BaseModel], loc: tuple[Any, ...]) -> tuple[type[BaseModel] | None, str]:
    """The config class holding the key at ``loc`` (pydantic's error location), and its path."""
    current: Any = root
    shown = [str(p) for p in loc]
    for i, part in enumerate(loc[:-1]):
        if isinstance(current, type) and issubclass(current, BaseModel):
            if part not in current.model_fields:
                return None, ".".join(shown)
            current = current.model_fields[part].annotation
            continue
        candidates = _members(current)
        containers = [c for c in candidates if typing.get_origin(c) in (dict, list)]
        if containers:  # a dict key or list index: step into the value type
            current = typing.get_args(containers[0])[-1]
            continue
        models = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        tagged = [
            m for m in models if "type" in m.model_fields and m.model_fields["type"].default == part
        ]
        if not tagged:
            return None, ".".join(shown)
        current = tagged[0]  # pydantic names the discriminator's value in the location
        shown[i] = ""
    members = [m for m in _members(current) if isinstance(m, type) and issubclass(m, BaseModel)]
    return (members[0] if len(members) == 1 else None), ".".join(p for p in shown if p)


def _describe(err: dict[str, Any], root: type[BaseModel]) -> str:
    loc = tuple(err["loc"])
    holder, path = _model_at(root, loc)
    if err["type"] == "extra_forbidden":
        valid = sorted(holder.model_fields) if holder else []
        close = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.5)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        known = f" (valid keys: {', '.join(valid)})" if valid else ""
        return f"unknown key '{path}'{hint}{known}"
    return f"'{path}': {err['msg']}"


def _set(data: dict[str, Any], dotted: str, value: Any) -> None:
    node: Any = data
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(
                    f"--set {dotted}: '{part}' is not an index of a {len(node)}-item list"
                )
            key: Any = int(part)
        elif isinstance(node, dict):
            key = part
        else:
            prefix = ".".join(parts[:i])
            raise ConfigError(f"--set {dotted}: '{prefix}' is a value, not a section")
        if last:
            node[key] = value
        else:
            if isinstance(node, dict) and not isinstance(node.get(key), dict | list):
                node[key] = {}
            node = node[key]


def parse_overrides(overrides: list[str]) -> list[tuple[str, Any]]:
    """``key.path=value`` strings to (path, YAML-parsed value) pairs."""
    pairs = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set '{item}': expected key.path=value, e.g. train.epochs=5")
        pairs.append((key.strip(), yaml.safe_load(raw) if raw.strip() else None))
    return pairs


def validate(data: dict[str, Any], source: str = "config") -> RunConfig:
    """Validate a raw dict; every problem is listed with its key path."""
    try:
        return RunConfig.model_validate(data)
    except ValidationError as err:
        problems = "\n  ".join(_describe(e, RunConfig) for e in err.errors())
        raise ConfigError(f"{source} is not valid:\n  {problems}") from None


def load_config(path: str | Path, overrides: list[str] = ()) -> RunConfig:
    """Read a YAML config, apply ``--set`` overrides, validate.

    A relative path in the file (manifest, init_from) is relative to the file; one given by an
    override is relative to the working directory.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of sections (data, model, train)")
    for section, key in _file_paths(data):
        section[key] = str((path.parent / section[key]).resolve())
    for key, value in parse_overrides(list(overrides)):
        _set(data, key, value)  # paths given here are relative to the working directory
    config = validate(data, str(path))
    config.data.manifest = config.data.manifest.resolve()
    for encoder in config.model.encoders.values():
        if encoder.init_from is not None:
            encoder.init_from = encoder.init_from.resolve()
    return config


def _file_paths(data: dict[str, Any]) -> list[tuple[dict[str, Any], str]]:
    """(mapping, key) of each path in a config file: the manifest and encoders' init_from."""
    found = []
    section = data.get("data")
    if isinstance(section, dict) and isinstance(section.get("manifest"), str):
        found.append((section, "manifest"))
    model = data.get("model")
    encoders = model.get("encoders") if isinstance(model, dict) else None
    for encoder in encoders.values() if isinstance(encoders, dict) else ():
        if isinstance(encoder, dict) and isinstance(encoder.get("init_from"), str):
            found.append((encoder, "init_from"))
    return found


def dump_config(config: RunConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json", exclude_none=True), sort_keys=False)
