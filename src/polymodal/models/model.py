"""MultimodalModel: encoders per field, a fusion, task heads; saved as safetensors + JSON."""

from __future__ import annotations

import inspect
import json
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.checkpoint import checkpoint

from polymodal import __version__
from polymodal.config import (
    ENCODER_TYPES,
    TRANSFER_OPTIONS,
    EncoderConfig,
    FusedTask,
    ModelConfig,
    default_encoder,
)
from polymodal.data.pipeline import Preprocessor
from polymodal.data.schema import Batch
from polymodal.errors import ConfigError, ModelError, did_you_mean
from polymodal.io import atomic_write, atomic_write_text, remove_stale_temp_files
from polymodal.models.architectures import with_architecture_encoders
from polymodal.models.encoders import ENCODERS, Encoded, PretrainedEncoder
from polymodal.models.fusion import TOKEN_FUSIONS, make_fusion
from polymodal.models.precompute import after_features
from polymodal.tasks import TASKS, Task, TaskContext
from polymodal.tasks.base import check_field

if TYPE_CHECKING:
    from polymodal.models.precompute import FeatureStore

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
BACKBONES_DIR = "backbones"  # BACKBONES_DIR/FIELD: what rebuilds a pretrained backbone


def distinct_rows(
    values: torch.Tensor, present: torch.Tensor, lengths: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first row of each distinct (value, presence, length) of a batch, and for every row
    the position of its own among them: ``values[first][inverse]`` is ``values``."""
    columns = [values.flatten(1), present.to(values.dtype)[:, None]]
    if lengths is not None:
        columns.append(lengths.to(values.dtype)[:, None])
    _, inverse = torch.unique(torch.cat(columns, 1), dim=0, return_inverse=True)
    rows = torch.arange(len(inverse), device=inverse.device)
    first = torch.full((int(inverse.max()) + 1,), len(inverse), device=inverse.device)
    return first.scatter_reduce(0, inverse, rows, "amin"), inverse


class MultimodalModel(nn.Module):
    """``encoders`` (one per input field) -> ``fusion`` -> ``tasks``; carries its preprocessor."""

    def __init__(
        self,
        config: ModelConfig,
        preprocessor: Preprocessor,
        encoders: dict[str, nn.Module],
        fusion: nn.Module | None,
        tasks: dict[str, Task],
    ) -> None:
        super().__init__()
        self.config = config
        self.preprocessor = preprocessor
        self.encoders = nn.ModuleDict(dict(sorted(encoders.items())))
        self.fusion = fusion
        self.tasks = nn.ModuleDict(tasks)
        self.fused_inputs = fused_inputs(config, list(self.encoders))
        # field -> its frozen encoder's features, computed once (polymodal.models.precompute)
        self.precomputed: dict[str, FeatureStore] = {}
        # inputs encoded once per distinct value in a batch (train.group_by batches repeats)
        self.distinct_inputs: set[str] = set()
        for name in self.frozen:
            self.encoders[name].requires_grad_(False)
        self._freeze_unread_heads()

    @property
    def frozen(self) -> list[str]:
        """Encoders that training leaves as they are (``freeze: true`` in their config)."""
        return [n for n, c in self.config.encoders.items() if c.freeze and n in self.encoders]

    def train(self, mode: bool = True) -> MultimodalModel:
        """Like ``nn.Module.train``, but frozen encoders stay in eval mode (fixed statistics)."""
        super().train(mode)
        for name in self.frozen:
            self.encoders[name].eval()
        return self

    def _freeze_unread_heads(self) -> None:
        """Freeze each encoder's ``output_heads`` whose output neither the fusion nor a task
        reads (a CNN's token projection under ``concat``, its pooled one under a token fusion).

        They would get no gradient, which DistributedDataParallel refuses. Frozen rather than
        left out, they keep the weights' names and initialisation: saved models still load and
        an encoder still transfers (``init_from``) between models that read other outputs.
        """
        reads: dict[str, set[str]] = {name: set() for name in self.encoders}
        fused = "tokens" if self.config.fusion.type in TOKEN_FUSIONS else "pooled"
        for name in set().union(*self.fused_inputs.values()):
            reads[name].add(fused)
        for task in self.tasks.values():
            for name, outputs in task.encoder_outputs().items():
                reads[name] |= outputs
        for name, encoder in self.encoders.items():
            for head, output in getattr(encoder, "output_heads", {}).items():
                if output not in reads[name]:
                    encoder.get_submodule(head).requires_grad_(False)

    @property
    def inputs(self) -> list[str]:
        return list(self.encoders)

    def encode(self, batch: Batch, only: Sequence[str] | None = None) -> dict[str, Encoded]:
        """Each input field encoded (or those ``only`` names); an encoder with
        ``checkpointing`` recomputes its activations in the backward pass instead of keeping
        them. A field of ``distinct_inputs`` is encoded once per distinct row (value, length
        and presence)."""
        encoded = {}
        for name, encoder in self.encoders.items():
            if only is not None and name not in only:
                continue
            if name in self.precomputed:  # the frozen part's output, looked up by manifest line
                features = self.precomputed[name].lookup(batch.rows, batch.values[name].device)
                encoded[name] = after_features(encoder, features)
                continue
            values, present = batch.values[name], batch.present[name]
            lengths = batch.lengths.get(name)
            if name not in self.distinct_inputs:
                encoded[name] = self._encoded(name, values, present, lengths)
                continue
            first, inverse = distinct_rows(values, present, lengths)
            short = None if lengths is None else lengths[first]
            encoded[name] = self._encoded(name, values[first], present[first], short).take(inverse)
        return encoded

    def _encoded(
        self,
        name: str,
        values: torch.Tensor,
        present: torch.Tensor,
        lengths: torch.Tensor | None,
    ) -> Encoded:
        inputs = (self.preprocessor.fields[name].model_input(values, present), lengths)
        options = self.config.encoders.get(name)
        if options is not None and options.checkpointing and self.training:
            return checkpoint(self.encoders[name], *inputs, use_reentrant=False)
        return self.encoders[name](*inputs)

    def forward(
        self,
        batch: Batch,
        network_only: bool = False,
        tasks: Collection[str] | None = None,
    ) -> dict[str, Any]:
        """Each task's outputs (or those of ``tasks``), keyed by task name; ``network_only``:
        before any search (``Task.network``, what an ONNX export computes)."""
        chosen = self.chosen_tasks(tasks)
        encoded = self.encode(batch)
        present = {name: batch.present[name] for name in self.encoders}
        fused = self.fuse(encoded, present, chosen)
        return {
            name: (task.network if network_only else task)(fused.get(name), encoded, present)
            for name, task in self.tasks.items()
            if name in chosen
        }

    def chosen_tasks(self, tasks: Collection[str] | None) -> list[str]:
        """The names of ``tasks`` (every task for None), each checked to be one of the model's."""
        if tasks is None:
            return list(self.tasks)
        for name in tasks:
            if name not in self.tasks:
                raise ModelError(
                    f"no task '{name}'{did_you_mean(name, list(self.tasks))}; the model's tasks: "
                    f"{', '.join(self.tasks)}"
                )
        return [name for name in self.tasks if name in tasks]

    def fuse(
        self,
        encoded: dict[str, Encoded],
        present: dict[str, torch.Tensor],
        tasks: Collection[str] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Each fusion task's fused vector (of those among ``tasks``), of the inputs fused for
        it (``fused_inputs``; the others count as absent), computed once per set of inputs."""
        wanted = {n: i for n, i in self.fused_inputs.items() if tasks is None or n in tasks}
        if not wanted:
            return {}
        assert self.fusion is not None
        by_inputs: dict[tuple[str, ...], torch.Tensor] = {}
        for inputs in wanted.values():
            if inputs not in by_inputs:
                shown = {n: p if n in inputs else torch.zeros_like(p) for n, p in present.items()}
                by_inputs[inputs] = self.fusion(encoded, shown)
        return {name: by_inputs[inputs] for name, inputs in wanted.items()}

    def loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        """Weighted sum of the task losses, and each task's loss value."""
        return self.losses(self(batch), batch)

    def losses(
        self, outputs: dict[str, Any], batch: Batch
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """``loss`` from outputs already computed (by a DistributedDataParallel wrapper)."""
        parts = {name: task.loss(outputs[name], batch) for name, task in self.tasks.items()}
        weights = {t.name: t.weight for t in self.config.tasks}
        total = sum(weights[name] * value for name, value in parts.items())
        return total, {name: float(value.detach()) for name, value in parts.items()}  # type: ignore[return-value]

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write config.json, model.safetensors and preprocessor.json (each atomically)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_files(directory)  # left by a save that was killed midway
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        atomic_write(directory / WEIGHTS_FILE, lambda tmp: save_file(state, str(tmp)))
        self.preprocessor.save(directory)
        for name, encoder in self.encoders.items():
            if isinstance(encoder, PretrainedEncoder):
                encoder.save_backbone(directory / BACKBONES_DIR / name)
        meta = {
            "format": "polymodal",
            "version": __version__,
            "model": self.config.model_dump(mode="json"),
        }
        atomic_write_text(directory / CONFIG_FILE, json.dumps(meta, indent=1))
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str = "cpu") -> MultimodalModel:
        directory = Path(directory)
        for name in (CONFIG_FILE, WEIGHTS_FILE):
            if not (directory / name).is_file():
                raise ModelError(
                    f"{directory / name} is missing; pass a directory written by "
                    "save_pretrained (a run's best/ folder)"
                )
        meta = json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8"))
        config = ModelConfig.model_validate(meta["model"])
        model = build_model(config, Preprocessor.load(directory), saved=directory)
        state = load_file(str(directory / WEIGHTS_FILE), device=device)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ModelError(
                f"{directory / WEIGHTS_FILE} does not match config.json "
                f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
            )
        return model.to(device).eval()


def _build_encoder(name: str, kind: str, config: EncoderConfig, given: dict[str, Any]) -> nn.Module:
    """``ENCODERS[(kind, config.type)]`` built from the config's options and those of the
    field's ``encoder_args`` (``given``) its signature takes; a missing one is a ConfigError."""
    make = ENCODERS[(kind, config.type)]
    options = config.model_dump(exclude={"type", *TRANSFER_OPTIONS})
    params = inspect.signature(make).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    args = {key: value for key, value in given.items() if takes_any or key in params}
    missing = [
        key
        for key, p in params.items()
        if p.default is p.empty
        and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        and key not in args
        and key not in options
    ]
    if missing:
        needs = getattr(make, "needs", None)
        raise ConfigError(
            f"model.encoders.{name}: a {config.type} encoder needs {', '.join(missing)}, which "
            f"{kind} field '{name}' does not give (it gives {', '.join(given) or 'nothing'})"
            + (f"; it reads {needs}" if needs else "")
        )
    return make(**args, **options)


def fused_inputs(config: ModelConfig, inputs: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """The inputs fused for each task on the fusion, by task name: the task's ``inputs``, each
    a model input, else every one of ``inputs``."""
    fused = {}
    for i, task in enumerate(config.tasks):
        if not TASKS[task.type].uses_fusion:
            continue
        chosen = task.inputs if isinstance(task, FusedTask) and task.inputs else inputs
        unknown = sorted(set(chosen) - set(inputs))
        if unknown:
            raise ConfigError(
                f"model.tasks.{i}.inputs: {', '.join(unknown)} not among the model inputs "
                f"({', '.join(inputs)}); name some of them, or null for all"
            )
        fused[task.name] = tuple(sorted(chosen))
    return fused


def build_model(
    config: ModelConfig, preprocessor: Preprocessor, saved: Path | None = None
) -> MultimodalModel:
    """Construct encoders, fusion and tasks for the fields the preprocessor knows.

    ``saved`` is the folder of a saved model being loaded: a pretrained encoder's backbone is
    then rebuilt from the description kept there (its weights come from the saved model).
    """
    schema = preprocessor.schema
    inputs = config.inputs if config.inputs is not None else schema.inputs
    if not inputs:
        raise ConfigError("model.inputs: no input fields; name at least one")
    kinds = {name: schema.fields[name].kind for name in inputs if name in schema.fields}
    config = with_architecture_encoders(config, kinds)
    encoders: dict[str, nn.Module] = {}
    for name in inputs:
        check_field(preprocessor, name, "model.inputs", tuple(ENCODER_TYPES))
        kind = schema.fields[name].kind
        enc_config = config.encoders.get(name) or default_encoder(kind)
        if enc_config.type not in ENCODER_TYPES[kind]:
            raise ConfigError(
                f"model.encoders.{name}: a {enc_config.type} encoder cannot read "
                f"{kind} field '{name}'; use type {' or '.join(map(repr, ENCODER_TYPES[kind]))}"
            )
        given = preprocessor.encoder_args(name)
        if saved is not None and (saved / BACKBONES_DIR / name).is_dir():
            given = {**given, "backbone_dir": saved / BACKBONES_DIR / name}
        encoders[name] = _build_encoder(name, kind, enc_config, given)
    unknown = sorted(set(config.encoders) - set(inputs))
    if unknown:
        raise ConfigError(f"model.encoders: {unknown} are not model inputs ({', '.join(inputs)})")

    fusion = None
    fused = fused_inputs(config, inputs)
    if fused:  # over the inputs fused for some task
        read = set().union(*fused.values())
        dims = {name: enc.output_dim for name, enc in encoders.items() if name in read}
        fusion = make_fusion(config.fusion, dims)
    encoder_dims = {name: encoder.output_dim for name, encoder in encoders.items()}
    fused_dim = fusion.output_dim if fusion is not None else None
    tasks: dict[str, Task] = {}
    for i, task in enumerate(config.tasks):
        context = TaskContext(preprocessor, encoder_dims, fused_dim, f"model.tasks.{i}")
        tasks[task.name] = TASKS[task.type].from_config(task, context)
    return MultimodalModel(config, preprocessor, encoders, fusion, tasks)
