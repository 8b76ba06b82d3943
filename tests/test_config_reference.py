"""docs/config.md is what ``config_reference()`` writes, and it documents every config key."""

from __future__ import annotations

import re
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from polymodal.config import RunConfig
from polymodal.config_reference import config_reference

DOC = Path(__file__).resolve().parents[1] / "docs" / "config.md"


def _types(annotation: Any) -> Iterator[Any]:
    """``annotation`` and every type nested in it (union members, list items, dict values)."""
    yield annotation
    for arg in typing.get_args(annotation):
        yield from _types(arg)


def _config_models(model: type[BaseModel]) -> set[type[BaseModel]]:
    """``model`` and every section model its fields reach."""
    found = {model}
    for info in model.model_fields.values():
        for kind in _types(info.annotation):
            if isinstance(kind, type) and issubclass(kind, BaseModel) and kind not in found:
                found |= _config_models(kind)
    return found


def test_docs_config_md_is_up_to_date():
    assert DOC.read_text(encoding="utf-8") == config_reference(), (
        "docs/config.md is out of date; regenerate it: polymodal config reference > docs/config.md"
    )


def test_every_key_of_every_section_is_documented():
    doc = config_reference()
    models = _config_models(RunConfig)
    assert {m.__name__ for m in models} >= {"FieldSpec", "MLPEncoderConfig", "RetrieveConfig"}
    for model in models:
        for name, info in model.model_fields.items():
            assert info.description, f"{model.__name__}.{name} has no Field(description=...)"
            meaning = re.escape(info.description.replace("|", "\\|"))
            row = rf"^\| `([\w.]+\.)?{name}` \| .* \| {meaning} \|$"
            assert re.search(row, doc, re.MULTILINE), f"{model.__name__}.{name} is not in the doc"
