"""Run configs: pydantic models, YAML loading, ``--set a.b=c`` overrides, helpful key errors."""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union

import yaml
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from polymodal.errors import ConfigError, did_you_mean


class Strict(BaseModel):
    """Every config section rejects unknown keys."""

    model_config = ConfigDict(extra="forbid")


Kind = Literal[
    "image",
    "text",
    "tabular",
    "label",
    "answers",
    "number",
    "audio",
    "sequence",
    "video",
    "features",
]
Role = Literal["input", "target"]
RetrievalLoss = Literal["info_nce", "hinge_sum", "hinge_hardest", "siglip"]
RegressionLoss = Literal["mse", "huber", "l1"]


def union_members(annotation: Any) -> list[Any]:
    """The alternatives of a (possibly Annotated / Optional / Union) annotation."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return union_members(typing.get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return [m for a in typing.get_args(annotation) for m in union_members(a)]
    return [annotation]


class FieldSpec(Strict):
    """One field of a sample: its modality kind, its role and, for tabular fields, its columns.

    A tabular field groups manifest columns (``numeric`` and ``categorical``); every other kind
    reads the manifest column with the field's own name, but a text field may be ``transcribe``d
    from an audio column; a text target is generated (a caption), its cell one reference text
    or a JSON list of them. A label field may fix its label set. A number field (one numeric
    column) is a regression target.
    """

    kind: Kind = Field(description="modality kind: picks the field's preprocessing and encoder")
    role: Role = Field("input", description="input: the model reads it; target: a task predicts it")
    numeric: list[str] = Field([], description="tabular: the numeric manifest columns it groups")
    categorical: list[str] = Field(
        [], description="tabular: the categorical manifest columns it groups"
    )
    labels: list[str] | None = Field(
        None, description="label: the label set, in class order; null: the sorted labels seen"
    )
    transcribe: str | None = Field(
        None,
        description="text: the audio column whose speech, transcribed by Whisper tiny.en"
        " (polymodal[speech]), is the field's text; null: the field's own column",
    )

    @model_validator(mode="after")
    def _check(self) -> FieldSpec:
        if self.kind != "tabular" and (self.numeric or self.categorical):
            raise ValueError("'numeric' and 'categorical' columns only apply to kind 'tabular'")
        if self.kind != "label" and self.labels is not None:
            raise ValueError("'labels' only applies to kind 'label'")
        if self.kind != "text" and self.transcribe is not None:
            raise ValueError("'transcribe' only applies to kind 'text'")
        if self.kind == "number" and self.role != "target":
            raise ValueError(
                "a number field is a regression target: set role: target (a numeric input is"
                " a tabular field)"
            )
        return self


class ImageOptions(Strict):
    """How images are read: fitted to a square, normalised."""

    size: int = Field(64, ge=8, description="side in pixels of the square images are fitted to")
    mean: tuple[float, float, float] = Field(
        (0.5, 0.5, 0.5), description="RGB mean subtracted from pixels scaled to [0, 1]"
    )
    std: tuple[float, float, float] = Field(
        (0.5, 0.5, 0.5), description="RGB standard deviation the centred pixels are divided by"
    )
    max_pixels: int = Field(
        2 * Image.MAX_IMAGE_PIXELS,
        ge=1,
        description="quarantine images with more pixels (width x height); default: Pillow's limit",
    )


class TextOptions(Strict):
    """How texts become token ids."""

    tokenizer: str = Field(
        "word", description='"word", or a Hugging Face tokenizer.json / folder / hub id'
    )
    max_length: int = Field(64, ge=1, description="tokens kept per text; longer texts are cut")
    min_freq: int = Field(
        1, ge=1, description="word tokenizer: rarer training words become the unknown token"
    )
    max_vocab: int | None = Field(
        None, description="word tokenizer: keep only this many most frequent words; null: all"
    )


class AudioOptions(Strict):
    """How audio files are read: mono, resampled, log-mel spectrogram, cropped or padded."""

    sample_rate: int = Field(16000, ge=1000, description="rate every clip is resampled to (Hz)")
    max_seconds: float = Field(
        4.0,
        gt=0,
        description="longer clips are cropped to this (random in training, centre in"
        " evaluation); shorter ones padded, with a length mask",
    )
    n_mels: int = Field(64, ge=1, description="mel bands of the log-mel spectrogram")
    n_fft: int = Field(400, ge=16, description="FFT window in samples (400: 25 ms at 16 kHz)")
    hop_length: int = Field(160, ge=1, description="samples between frames (160: 10 ms at 16 kHz)")
    features: Literal["log_mel", "waveform"] = Field(
        "log_mel",
        description="log_mel: a (frames, n_mels) spectrogram; waveform: the resampled samples"
        " (for encoders that compute their own features)",
    )


class SequenceOptions(Strict):
    """How numeric time series are read: per-channel standardisation, the last steps kept."""

    max_length: int = Field(
        256, ge=1, description="steps kept per series; a longer one keeps its last steps"
    )


class VideoOptions(Strict):
    """How videos (a file, a frame folder or a list of frames) are read."""

    frames: int = Field(
        8, ge=1, description="frames sampled uniformly (training: at a random offset)"
    )
    size: int = Field(64, ge=8, description="side in pixels of the square frames are fitted to")
    max_seconds: float | None = Field(
        None, gt=0, description="only the first seconds of a video file are read; null: all"
    )


class DataConfig(Strict):
    """Where the samples are and how each field is read."""

    manifest: Path = Field(description="the JSONL or CSV manifest, one row per sample")
    fields: dict[str, FieldSpec] | None = Field(
        None, description="the fields by name; inferred from the manifest when absent"
    )
    target: str | None = Field(None, description="the target column when fields are inferred")
    split_column: str = Field(
        "split", description="manifest column naming each row's split: train, val or test"
    )
    val_fraction: float = Field(
        0.1, ge=0, lt=1, description="share of rows for val when the manifest has no split column"
    )
    test_fraction: float = Field(
        0.1, ge=0, lt=1, description="share of rows for test when the manifest has no split column"
    )
    strict: bool = Field(False, description="any bad row is an error instead of being quarantined")
    image: ImageOptions = Field(ImageOptions(), description="how image fields are read")
    text: TextOptions = Field(TextOptions(), description="how text fields are read")
    audio: AudioOptions = Field(AudioOptions(), description="how audio fields are read")
    sequence: SequenceOptions = Field(
        SequenceOptions(), description="how time-series fields are read"
    )
    video: VideoOptions = Field(VideoOptions(), description="how video fields are read")
    cache: Literal["none", "memory", "disk"] = Field(
        "none",
        description="preprocessed tensors kept: none (decode every epoch), memory, disk (reused)",
    )
    cache_dir: Path | None = Field(
        None, description="where disk stores go; null: OUT_DIR/cache, beside the runs"
    )
    workers: int | None = Field(
        None,
        ge=0,
        description="DataLoader worker processes; null: 0 with a memory cache, else"
        " about half the CPUs (at most 4)",
    )


class EncoderTransfer(Strict):
    """Options every encoder has: start from a saved model's encoder, optionally frozen."""

    init_from: Path | None = Field(
        None, description="a saved model dir whose encoder for the same field is copied"
    )
    init_field: str | None = Field(
        None,
        description="the field of the init_from model whose encoder is copied (say, an"
        " 'audio' encoder into a 'paired_audio' field); null: this field's name",
    )
    freeze: bool = Field(
        False, description="no gradient updates; normalisation statistics stay fixed"
    )
    lr_scale: float = Field(
        1.0,
        gt=0,
        description="learning-rate multiplier for this encoder (e.g. 0.1 when it"
        " starts from saved weights)",
    )
    checkpointing: bool = Field(
        False,
        description="activation checkpointing: recompute activations in the backward"
        " pass, saving memory for time",
    )

    precompute: bool = Field(
        False,
        description="a frozen encoder's output (a pretrained one's backbone features) is"
        " computed once per row and kept in the data cache; training then reads rows as"
        " evaluation does (no random crops)",
    )

    @property
    def frozen(self) -> bool:
        """No weight of the encoder (a pretrained one: of its backbone) is trained."""
        return self.freeze

    @model_validator(mode="after")
    def _check_transfer(self) -> EncoderTransfer:
        if self.init_field is not None and self.init_from is None:
            raise ValueError("'init_field' names a field of the 'init_from' model; give init_from")
        if self.precompute and not self.frozen:
            raise ValueError(
                "precompute needs a frozen encoder: set freeze: true (a pretrained one may"
                " instead set unfreeze_last: 0)"
            )
        return self


