from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from polymodal.data.modalities.image import ImagePreprocessor
from polymodal.errors import RowError


def test_reads_resizes_and_converts_to_rgb(tmp_path: Path):
    Image.new("L", (40, 20), 255).save(tmp_path / "grey.png")
    Image.new("RGBA", (10, 10), (255, 0, 0, 128)).save(tmp_path / "rgba.png")
    pre = ImagePreprocessor("image", size=8)
    grey = pre.read("grey.png", tmp_path)
    assert grey.shape == (3, 8, 8) and grey.dtype == torch.uint8 and int(grey.min()) == 255
    assert pre.read("rgba.png", tmp_path)[:, 0, 0].tolist() == [255, 0, 0]


def test_exif_orientation_is_applied(tmp_path: Path):
    img = Image.new("RGB", (20, 10), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 10, 10))  # left half white as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": the white half ends up on top
    img.save(tmp_path / "rot.jpg", exif=exif, quality=95)
    pixels = ImagePreprocessor("image", size=10).read("rot.jpg", tmp_path)
    top, bottom = pixels[:, :4].float().mean(), pixels[:, 6:].float().mean()
    assert top > 200 and bottom < 50


def test_collate_normalises_and_zeros_absent(tmp_path: Path):
    pre = ImagePreprocessor("image", size=4, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    white = torch.full((3, 4, 4), 255, dtype=torch.uint8)
    black = torch.zeros((3, 4, 4), dtype=torch.uint8)
    values, lengths = pre.collate([white, None, black])
    assert lengths is None
    assert torch.allclose(values[0], torch.ones(3, 4, 4))
    assert torch.equal(values[1], torch.zeros(3, 4, 4))
    assert torch.allclose(values[2], -torch.ones(3, 4, 4))


def test_missing_and_truncated_images(tmp_path: Path):
    pre = ImagePreprocessor("image", size=8)
    with pytest.raises(RowError) as missing:
        pre.read("nope.png", tmp_path)
    assert missing.value.reason == "missing image file"
    Image.new("RGB", (32, 32), (1, 2, 3)).save(tmp_path / "ok.png")
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.png").write_bytes(b"not an image at all")
    for name in ("cut.png", "junk.png"):
        with pytest.raises(RowError) as bad:
            pre.read(name, tmp_path)
        assert bad.value.reason == "unreadable image" and name in bad.value.detail


def test_state_round_trip():
    pre = ImagePreprocessor("image", size=12, mean=(0.1, 0.2, 0.3), std=(1.0, 2.0, 3.0))
    again = ImagePreprocessor.from_state("image", pre.state())
    assert again.state() == pre.state()
