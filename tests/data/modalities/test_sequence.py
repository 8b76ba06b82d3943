from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from polymodal.data.modalities.sequence import SequencePreprocessor
from polymodal.errors import DataError, RowError

TRAIN = [
    [[1.0, 10.0], [2.0, 20.0], [3.0, 30.0]],
    [[4.0, 40.0], [5.0, 50.0]],
]


def fitted(rows: list, base_dir: Path = Path(), max_length: int = 256) -> SequencePreprocessor:
    pre = SequencePreprocessor("s", max_length, base_dir)
    return pre.fit({"s": value} for value in rows)


def test_fit_standardises_each_channel_over_the_train_steps():
    pre = fitted([*TRAIN, None, "[[1, 2, 3]]"])  # absent, and a row of 3 channels: left out
    steps = np.array([step for row in TRAIN for step in row])
    assert pre.channels == 2
    assert np.allclose(pre.mean, steps.mean(axis=0)) and np.allclose(pre.std, steps.std(axis=0))
    out = pre.read(TRAIN[0], Path())
    assert out.shape == (3, 2) and out.dtype == torch.float32
    expected = (np.array(TRAIN[0]) - steps.mean(axis=0)) / steps.std(axis=0)
    assert np.allclose(out.numpy(), expected, atol=1e-6)
    assert pre.encoder_args() == {"channels": 2, "max_length": 256}


def test_a_flat_list_is_one_channel_and_a_constant_channel_keeps_std_one():
    pre = fitted([[1, 2, 3], [5, 5]])
    assert pre.channels == 1 and pre.read([3, 4], Path()).shape == (2, 1)
    constant = fitted([[[1, 7], [2, 7]]])
    assert constant.std.tolist() == [0.5, 1.0]
    assert constant.read([[1, 7]], Path())[0, 1] == 0


def test_npy_csv_and_json_text_cells_read_alike(tmp_path: Path):
    series = np.array(TRAIN[0])
    np.save(tmp_path / "s.npy", series)
    np.save(tmp_path / "one.npy", series[:, 0])
    (tmp_path / "header.csv").write_text("a,b\n1,10\n2,20\n3,30\n", encoding="utf-8")
    (tmp_path / "plain.csv").write_text("1,10\n2,20\n3,30\n", encoding="utf-8")
    pre = fitted(["s.npy", *TRAIN[1:]], tmp_path)  # fitting reads the file
    direct = pre.read(TRAIN[0], tmp_path)
    for cell in ("s.npy", "header.csv", "plain.csv", json.dumps(TRAIN[0])):
        assert torch.equal(pre.read(cell, tmp_path), direct), cell
    assert fitted(["one.npy"], tmp_path).read("one.npy", tmp_path).shape == (3, 1)


def test_steps_with_nan_are_masked(tmp_path: Path):
    pre = fitted(TRAIN)
    clean = pre.read([[1, 10], [3, 30]], Path())
    assert torch.equal(pre.read([[1, 10], [2, None], [3, 30]], Path()), clean)
    np.save(tmp_path / "nan.npy", np.array([[np.nan, 10], [1, 10], [3, 30]]))
    (tmp_path / "gap.csv").write_text("1,10\n2,\n3,30\n", encoding="utf-8")
    assert torch.equal(pre.read("nan.npy", tmp_path), clean)
    assert torch.equal(pre.read("gap.csv", tmp_path), clean)
    with pytest.raises(RowError) as empty:
        pre.read([[None, 1], [2, None]], Path())
    assert empty.value.reason == "empty sequence"


def test_the_last_steps_are_kept_and_collate_pads():
    pre = fitted(TRAIN, max_length=2)
    long = pre.read(TRAIN[0], Path())
    assert torch.equal(long, pre.read(TRAIN[0][1:], Path()))  # the last 2 of 3 steps
    short = pre.read([[1, 10]], Path())
    values, lengths = pre.collate([short, None, long])
    assert values.shape == (3, 2, 2) and lengths.tolist() == [1, 0, 2]
    assert torch.equal(values[0, :1], short) and not values[0, 1:].any() and not values[1].any()


def test_bad_rows_are_row_errors_with_a_clear_reason(tmp_path: Path):
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (tmp_path / "words.csv").write_text("1,2\nthree,4\n", encoding="utf-8")
    (tmp_path / "s.txt").write_text("1,2", encoding="utf-8")
    pre = fitted(TRAIN)
    expected = {
        "[[1, 2, 3]]": "wrong channel count",
        '[[1, "a"]]': "non-numeric sequence",
        "[[1, true]]": "non-numeric sequence",
        "[[1, 2], [3]]": "ragged sequence",
        "[[1, Infinity]]": "non-finite sequence",
        "[[[1, 2]]]": "non-numeric sequence",
        "[]": "empty sequence",
        "gone.npy": "missing sequence file",
        "objects.npy": "unreadable sequence",
        "words.csv": "non-numeric sequence",
        "s.txt": "unknown sequence file",
    }
    for cell, reason in expected.items():
        with pytest.raises(RowError) as bad:
            pre.read(cell, tmp_path)
        assert bad.value.reason == reason, cell
    with pytest.raises(DataError, match="no train row holds a readable sequence"):
        fitted(["gone.npy", None], tmp_path)


def test_state_round_trip():
    pre = fitted(TRAIN, max_length=5)
    again = SequencePreprocessor.from_state("s", json.loads(json.dumps(pre.state())))
    assert again.state() == pre.state()
    assert torch.equal(again.read(TRAIN[1], Path()), pre.read(TRAIN[1], Path()))