TRANSFER_OPTIONS = frozenset(EncoderTransfer.model_fields)


class CNNEncoderConfig(EncoderTransfer):
    """A small convolutional network: images, log-mel spectrograms, or each frame of a video
    (then pooled over time by attention)."""

    type: Literal["cnn"] = Field("cnn", description="the encoder type")
    dim: int = Field(128, ge=1, description="output dimension")
    channels: list[int] = Field(
        [32, 64, 128, 128], description="output channels of each convolution block"
    )
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout rate")


class ViTEncoderConfig(EncoderTransfer):
    """A small vision transformer over image patches (or each frame of a video)."""

    type: Literal["vit"] = Field("vit", description="the encoder type")
    dim: int = Field(128, ge=1, description="token and output dimension")
    patch: int = Field(8, ge=1, description="side in pixels of the square patches")
    layers: int = Field(4, ge=1, description="transformer layers")
    heads: int = Field(4, ge=1, description="attention heads per layer")
    dropout: float = Field(0.1, ge=0, lt=1, description="dropout rate")


class TransformerEncoderConfig(EncoderTransfer):
    """A transformer over a sequence: text tokens, spectrogram frames or time-series steps."""

    type: Literal["transformer"] = Field("transformer", description="the encoder type")
    dim: int = Field(64, ge=1, description="token and output dimension")
    layers: int = Field(2, ge=1, description="transformer layers")
    heads: int = Field(4, ge=1, description="attention heads per layer")
    dropout: float = Field(0.1, ge=0, lt=1, description="dropout rate")


