"""Stores of preprocessed tensors: the same examples as reading rows, each shared image decoded
once, a disk store found again by its fingerprint and rebuilt when anything it covers changes."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from polymodal.config import DataConfig
from polymodal.data.modalities.audio import AudioPreprocessor
from polymodal.data.modalities.image import ImagePreprocessor
from polymodal.data.modalities.video import VideoPreprocessor
from polymodal.data.pipeline import prepare_data

FIELDS = {
    "image": {"kind": "image"},
    "question": {"kind": "text"},
    "size": {"kind": "tabular"},
    "answer": {"kind": "label", "role": "target"},
}


def vqa_like(folder: Path, images: int = 4, per_image: int = 6) -> Path:
    """Several questions about each picture, as in VQA: rows share image files."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(images):
        Image.new("RGB", (20, 20), (40 * i, 200 - 40 * i, 90)).save(folder / f"{i}.png")
        for q in range(per_image):
            rows.append(
                {
                    "image": f"{i}.png",
                    "question": f"what is shown in picture {i} number {q}",
                    "size": float(i + q) if q % 3 else None,
                    "answer": ["yes", "no"][(i + q) % 2],
                    "split": "train" if q < 4 else "val",
                }
            )
    path = folder / "manifest.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    return path


def config(manifest: Path, cache: str) -> DataConfig:
    """Decoding in this process (workers 0), where a test can count it."""
    return DataConfig(manifest=manifest, fields=FIELDS, image={"size": 8}, cache=cache, workers=0)


def same(a: dict, b: dict) -> bool:
    if a.keys() != b.keys():
        return False
    for key in a:
        x, y = a[key], b[key]
        if isinstance(x, torch.Tensor) or isinstance(y, torch.Tensor):
            if x is None or y is None or x.dtype != y.dtype or not torch.equal(x, y):
                return False
        elif x != y:
            return False
    return True


@pytest.mark.parametrize("cache", ["memory", "disk"])
def test_a_store_gives_the_examples_that_reading_rows_gives(tmp_path, cache):
    manifest = vqa_like(tmp_path / "data")
    plain = prepare_data(config(manifest, "none"))
    stored = prepare_data(config(manifest, cache), cache_dir=tmp_path / "cache")
    for split in ("train", "val"):
        assert len(stored.splits[split]) == len(plain.splits[split]) > 0
        for a, b in zip(plain.splits[split], stored.splits[split], strict=True):
            assert same(a, b)


def test_each_shared_image_is_decoded_once(tmp_path, monkeypatch):
    manifest = vqa_like(tmp_path / "data", images=3, per_image=6)
    decoded: list[Path] = []
    real = ImagePreprocessor.decode

    def counting(self: ImagePreprocessor, path: Path) -> torch.Tensor:
        decoded.append(path)
        return real(self, path)

    monkeypatch.setattr(ImagePreprocessor, "decode", counting)
    data = prepare_data(config(manifest, "memory"))
    assert len(data.splits["train"]) == 12 and len(data.splits["val"]) == 6
    assert len(decoded) == 6  # 3 files, read once for train and once for val
    assert len(set(decoded)) == 3


def test_a_disk_store_is_found_again_and_rebuilt_when_its_inputs_change(tmp_path, monkeypatch):
    manifest = vqa_like(tmp_path / "data")
    first = prepare_data(config(manifest, "disk"), cache_dir=tmp_path / "cache")
    folder = first.splits["train"].store.folder
    assert folder is not None and (folder / "store.json").is_file()

    calls: list[Path] = []
    monkeypatch.setattr(ImagePreprocessor, "decode", lambda self, path: calls.append(path))
    again = prepare_data(config(manifest, "disk"), cache_dir=tmp_path / "cache")
    assert again.splits["train"].store.folder == folder and calls == []  # nothing decoded

    monkeypatch.undo()
    with manifest.open("a", encoding="utf-8") as f:  # the manifest changes: a new store
        f.write("\n" + json.dumps({"image": "0.png", "question": "and now?", "answer": "no"}))
    changed = prepare_data(config(manifest, "disk"), cache_dir=tmp_path / "cache")
    assert changed.splits["train"].store.folder != folder
    assert len(changed.splits["train"]) == len(first.splits["train"]) + 1

    bigger = DataConfig(manifest=manifest, fields=FIELDS, image={"size": 16}, cache="disk")
    resized = prepare_data(bigger, cache_dir=tmp_path / "cache")
    assert resized.splits["train"].store.folder not in (
        folder,
        changed.splits["train"].store.folder,
    )
    assert resized.splits["train"][0]["image"].shape == (3, 16, 16)


