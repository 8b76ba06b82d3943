"""The service's settings and the pydantic models of its requests and responses.

Request bodies depend on the model served: ``request_models`` builds, from the model's input
columns, the JSON body (``{"inputs": {COLUMN: VALUE}}``) and the multipart form (one part per
column) that the endpoints read and that the OpenAPI schema describes.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, Json, Strict, create_model

from polymodal.data.modalities.tabular import TabularPreprocessor
from polymodal.data.pipeline import Preprocessor

MIB = 2**20
MAX_K = 1000  # results a search may ask for

# What a column's value is in a request: files (base64 in JSON, a file part in a form),
# text, numbers, categories (text), series of numbers.
ColumnKind = Literal["image", "audio", "text", "number", "category", "sequence"]
FILE_KINDS = ("image", "audio")


class ServeSettings(BaseModel):
    """How ``polymodal serve`` runs: what it loads, its limits and its micro-batching."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    model_dir: str
    index_dir: str | None = None
    data_dir: str | None = Field(
        None,
        description="the folder an index's item paths are relative to (default: the folder "
        "of the manifest each item was indexed from)",
    )
    backend: Literal["torch", "onnxruntime"] = "torch"
    threads: int | None = Field(
        None, ge=1, description="inference threads per process (default: the cores / workers)"
    )
    api_key: str | None = Field(None, repr=False)
    max_batch: int = Field(32, ge=1, description="rows predicted together, at most")
    max_wait_ms: float = Field(
        0.0, ge=0, description="how long a batch that would start alone waits for company"
    )
    max_queue: int = Field(256, ge=1, description="rows waiting; beyond: 503")
    timeout_s: float = Field(30.0, gt=0, description="a request waiting longer: 504")
    max_body_bytes: int = Field(16 * MIB, ge=1, description="larger bodies: 413")
    max_image_pixels: int = Field(4096 * 4096, ge=1, description="larger images: 422")
    max_audio_seconds: float = Field(60.0, gt=0, description="longer clips: 422")


# --- request bodies -------------------------------------------------------------------------


class InputColumn(BaseModel):
    """A column a request may give: its name, what its value is, the model field it feeds."""

    name: str
    kind: ColumnKind
    field: str


def input_columns(preprocessor: Preprocessor, fields: list[str]) -> list[InputColumn]:
    """The columns of ``fields`` (model inputs) that a request can carry; a video field,
    whose cells are paths, cannot."""
    columns = []
    for field in fields:
        spec = preprocessor.schema.fields[field]
        reader = preprocessor.fields[field]
        if isinstance(reader, TabularPreprocessor):
            columns += [InputColumn(name=c, kind="number", field=field) for c in reader.numeric]
            columns += [
                InputColumn(name=c, kind="category", field=field) for c in reader.categorical
            ]
        elif spec.transcribe:  # text transcribed from an audio column: the audio is sent
            columns.append(InputColumn(name=spec.transcribe, kind="audio", field=field))
        elif spec.kind in ("image", "audio", "text", "sequence"):
            columns.append(InputColumn(name=field, kind=spec.kind, field=field))
    return columns


Number = Annotated[float, Field(allow_inf_nan=False)]
StrictNumber = Annotated[float, Strict(), Field(allow_inf_nan=False)]
Series = list[StrictNumber] | list[list[StrictNumber]]
FormSeries = list[Number] | list[list[Number]]

DESCRIPTIONS: dict[str, str] = {
    "image": "the image file's bytes: base64, or a data URL (data:image/png;base64,...)",
    "audio": "the audio file's bytes (wav, flac, ogg, mp3): base64, or a data URL",
    "text": "text",
    "number": "a number",
    "category": "a category, as text",
    "sequence": "a series: a list of numbers, or of lists of one number per channel",
}
JSON_TYPES: dict[str, Any] = {
    "image": str,
    "audio": str,
    "text": Annotated[str, Strict()],
    "number": StrictNumber,
    "category": Annotated[str, Strict()],
    "sequence": Series,
}
FORM_TYPES: dict[str, Any] = {  # form values arrive as text: numbers and series are parsed
    "image": bytes,
    "audio": bytes,
    "text": str,
    "number": Number,
    "category": str,
    "sequence": Json[FormSeries],
}


def _columns_model(
    name: str, columns: list[InputColumn], types: dict[str, Any], **extra: Any
) -> Any:
    """A model with one optional field per column (aliased: columns need not be identifiers)
    and the ``extra`` fields; an unknown key is an error."""
    fields: dict[str, Any] = {
        f"column_{i}": (
            types[column.kind] | None,
            Field(None, alias=column.name, description=DESCRIPTIONS[column.kind]),
        )
        for i, column in enumerate(columns)
    }
    config = ConfigDict(extra="forbid", populate_by_name=False)
    return create_model(name, __config__=config, **fields, **extra)


def _k(kind: Any) -> tuple[Any, Any]:
    """A search's ``k``: a JSON integer, or a form's text of one."""
    return (kind, Field(10, ge=1, le=MAX_K, description="how many items"))


class RequestModels:
    """The JSON body and the multipart form of an endpoint family (predictions, search)."""

    def __init__(self, prefix: str, columns: list[InputColumn], search: bool = False) -> None:
        self.columns = {column.name: column for column in columns}
        inputs = _columns_model(f"{prefix}Inputs", columns, JSON_TYPES)
        self.json = create_model(
            f"{prefix}Request",
            __config__=ConfigDict(extra="forbid"),
            inputs=(inputs, Field(description="one row: the values keyed by column")),
            **({"k": _k(Annotated[int, Strict()])} if search else {}),
        )
        self.form = _columns_model(
            f"{prefix}Form", columns, FORM_TYPES, **({"k": _k(int)} if search else {})
        )


# --- responses ------------------------------------------------------------------------------


class ErrorResponse(BaseModel):
    detail: str = Field(description="what went wrong and what to do")


class StatusResponse(BaseModel):
    status: str


class PredictResponse(BaseModel):
    outputs: dict[str, dict[str, Any]] = Field(description="each task's prediction, by task")
    absent_inputs: list[str] = Field(description="the model's input fields the row lacked")


class EmbedResponse(BaseModel):
    embeddings: dict[str, list[float]] = Field(description="unit vectors, by field given")


class CaptionResponse(BaseModel):
    caption: str
    score: float = Field(description="the caption's log-probability")


class ScoredAnswer(BaseModel):
    answer: str
    score: float


class AnswerResponse(BaseModel):
    answer: str
    score: float = Field(description="the answer's probability")
    top: list[ScoredAnswer] = Field(description="the most likely answers, best first")


class SearchHit(BaseModel):
    id: int
    score: float = Field(description="cosine similarity to the query")
    item: dict[str, Any] = Field(description="the indexed item's manifest row")
    thumbnail: str | None = Field(description="the URL of the item's image, if it has one")


class SearchResponse(BaseModel):
    results: list[SearchHit]


class IndexSummary(BaseModel):
    size: int
    field: str = Field(description="the field the index embeds")
    kind: str = Field(description="exact or hnsw")
    query_inputs: list[InputColumn] = Field(description="the columns a search may give")


class Limits(BaseModel):
    max_body_bytes: int
    max_image_pixels: int
    max_audio_seconds: float
    timeout_s: float
    max_batch: int
    max_queue: int
    max_k: int


class InfoResponse(BaseModel):
    inputs: list[InputColumn]
    tasks: list[dict[str, Any]] = Field(description="name, type and the fields each reads")
    index: IndexSummary | None
    limits: Limits
