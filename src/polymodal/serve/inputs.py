"""Reading a request's row: a JSON body or a multipart form, checked against the columns the
model reads and the service's limits, with files decoded to bytes (never read as paths)."""

from __future__ import annotations

import base64
import binascii
import io
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import soundfile as sf
from fastapi import HTTPException
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from polymodal.errors import did_you_mean
from polymodal.serve.schemas import FILE_KINDS, InputColumn, RequestModels, ServeSettings


def unprocessable(detail: str) -> HTTPException:
    return HTTPException(422, detail)


@dataclass(frozen=True)
class RequestRow:
    """The row a request carries (column -> value, files as bytes) and a search's ``k``."""

    values: dict[str, Any]
    k: int | None = None


async def read_row(request: Request, models: RequestModels, limits: ServeSettings) -> RequestRow:
    """The request's row; a 422 naming the field for anything malformed, wrong-typed,
    unknown or over a limit. A multipart/form-data body is read as a form, any other as JSON."""
    content_type = request.headers.get("content-type", "").lower()
    if content_type.startswith("multipart/form-data"):
        body = _validate(models, models.form, await _form_values(request, limits.max_body_bytes))
        inputs = body
    else:
        body = _validate(models, models.json, await request.body())
        inputs = body.inputs
    values = inputs.model_dump(by_alias=True, exclude_none=True, exclude={"k"})
    for name, value in values.items():
        column = models.columns[name]
        if column.kind in FILE_KINDS:
            values[name] = read_file(column, value, limits)
    return RequestRow(values, getattr(body, "k", None))


async def _form_values(request: Request, max_part_bytes: int) -> dict[str, Any]:
    """A form's parts: files as bytes, other values as text; a part given twice is an error."""
    values: dict[str, Any] = {}
    try:
        async with request.form(max_part_size=max_part_bytes) as form:
            for name, value in form.multi_items():
                if name in values:
                    raise unprocessable(f"field '{name}' is given twice; give each field once")
                values[name] = await value.read() if isinstance(value, UploadFile) else value
    except StarletteHTTPException as err:
        if err.status_code != 400:  # 413 from the body limit, or the 422 above
            raise
        raise unprocessable(f"malformed multipart/form-data body: {err.detail}") from None
    return values


def _validate(models: RequestModels, model: type[BaseModel], data: Any) -> Any:
    try:
        if isinstance(data, bytes):
            return model.model_validate_json(data)
        return model.model_validate(data)
    except ValidationError as err:
        raise unprocessable(validation_detail(err, list(models.columns))) from None


def validation_detail(err: ValidationError, columns: list[str]) -> str:
    """One sentence per field at fault (the first error of each), naming it."""
    sentences: dict[str, str] = {}
    for error in err.errors(include_url=False, include_input=False):
        loc = [str(part) for part in error["loc"]]
        if error["type"] == "json_invalid":
            return (
                f"the body is not valid JSON ({error['msg']}); send "
                '{"inputs": {"COLUMN": VALUE, ...}} with Content-Type: application/json, '
                "or a multipart/form-data form"
            )
        name = loc[1] if loc[:1] == ["inputs"] and len(loc) > 1 else (loc[0] if loc else "body")
        if name in sentences:
            continue
        if error["type"] == "extra_forbidden":
            sentences[name] = (
                f"unknown field '{name}'{did_you_mean(name, columns)}; the fields are: "
                f"{', '.join(columns)}"
            )
        elif error["type"] == "missing":
            sentences[name] = f"field '{name}' is required"
        else:
            sentences[name] = f"field '{name}': {error['msg']}"
    return "; ".join(sentences.values())


def read_file(column: InputColumn, value: str | bytes, limits: ServeSettings) -> bytes:
    """The bytes of an image or audio value (base64 text, a data URL, or a file part's bytes),
    checked to be a readable file within the limits from its header alone."""
    data = value if isinstance(value, bytes) else decode_base64(column.name, value)
    if column.kind == "image":
        check_image(column.name, data, limits.max_image_pixels)
    else:
        check_audio(column.name, data, limits.max_audio_seconds)
    return data


def decode_base64(name: str, text: str) -> bytes:
    """The bytes of base64 ``text``, optionally a data URL; whitespace (line breaks) is allowed."""
    if text.startswith("data:"):
        header, comma, text = text.partition(",")
        if not comma or not header.endswith(";base64"):
            raise unprocessable(
                f"field '{name}': a data URL must hold base64 (data:image/png;base64,...)"
            )
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise unprocessable(
            f"field '{name}': not base64; send the file's bytes base64-encoded, or as a data URL"
        ) from None


def check_image(name: str, data: bytes, max_pixels: int) -> None:
    """A 422 unless ``data`` is an image Pillow reads with at most ``max_pixels`` pixels
    (its header's size: nothing is decoded)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
    except Image.DecompressionBombError:
        width, height = max_pixels + 1, 1  # beyond even Pillow's own limit
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise unprocessable(
            f"field '{name}': not an image file Pillow can read (PNG, JPEG, WebP, ...)"
        ) from None
    if width * height > max_pixels:
        raise unprocessable(
            f"field '{name}': the image has {width * height:,} pixels ({width}x{height}), over "
            f"the limit of {max_pixels:,} pixels; send a smaller image"
        )


def check_audio(name: str, data: bytes, max_seconds: float) -> None:
    """A 422 unless ``data`` is audio soundfile reads, at most ``max_seconds`` long."""
    try:
        info = sf.info(io.BytesIO(data))
    except (sf.SoundFileError, RuntimeError):
        raise unprocessable(
            f"field '{name}': not an audio file soundfile can read (wav, flac, ogg, mp3)"
        ) from None
    if info.duration > max_seconds:
        raise unprocessable(
            f"field '{name}': the audio lasts {info.duration:.1f} s, over the limit of "
            f"{max_seconds:g} s; send a shorter clip"
        )


def sample_row(columns: list[InputColumn]) -> dict[str, Any]:
    """A row of placeholder values (a grey image, half a second of silence, a word, zeros)
    for the columns that have one: what warms the model up before the service is ready."""
    image, audio = io.BytesIO(), io.BytesIO()
    Image.new("RGB", (32, 32), (128, 128, 128)).save(image, format="PNG")
    sf.write(audio, np.zeros(8000, np.float32), 16000, format="WAV")
    samples = {"image": image.getvalue(), "audio": audio.getvalue(), "text": "a", "number": 0.0}
    return {column.name: samples[column.kind] for column in columns if column.kind in samples}


class BodyLimit:
    """ASGI middleware: a 413 for a body over ``max_bytes``, at once from its Content-Length,
    else as soon as the bytes read pass it."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    def too_large(self) -> HTTPException:
        return HTTPException(
            413, f"the body is over the limit of {self.max_bytes:,} bytes; send a smaller one"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_bytes:
            error = self.too_large()
            response = JSONResponse({"detail": error.detail}, 413, {"Connection": "close"})
            await response(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise self.too_large()
            return message

        await self.app(scope, limited, send)