class RNNEncoderConfig(EncoderTransfer):
    """A recurrent network (GRU or LSTM) over text tokens or time-series steps."""

    type: Literal["gru", "lstm"] = Field(description="the encoder type: gru or lstm")
    dim: int = Field(64, ge=1, description="output dimension")
    hidden: int = Field(64, ge=1, description="hidden size of each direction")
    layers: int = Field(1, ge=1, description="stacked recurrent layers")
    bidirectional: bool = Field(True, description="read the sequence both ways")
    dropout: float = Field(0.1, ge=0, lt=1, description="dropout rate")


class BagEncoderConfig(EncoderTransfer):
    """The mean of a text's token embeddings (bag of embeddings, fastText-like)."""

    type: Literal["bag"] = Field("bag", description="the encoder type")
    dim: int = Field(64, ge=1, description="embedding and output dimension")
    dropout: float = Field(0.1, ge=0, lt=1, description="dropout rate")


class MLPEncoderConfig(EncoderTransfer):
    """A multilayer perceptron, for tabular columns."""

    type: Literal["mlp"] = Field("mlp", description="the encoder type")
    dim: int = Field(64, ge=1, description="output dimension")
    hidden: int = Field(128, ge=1, description="hidden layer width")
    embedding_dim: int = Field(16, ge=1, description="embedding size of each categorical column")
    dropout: float = Field(0.1, ge=0, lt=1, description="dropout rate")


class PassthroughEncoderConfig(EncoderTransfer):
    """Precomputed feature vectors, as they are or through one linear projection."""

    type: Literal["passthrough"] = Field("passthrough", description="the encoder type")
    dim: int | None = Field(
        None, ge=1, description="project the features to this size; null: as is"
    )


class PretrainedEncoderConfig(EncoderTransfer):
    """A pretrained backbone: a Hugging Face AutoModel (local directory or hub id) or one of
    the packaged offline defaults (``minilm`` for text, ``efficientnet-lite0`` for images)."""

    type: Literal["pretrained"] = Field("pretrained", description="the encoder type")
    model: str = Field(
        description="minilm, efficientnet-lite0, or a Hugging Face model directory or hub id"
    )
    unfreeze_last: int | None = Field(
        None,
        ge=0,
        description="train only the last N blocks (0: none, frozen); null: all, unless freeze",
    )
    dim: int | None = Field(
        None, ge=1, description="project the backbone's output to this size; null: as is"
    )

    @property
    def frozen(self) -> bool:
        """``freeze``, or no block unfrozen."""
        return self.freeze or self.unfreeze_last == 0


