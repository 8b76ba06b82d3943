"""Every name ``polymodal.evaluate`` lists resolves, and unknown names fail clearly."""

from __future__ import annotations

import importlib
import sys

import pytest

import polymodal.evaluate as evaluate


@pytest.mark.parametrize("name", evaluate.__all__)
def test_listed_names_resolve(name):
    assert getattr(evaluate, name) is not None


def test_unknown_name():
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        evaluate.nope  # noqa: B018


@pytest.mark.parametrize("name", ["captioning", "vqa", "retrieval", "classification"])
def test_old_metric_module_paths_still_import_with_a_warning(name):
    sys.modules.pop(f"polymodal.evaluate.{name}", None)
    with pytest.warns(DeprecationWarning, match=f"moved to polymodal.metrics.{name}"):
        old = importlib.import_module(f"polymodal.evaluate.{name}")
    assert old is importlib.import_module(f"polymodal.metrics.{name}")
