from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file
from safetensors.torch import save_file as save_torch

from polymodal.data.modalities.features import FeaturesPreprocessor
from polymodal.errors import DataError, RowError


def fitted(rows: list, base_dir: Path = Path()) -> FeaturesPreprocessor:
    return FeaturesPreprocessor("f", base_dir).fit({"f": value} for value in rows)


def test_vectors_from_lists_npy_and_safetensors(tmp_path: Path):
    vector = np.array([0.5, -1.0, 2.0])
    np.save(tmp_path / "v.npy", vector)
    save_file({"embedding": vector.astype(np.float32)}, tmp_path / "v.safetensors")
    save_torch({"x": torch.tensor(vector, dtype=torch.bfloat16)}, tmp_path / "bf16.safetensors")
    pre = fitted([None, "v.safetensors"], tmp_path)  # the first row that reads fixes D
    assert pre.dim == 3 and not pre.sequence and pre.encoder_args() == {"input_dim": 3}
    expected = torch.tensor(vector, dtype=torch.float32)
    for cell in (vector.tolist(), json.dumps(vector.tolist()), "v.npy", "v.safetensors"):
        assert torch.equal(pre.read(cell, tmp_path), expected), cell
    assert torch.equal(pre.read("bf16.safetensors", tmp_path), expected)  # exact in bf16
    values, lengths = pre.collate([expected, None])
    assert values.shape == (2, 3) and lengths is None and not values[1].any()


def test_sequences_of_vectors_collate_with_lengths(tmp_path: Path):
    np.save(tmp_path / "t.npy", np.ones((4, 2), dtype=np.float32))
    pre = fitted(["t.npy"], tmp_path)
    assert pre.dim == 2 and pre.sequence
    long, short = pre.read("t.npy", tmp_path), pre.read([[1, 2]], tmp_path)
    values, lengths = pre.collate([short, None, long])
    assert values.shape == (3, 4, 2) and lengths.tolist() == [1, 0, 4]
    assert values[0, 0].tolist() == [1, 2] and not values[0, 1:].any()


def test_bad_rows_are_row_errors(tmp_path: Path):
    save_file(
        {"a": np.ones(3, np.float32), "b": np.ones(3, np.float32)}, tmp_path / "2.safetensors"
    )
    (tmp_path / "junk.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    np.save(tmp_path / "objects.npy", np.array([None, 1], dtype=object), allow_pickle=True)
    (tmp_path / "v.pt").write_bytes(b"a pickle")
    pre = fitted([[1, 2, 3]])
    expected = {
        "[1, 2]": "wrong features shape",
        "[[1, 2, 3]]": "wrong features shape",  # several vectors where rows hold one
        "[1, NaN, 3]": "features hold NaN",
        "[1, null, 3]": "features hold NaN",
        '[1, "2", 3]': "non-numeric features",
        "[]": "bad features shape",
        "gone.npy": "missing features file",
        "2.safetensors": "unreadable features",
        "junk.safetensors": "unreadable features",
        "objects.npy": "unreadable features",
        "v.pt": "unknown features file",
    }
    for cell, reason in expected.items():
        with pytest.raises(RowError) as bad:
            pre.read(cell, tmp_path)
        assert bad.value.reason == reason, cell
    with pytest.raises(DataError, match="no train row holds readable features"):
        fitted(["gone.npy"], tmp_path)


def test_state_round_trip():
    for rows in ([[1.0, 2.0]], [[[1.0, 2.0], [3.0, 4.0]]]):
        pre = fitted(rows)
        again = FeaturesPreprocessor.from_state("f", json.loads(json.dumps(pre.state())))
        assert again.state() == pre.state()
        assert torch.equal(again.read(rows[0], Path()), pre.read(rows[0], Path()))