EncoderConfig = Annotated[
    Union[  # noqa: UP007
        CNNEncoderConfig,
        ViTEncoderConfig,
        TransformerEncoderConfig,
        RNNEncoderConfig,
        BagEncoderConfig,
        MLPEncoderConfig,
        PassthroughEncoderConfig,
        PretrainedEncoderConfig,
    ],
    Field(discriminator="type"),
]
# The encoder types each modality kind can use; the first is the kind's default.
ENCODER_TYPES: dict[str, tuple[str, ...]] = {
    "image": ("cnn", "vit", "pretrained"),
    "text": ("transformer", "gru", "lstm", "bag", "pretrained"),
    "tabular": ("mlp",),
    "audio": ("cnn", "transformer", "pretrained"),
    "sequence": ("gru", "lstm", "transformer"),
    "video": ("cnn", "vit"),
    "features": ("passthrough",),
}
ENCODER_CONFIGS: dict[str, type[BaseModel]] = {
    name: cls
    for cls in union_members(EncoderConfig)
    for name in typing.get_args(cls.model_fields["type"].annotation)
}


def default_encoder(kind: str) -> BaseModel:
    """The encoder config a field of ``kind`` gets when none is named."""
    name = ENCODER_TYPES[kind][0]
    return ENCODER_CONFIGS[name](type=name)


class FusionConfig(Strict):
    """How the encoded fields become one representation."""

    type: Literal[
        "concat",
        "attention",
        "low_rank_tensor",
        "cross_attention",
        "sum",
        "mean",
        "max",
        "product",
        "gated",
        "tensor",
        "bilinear",
        "early_transformer",
        "mult",
        "graph",
    ] = Field("concat", description="the fusion method")
    dim: int = Field(256, ge=1, description="fused dimension")
    dropout: float = Field(0.1, ge=0, lt=1, description="dropout rate")
    layers: int = Field(
        2, ge=1, description="transformer and graph fusions: layers (message-passing rounds)"
    )
    heads: int = Field(4, ge=1, description="transformer and graph fusions: attention heads")


class FusedTask(Strict):
    """What a task on the fused representation may choose: the inputs fused for it."""

    inputs: list[str] | None = Field(
        None,
        min_length=1,
        description="the model inputs this task's fused vector holds; the others count as"
        " absent in it (say, a caption that another task reads and that would give this"
        " one's answer away); null: every input",
    )


class ClassifyConfig(FusedTask):
    """Predict a label field from the fused representation."""

    type: Literal["classify"] = Field("classify", description="the task type")
    target: str = Field(description="the label field to predict")
    hidden: int = Field(256, ge=1, description="hidden width of the classifier head")
    dropout: float = Field(0.1, ge=0, lt=1, description="dropout rate of the head")
    label_smoothing: float = Field(
        0.0, ge=0, lt=1, description="label smoothing of the cross-entropy loss; 0: none"
    )
    weight: float = Field(1.0, description="weight of this task's loss in the total loss")

    @property
    def name(self) -> str:
        """The task's name: its outputs, metrics and predictions are keyed by it."""
        return f"classify_{self.target}"

    @property
    def targets(self) -> list[str]:
        """The fields the task predicts."""
        return [self.target]


class RetrieveConfig(Strict):
    """Embed two fields in one space, learned by a contrastive loss (InfoNCE by default)."""

    type: Literal["retrieve"] = Field("retrieve", description="the task type")
    query: str = Field(description="the field embedded as the query")
    gallery: str = Field(description="the field embedded as the gallery searched")
    dim: int = Field(128, ge=1, description="joint embedding dimension")
    temperature: float = Field(
        0.07, gt=0, description="initial InfoNCE temperature; learned, clamped to >= 0.01"
    )
    loss: RetrievalLoss = Field(
        "info_nce", description="contrastive loss: InfoNCE, VSE hinge (sum or hardest), SigLIP"
    )
    margin: float = Field(0.2, gt=0, description="margin of the hinge losses")
    weight: float = Field(1.0, description="weight of this task's loss in the total loss")

    @property
    def name(self) -> str:
        """The task's name: its outputs, metrics and predictions are keyed by it."""
        return f"retrieve_{self.query}_{self.gallery}"

    @property
    def targets(self) -> list[str]:
        """The fields the task predicts: none, it embeds inputs."""
        return []