def test_bad_rows_are_left_out_of_a_store_with_their_reason(tmp_path):
    manifest = vqa_like(tmp_path / "data")
    (tmp_path / "data" / "1.png").write_bytes(b"not a png")  # 6 questions share it
    data = prepare_data(config(manifest, "disk"), cache_dir=tmp_path / "cache")
    assert len(data.splits["train"]) == 12 and len(data.splits["val"]) == 6
    assert {(q.reason, q.field) for q in data.quarantine.rows} == {("unreadable image", "image")}
    assert len(data.quarantine) == 6
    again = prepare_data(config(manifest, "disk"), cache_dir=tmp_path / "cache")
    assert len(again.quarantine) == 6  # the store remembers why, without decoding again


def clips_manifest(folder: Path) -> Path:
    """Twelve rows naming three audio files of different lengths and two frame folders."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(3):
        t = np.arange(1600 * (i + 1)) / 16000
        sf.write(folder / f"{i}.wav", np.sin(2 * np.pi * 200 * t).astype(np.float32), 16000)
    for v in range(2):
        (folder / f"v{v}").mkdir()
        for f in range(2 + v):
            Image.new("RGB", (10, 10), (50 * f, 0, 9)).save(folder / f"v{v}" / f"{f}.png")
    rows = [
        {"clip": f"{i % 3}.wav", "video": f"v{i % 2}", "series": [[i], [1]], "label": "ab"[i % 2]}
        for i in range(12)
    ]
    path = folder / "manifest.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize("cache", ["memory", "disk"])
def test_audio_and_video_files_are_decoded_once_and_stored_by_length(tmp_path, cache, monkeypatch):
    fields = {
        "clip": {"kind": "audio"},
        "video": {"kind": "video"},
        "series": {"kind": "sequence"},
        "label": {"kind": "label", "role": "target"},
    }
    config = DataConfig(
        manifest=clips_manifest(tmp_path / "data"),
        fields=fields,
        video={"size": 8},
        val_fraction=0.0,
        test_fraction=0.0,
        cache=cache,
        workers=0,
    )
    plain = prepare_data(config.model_copy(update={"cache": "none"}))
    decoded: list[object] = []

    def counting(real: Callable) -> Callable:
        def decode(self: object, source: object, training: bool = False) -> torch.Tensor:
            decoded.append(source)
            return real(self, source, training)

        return decode

    for cls in (AudioPreprocessor, VideoPreprocessor):
        monkeypatch.setattr(cls, "decode", counting(cls.decode))
    stored = prepare_data(config, cache_dir=tmp_path / "cache")
    assert len(decoded) == 5  # 3 audio files and 2 videos, for 12 rows
    store = stored.splits["train"].store
    assert {"clip.offsets", "clip.data", "video.offsets", "video.data"} <= set(store.arrays)
    assert "clip.values" not in store.arrays and len(store.arrays["clip.offsets"]) == 4
    for a, b in zip(plain.splits["train"], stored.splits["train"], strict=True):
        assert same(a, b)
    if cache == "disk":
        assert isinstance(store.arrays["clip.data"], np.memmap)
        decoded.clear()
        again = prepare_data(config, cache_dir=tmp_path / "cache")
        assert decoded == [] and again.splits["train"].store.folder == store.folder
