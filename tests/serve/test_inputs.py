"""Reading a request's values: the columns of each kind of field, base64 and data URLs, the
audio length limit, and the placeholder row that warms a model up."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from fastapi import HTTPException
from pydantic import ValidationError

from polymodal.config import DataConfig, FieldSpec
from polymodal.data.pipeline import prepare_data
from polymodal.serve.inputs import check_audio, decode_base64, sample_row, validation_detail
from polymodal.serve.schemas import InputColumn, RequestModels, input_columns


def wav(seconds: float, rate: int = 8000) -> bytes:
    out = io.BytesIO()
    sf.write(out, np.zeros(round(seconds * rate), np.float32), rate, format="WAV")
    return out.getvalue()


def test_each_kind_of_field_gives_its_columns(tiny_manifest: Path) -> None:
    fields = {
        "image": FieldSpec(kind="image"),
        "text": FieldSpec(kind="text"),
        "shop": FieldSpec(kind="tabular", numeric=["price"], categorical=["label"]),
    }
    data = prepare_data(DataConfig(manifest=tiny_manifest, fields=fields))
    columns = input_columns(data.preprocessor, ["image", "text", "shop"])
    assert [(c.name, c.kind, c.field) for c in columns] == [
        ("image", "image", "image"),
        ("text", "text", "text"),
        ("price", "number", "shop"),
        ("label", "category", "shop"),
    ]


def test_numbers_are_json_numbers_and_form_text_is_parsed() -> None:
    models = RequestModels("Row", [InputColumn(name="price", kind="number", field="shop")])
    given = models.json.model_validate_json('{"inputs": {"price": 3}}')
    assert given.inputs.model_dump(by_alias=True) == {"price": 3.0}
    assert models.form.model_validate({"price": "2.5"}).model_dump(by_alias=True) == {"price": 2.5}
    for body in ('{"inputs": {"price": "3"}}', '{"inputs": {"price": NaN}}'):
        with pytest.raises(ValidationError) as caught:
            models.json.model_validate_json(body)
        assert validation_detail(caught.value, ["price"]).startswith("field 'price': ")


def test_base64_may_be_a_data_url_or_wrapped_in_lines() -> None:
    data = bytes(range(200))
    wrapped = base64.encodebytes(data).decode()  # 76 characters a line, as `base64` writes
    assert "\n" in wrapped.strip() and decode_base64("image", wrapped) == data
    url = "data:audio/wav;base64," + base64.b64encode(data).decode()
    assert decode_base64("audio", url) == data


def test_audio_over_the_limit_or_unreadable_is_a_422_naming_it() -> None:
    check_audio("audio", wav(1.0), max_seconds=2)
    with pytest.raises(HTTPException) as caught:
        check_audio("audio", wav(3.0), max_seconds=2)
    assert caught.value.status_code == 422
    assert caught.value.detail == (
        "field 'audio': the audio lasts 3.0 s, over the limit of 2 s; send a shorter clip"
    )
    with pytest.raises(HTTPException, match="422"):
        check_audio("audio", b"RIFF????", max_seconds=2)


def test_the_warm_up_row_holds_a_value_of_each_kind_it_can_make() -> None:
    kinds = ["image", "audio", "text", "number", "category", "sequence"]
    columns = [InputColumn(name=kind, kind=kind, field=kind) for kind in kinds]  # type: ignore[arg-type]
    row = sample_row(columns)
    assert set(row) == {"image", "audio", "text", "number"}
    assert sf.info(io.BytesIO(row["audio"])).duration == 0.5