class VQAConfig(FusedTask):
    """Answer a question about an image: an answers field's vocabulary scored from the fused
    representation, trained on the VQA v2 soft scores by binary cross-entropy."""

    type: Literal["vqa"] = Field("vqa", description="the task type")
    target: str = Field(description="the answers field to predict (kind answers)")
    top_k: int = Field(
        3000, ge=1, description="answer vocabulary: the train rows' most frequent answers"
    )
    hidden: int = Field(512, ge=1, description="hidden width of the answer head")
    dropout: float = Field(0.1, ge=0, lt=1, description="dropout rate of the head")
    weight: float = Field(1.0, description="weight of this task's loss in the total loss")
    target_kind: ClassVar[str] = "answers"

    @property
    def name(self) -> str:
        """The task's name: its outputs, metrics and predictions are keyed by it."""
        return f"vqa_{self.target}"

    @property
    def targets(self) -> list[str]:
        """The fields the task predicts."""
        return [self.target]


class RegressConfig(FusedTask):
    """Predict one or several number fields from the fused representation.

    Each target is standardised with its train mean and standard deviation for the loss, and
    predicted and scored in its own units. A row lacking a target leaves that target out of
    the loss and the metrics; the other targets and tasks still read it. The best checkpoint
    is picked by ``r2`` (the mean over targets of the coefficient of determination, 1 at
    best), which is on the scale of the other tasks' main metrics.
    """

    type: Literal["regress"] = Field("regress", description="the task type")
    target: str | list[str] = Field(
        description="the number field to predict, or a list of them (kind number)"
    )
    loss: RegressionLoss = Field(
        "mse", description="loss on the standardised targets: squared, Huber or absolute error"
    )
    huber_delta: float = Field(
        1.0, gt=0, description="huber: where the loss turns linear, in standard deviations"
    )
    hidden: int = Field(256, ge=1, description="hidden width of the regression head")
    dropout: float = Field(0.1, ge=0, lt=1, description="dropout rate of the head")
    sentiment: bool = Field(
        False,
        description="also the CMU-MOSI/MOSEI sentiment metrics (Acc-2 with and without"
        " neutral rows, weighted F1, Acc-5, Acc-7) of scores in [-3, 3]",
    )
    weight: float = Field(1.0, description="weight of this task's loss in the total loss")
    target_kind: ClassVar[str] = "number"

    @property
    def name(self) -> str:
        """The task's name: its outputs, metrics and predictions are keyed by it."""
        return "regress_" + "_".join(self.targets)

    @property
    def targets(self) -> list[str]:
        """The fields the task predicts."""
        return [self.target] if isinstance(self.target, str) else list(self.target)

    @model_validator(mode="after")
    def _check_targets(self) -> RegressConfig:
        if not self.targets or len(set(self.targets)) < len(self.targets):
            raise ValueError("'target' needs at least one field, each named once")
        return self


