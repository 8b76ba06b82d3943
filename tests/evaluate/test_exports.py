"""Every name ``polymodal.evaluate`` lists resolves, and unknown names fail clearly."""

from __future__ import annotations

import pytest

import polymodal.evaluate as evaluate


@pytest.mark.parametrize("name", evaluate.__all__)
def test_listed_names_resolve(name):
    assert getattr(evaluate, name) is not None


def test_unknown_name():
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        evaluate.nope  # noqa: B018
