from __future__ import annotations

from pathlib import Path

import pytest
import torch

from polymodal.data.modalities.tabular import LabelPreprocessor, TabularPreprocessor
from polymodal.errors import RowError

ROWS = [
    {"price": 1.0, "size": "2", "brand": "acme"},
    {"price": 3.0, "size": "4", "brand": "zeta"},
    {"price": "oops", "size": None, "brand": "acme"},
]


def test_standardises_with_train_statistics(tmp_path: Path):
    pre = TabularPreprocessor(["price", "size"], ["brand"])
    pre.fit(ROWS)  # "oops" and None are skipped when fitting
    assert pre.mean == {"price": 2.0, "size": 3.0}
    assert pre.std == {"price": 1.0, "size": 1.0}
    row = pre.read({"price": 5, "size": "3", "brand": "zeta"}, tmp_path)
    assert row.tolist() == [3.0, 0.0, 2.0]  # (5-2)/1, (3-3)/1, zeta is id 2 (0 = unknown)
    missing = pre.read({"price": None, "size": 3, "brand": "never seen"}, tmp_path)
    assert missing.tolist() == [0.0, 0.0, 0.0]  # missing -> train mean; unseen -> unknown id
    assert pre.encoder_args() == {"num_numeric": 2, "cardinalities": [3]}


@pytest.mark.parametrize("value", ["oops", True, "inf", [1]])
def test_non_numeric_value_is_a_row_error(tmp_path: Path, value):
    pre = TabularPreprocessor(["price"], [])
    pre.fit(ROWS)
    with pytest.raises(RowError) as err:
        pre.read({"price": value}, tmp_path)
    assert err.value.reason == "non-numeric value" and "price" in err.value.detail


def test_constant_column_does_not_divide_by_zero(tmp_path: Path):
    pre = TabularPreprocessor(["x"], [])
    pre.fit([{"x": 4}, {"x": 4}])
    assert pre.read({"x": 4}, tmp_path).tolist() == [0.0]


def test_tabular_state_round_trip(tmp_path: Path):
    pre = TabularPreprocessor(["price"], ["brand"])
    pre.fit(ROWS)
    again = TabularPreprocessor.from_state("t", pre.state())
    value = {"price": 2.5, "brand": "zeta"}
    assert torch.equal(pre.read(value, tmp_path), again.read(value, tmp_path))


def test_labels_fixed_or_fitted(tmp_path: Path):
    fitted = LabelPreprocessor("label")
    fitted.fit([{"label": "b"}, {"label": "a"}, {"label": None}])
    assert fitted.labels == ["a", "b"]
    fixed = LabelPreprocessor("label", ["false", "true"])
    fixed.fit([{"label": "maybe"}])
    assert fixed.read(True, tmp_path).item() == 1  # JSON booleans read as "true"/"false"
    with pytest.raises(RowError) as err:
        fixed.read("maybe", tmp_path)
    assert err.value.reason == "unknown label" and "'maybe'" in err.value.detail


@pytest.mark.parametrize("value", [float("nan"), "nan", "NaN", " -nan ", None, "", "  "])
def test_nan_is_missing_whatever_the_source(tmp_path: Path, value):
    """JSON NaN (a float) and the text nan of a CSV follow one rule: a missing number."""
    pre = TabularPreprocessor(["price"], [])
    pre.fit([*ROWS, {"price": value}])
    assert pre.mean == {"price": 2.0}  # the missing value is not fitted
    assert pre.is_missing({"price": value})
    assert pre.read({"price": value}, tmp_path).tolist() == [0.0]


def test_a_field_is_missing_only_when_every_column_is(tmp_path: Path):
    pre = TabularPreprocessor(["price", "size"], ["brand"])
    assert pre.is_missing({"price": "nan", "size": None})
    assert not pre.is_missing({"price": "nan", "size": None, "brand": "acme"})
    assert not pre.is_missing({"price": "oops"})  # a bad value is not missing: it is an error