class CaptionConfig(Strict):
    """Generate a text field (a caption) from an input's encoder tokens (an image's): a
    transformer decoder cross-attending to them, trained by teacher forcing, decoded by greedy
    or beam search, scored with the COCO caption metrics (CIDEr-D picks the best model).

    The target is a text field of role target; a cell holds one reference or a JSON list of
    them. Its word vocabulary is fitted on the train references (``data.text`` min_freq,
    max_vocab and max_length apply); generated text is scored against every reference.
    """

    type: Literal["caption"] = Field("caption", description="the task type")
    image: str = Field(description="the input field whose encoder tokens the decoder attends to")
    target: str = Field(description="the text field to generate (role target)")
    dim: int = Field(256, ge=1, description="decoder width")
    layers: int = Field(3, ge=1, description="decoder layers")
    heads: int = Field(4, ge=1, description="attention heads per decoder layer")
    dropout: float = Field(0.1, ge=0, lt=1, description="decoder dropout rate")
    label_smoothing: float = Field(
        0.0, ge=0, lt=1, description="label smoothing of the cross-entropy loss; 0: none"
    )
    references: Literal["random", "all"] = Field(
        "random",
        description="training reads one reference per row at random each time, or all of them",
    )
    beam_size: int = Field(3, ge=1, description="beam width; 1: greedy search")
    max_length: int = Field(30, ge=1, description="most words in a generated text")
    length_penalty: float = Field(
        0.0,
        description="a sequence scores its log-probability over length ** length_penalty:"
        " 0 compares plain sums (shorter texts win ties), 1 the mean per token",
    )
    no_repeat_ngram: int = Field(
        0, ge=0, description="never repeat an n-gram of this many words; 0: no limit"
    )
    meteor: bool = Field(
        False, description="also score METEOR (needs Java; starts a JVM at each evaluation)"
    )
    weight: float = Field(1.0, description="weight of this task's loss in the total loss")
    target_kind: ClassVar[str] = "text"

    @property
    def name(self) -> str:
        """The task's name: its outputs, metrics and predictions are keyed by it."""
        return f"caption_{self.target}"

    @property
    def targets(self) -> list[str]:
        """The fields the task predicts."""
        return [self.target]


TaskConfig = Annotated[
    Union[ClassifyConfig, RetrieveConfig, VQAConfig, RegressConfig, CaptionConfig],  # noqa: UP007
    Field(discriminator="type"),
]


class ModelConfig(Strict):
    """Encoders per field, their fusion and the task heads."""

    architecture: str | None = Field(
        None,
        description="a named architecture (`polymodal models list`): it gives the encoders of"
        " the fields of each kind not named here, the fusion and task options; keys given"
        " here win",
    )
    inputs: list[str] | None = Field(
        None, description="input fields the model reads; null: every input field"
    )
    encoders: dict[str, EncoderConfig] = Field(
        {}, description="encoder per input field; one not named gets its kind's default"
    )
    fusion: FusionConfig = Field(FusionConfig(), description="how the encoded fields are fused")
    tasks: list[TaskConfig] = Field(
        min_length=1, description="the tasks trained on the fused representation"
    )

    @model_validator(mode="before")
    @classmethod
    def _architecture_defaults(cls, data: Any) -> Any:
        """Fusion and task keys the config leaves out come from its named architecture."""
        if isinstance(data, Mapping) and isinstance(data.get("architecture"), str):
            from polymodal.models.architectures import with_architecture_defaults

            return with_architecture_defaults(data)
        return data


class EarlyStopping(Strict):
    """Stop training when a validation metric has not improved for a while."""

    patience: int = Field(3, ge=1, description="epochs without improvement before stopping")
    metric: str | None = Field(
        None, description="TASK.METRIC to watch (higher is better); null: the best-model score"
    )
    min_delta: float = Field(0.0, ge=0, description="smallest rise that counts as improvement")


class TrainConfig(Strict):
    """The optimiser (AdamW, linear warmup then cosine decay) and where the run is written."""

    epochs: int = Field(10, ge=1, description="passes over the train split")
    batch_size: int = Field(64, ge=1, description="rows per batch")
    lr: float = Field(1e-3, gt=0, description="peak learning rate")
    weight_decay: float = Field(
        0.01, ge=0, description="AdamW weight decay of weight matrices (not biases, norms)"
    )
    warmup_ratio: float = Field(
        0.05, ge=0, lt=1, description="share of the steps the learning rate warms up over"
    )
    grad_clip: float | None = Field(
        1.0, gt=0, description="largest gradient norm, larger ones are scaled down; null: no clip"
    )
    out_dir: Path = Field(
        Path("runs"), description="a run is written to OUT_DIR/NAME; the default is in the cwd"
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto: CUDA when there is a GPU, else the CPU"
    )
    threads: int | None = Field(
        None, ge=1, description="torch CPU threads; null: the CPUs left after the data workers"
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "fp32",
        description="auto: bf16 where the hardware has it natively (CUDA, AVX512-BF16/AMX CPUs),"
        " fp16 with a gradient scaler on older GPUs, else fp32",
    )
    accumulate: int = Field(1, ge=1, description="batches whose gradients make one step")
    group_by: str | None = Field(
        None,
        description="a model input whose rows with one value (an image asked several questions)"
        " are batched together, its encoder running once per distinct value in a batch (batch"
        " norm then counts each once); null: rows shuffled one by one",
    )
    modality_dropout: float = Field(
        0.0,
        ge=0,
        le=1,
        description="chance that a row loses each input it has while training (it keeps one),"
        " so the model learns to answer with what it has",
    )
    early_stopping: EarlyStopping | None = Field(
        None, description="stop when the validation score stops improving; null: never"
    )
    select: dict[str, float] | None = Field(
        None,
        description="weight (>= 0) of each task's main metric, by task name, in the validation"
        " score that picks the best model: their weighted mean; a task not named weighs 0;"
        " null: every task weighs 1",
    )
    max_minutes: float | None = Field(
        None, gt=0, description="time budget: the schedule fits itself to it; null: epochs decide"
    )
    checkpoint_every: int | None = Field(
        None, ge=1, description="also checkpoint every N steps (always at each epoch's end)"
    )
    keep_checkpoints: int = Field(2, ge=1, description="checkpoints kept in RUN_DIR/checkpoints")


class RunConfig(Strict):
    """A whole run: its data, model and training."""

    name: str = Field("run", description="the run's name: its folder in train.out_dir")
    seed: int = Field(0, description="seed of the splits, the initial weights and the shuffling")
    data: DataConfig = Field(description="the data: manifest, fields, preprocessing")
    model: ModelConfig = Field(description="the model: encoders, fusion, tasks")
    train: TrainConfig = Field(TrainConfig(), description="the training: optimiser, run folder")

    @property
    def run_dir(self) -> Path:
        return self.train.out_dir / self.name


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
        candidates = union_members(current)
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
    members = [
        m for m in union_members(current) if isinstance(m, type) and issubclass(m, BaseModel)
    ]
    return (members[0] if len(members) == 1 else None), ".".join(p for p in shown if p)


def _describe(
    err: dict[str, Any], root: type[BaseModel], words: Mapping[str, str]
) -> tuple[str, str]:
    """The key path of one pydantic error and what is wrong there.

    ``words`` maps a key path to the word YAML read as a boolean there (``yes``, ``off``...).
    """
    loc = tuple(err["loc"])
    holder, path = _model_at(root, loc)
    if err["type"] == "extra_forbidden":
        valid = sorted(holder.model_fields) if holder else []
        hint = did_you_mean(str(loc[-1]), valid)
        known = f" (valid keys: {', '.join(valid)})" if valid else ""
        return path, f"unknown key '{path}'{hint}{known}"
    if err["type"] == "string_type" and isinstance(err["input"], bool):
        word = f": '{words[path]}'" if path in words else ""
        hint = f"YAML reads unquoted yes/no/on/off/true/false as booleans; quote it{word}"
        return path, f"'{path}': {err['msg']}; {hint}"
    return path, f"'{path}': {err['msg']}"


def _origin(path: str, source: str, overrides: Sequence[str]) -> str:
    """Where the value at ``path`` came from: ``source``, unless ``--set`` items wrote it.

    An item wrote it when it set that key, a section holding it, or a key inside it.
    """
    setters = []
    for item in overrides:
        key = item.partition("=")[0].strip()
        if path == key or path.startswith(f"{key}.") or key.startswith(f"{path}."):
            setters.append(f"--set {item}")
    return " ".join(setters) or source


YAML_BOOL = "tag:yaml.org,2002:bool"  # what YAML reads unquoted yes/no/on/off/true/false as


def _bool_words(node: yaml.Node | None, path: str = "") -> dict[str, str]:
    """The word of each YAML boolean under ``node`` (``yes``, ``Off``...), by dotted key path."""
    if isinstance(node, yaml.MappingNode):
        children = [(str(key.value), value) for key, value in node.value]
    elif isinstance(node, yaml.SequenceNode):
        children = [(str(i), item) for i, item in enumerate(node.value)]
    else:
        return {path: node.value} if node is not None and node.tag == YAML_BOOL else {}
    words = {}
    for key, child in children:
        words.update(_bool_words(child, f"{path}.{key}" if path else key))
    return words


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


def parse_overrides(overrides: Sequence[str]) -> list[tuple[str, Any]]:
    """``key.path=value`` strings to (path, YAML-parsed value) pairs."""
    pairs = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set '{item}': expected key.path=value, e.g. train.epochs=5")
        try:
            pairs.append((key.strip(), yaml.safe_load(raw) if raw.strip() else None))
        except yaml.YAMLError as err:
            raise ConfigError(f"--set {item}: the value is not valid YAML: {err}") from None
    return pairs


def validate(
    data: dict[str, Any],
    source: str = "config",
    overrides: Sequence[str] = (),
    words: Mapping[str, str] | None = None,
) -> RunConfig:
    """Validate a raw dict; every problem is listed with its key path and where it came from.

    ``overrides`` are the ``--set key=value`` items applied to ``data``: a problem in what one
    of them wrote names it, any other names ``source``. ``words`` maps a key path to the word
    YAML read as a boolean there, for the hint to quote it.
    """
    try:
        return RunConfig.model_validate(data)
    except ValidationError as err:
        problems = []
        for error in err.errors():
            path, problem = _describe(error, RunConfig, words or {})
            problems.append(f"{_origin(path, source, overrides)}: {problem}")
        if len(problems) == 1:
            raise ConfigError(problems[0]) from None
        listed = "\n  ".join(problems)
        raise ConfigError(f"the config has {len(problems)} problems:\n  {listed}") from None


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> RunConfig:
    """Read a YAML config, apply ``--set`` overrides, validate; every path comes out absolute.

    A relative path written in the file is relative to the file; one given by an override, or
    a default (``train.out_dir``), is relative to the working directory.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text) or {}
        words = _bool_words(yaml.compose(text))
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of sections (data, model, train)")
    for section, key in _file_paths(data):
        section[key] = str((path.parent / section[key]).resolve())
    for (key, value), item in zip(parse_overrides(overrides), overrides, strict=True):
        _set(data, key, value)
        words.update(_bool_words(yaml.compose(item.partition("=")[2]), key))
    config = validate(data, str(path), overrides, words)
    _absolute_paths(config)
    return config


def _absolute_paths(section: BaseModel) -> None:
    """Make every path in ``section`` absolute; a relative one is taken from the cwd."""
    for name, value in section:
        if isinstance(value, Path):
            setattr(section, name, value.resolve())
        if isinstance(value, dict):
            value = list(value.values())
        for child in value if isinstance(value, list) else [value]:
            if isinstance(child, BaseModel):
                _absolute_paths(child)


def _file_paths(data: dict[str, Any]) -> list[tuple[dict[str, Any], str]]:
    """(mapping, key) of each path in a config file: the manifest, out_dir, init_from."""
    found = []
    section = data.get("data")
    if isinstance(section, dict) and isinstance(section.get("manifest"), str):
        found.append((section, "manifest"))
    if isinstance(section, dict) and isinstance(section.get("cache_dir"), str):
        found.append((section, "cache_dir"))
    train = data.get("train")
    if isinstance(train, dict) and isinstance(train.get("out_dir"), str):
        found.append((train, "out_dir"))
    model = data.get("model")
    encoders = model.get("encoders") if isinstance(model, dict) else None
    for encoder in encoders.values() if isinstance(encoders, dict) else ():
        if isinstance(encoder, dict) and isinstance(encoder.get("init_from"), str):
            found.append((encoder, "init_from"))
    return found


def dump_config(config: RunConfig) -> str:
    """The config as YAML: every key (a null too: ``grad_clip: null`` means no clipping).

    Paths are written absolute (a relative one is taken from the cwd, as a run reads it), so
    that the file, read again from wherever it lies, names the same files.
    """
    config = config.model_copy(deep=True)
    _absolute_paths(config)
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def task_targets(model: ModelConfig) -> dict[str, str]:
    """The fields the tasks predict, each with the kind its task reads (``target_kind``, else
    label): an inferred schema takes them as its targets."""
    return {
        target: getattr(task, "target_kind", "label")
        for task in model.tasks
        for target in task.targets
    }
