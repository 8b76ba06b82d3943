from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from polymodal.data.modalities.image import DEFAULT_MAX_PIXELS, ImagePreprocessor
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
    pixels, lengths = pre.collate([white, None, black])
    assert lengths is None
    assert pixels.dtype == torch.uint8 and torch.equal(pixels[1], black)  # bytes until the model
    values = pre.model_input(pixels, torch.tensor([True, False, True]))
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
    pre = ImagePreprocessor(
        "image", size=12, mean=(0.1, 0.2, 0.3), std=(1.0, 2.0, 3.0), max_pixels=1000
    )
    again = ImagePreprocessor.from_state("image", pre.state())
    assert again.state() == pre.state() and again.max_pixels == 1000
    older = {key: value for key, value in pre.state().items() if key != "max_pixels"}
    assert ImagePreprocessor.from_state("image", older).max_pixels == DEFAULT_MAX_PIXELS


def scene(width: int, height: int) -> Image.Image:
    """A smooth gradient with a few sharp shapes: real structure, unlike a flat colour."""
    y, x = np.mgrid[0:height, 0:width]
    ramp = np.stack([x * 255 // width, y * 255 // height, (x + y) * 127 // (width + height)], -1)
    img = Image.fromarray(ramp.astype(np.uint8))
    for i in range(4):
        box = (width * i // 5, height * i // 6, width * (i + 2) // 6, height * (i + 3) // 7)
        img.paste((255 - 60 * i, 40 * i, 200), box)
    return img


def plain(path: Path, size: int) -> torch.Tensor:
    """The reference: orient, convert and fit the full-size image, with no reduction."""
    with Image.open(path) as img:
        img = ImageOps.exif_transpose(img).convert("RGB")
        img = ImageOps.fit(img, (size, size), Image.Resampling.BILINEAR)
        return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)


def test_small_images_decode_exactly_as_a_plain_full_size_fit(tmp_path: Path):
    exif = Image.Exif()
    exif[0x0112] = 8
    images = {
        "rgb.png": scene(64, 64),
        "rgba.png": scene(100, 80).convert("RGBA"),
        "grey.png": scene(200, 150).convert("L"),
        "palette.png": scene(120, 120).quantize(32),
        "photo.jpg": scene(64, 64),
    }
    for name, img in images.items():
        img.save(tmp_path / name)
    scene(120, 90).save(tmp_path / "turned.jpg", exif=exif)
    pre = ImagePreprocessor("image", size=64)
    for name in [*images, "turned.jpg"]:
        assert torch.equal(pre.read(name, tmp_path), plain(tmp_path / name, 64)), name


def test_large_images_decode_reduced_and_close_to_a_full_size_fit(tmp_path, monkeypatch):
    fitted = []
    fit = ImageOps.fit

    def spy(img, *args, **kwargs):
        fitted.append(img.size)
        return fit(img, *args, **kwargs)

    monkeypatch.setattr(ImageOps, "fit", spy)
    pre = ImagePreprocessor("image", size=64)
    for name in ("big.png", "big.jpg"):
        scene(2000, 1500).save(tmp_path / name)
        pixels = pre.read(name, tmp_path)
        assert pixels.shape == (3, 64, 64) and pixels.dtype == torch.uint8
        assert 2 * 64 <= min(fitted[-1]) < 4 * 64, name  # decoded reduced, not at 2000x1500
        difference = (pixels.float() - plain(tmp_path / name, 64).float()).abs().mean()
        assert difference < 2.0, name


def test_exif_orientation_survives_a_reduced_decode(tmp_path: Path):
    img = Image.new("RGB", (2400, 1200), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 1200, 1200))  # left half white as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": the white half ends up on top
    for name in ("rot.jpg", "rot.png"):
        img.save(tmp_path / name, exif=exif)
        pixels = ImagePreprocessor("image", size=16).read(name, tmp_path)
        top, bottom = pixels[:, :6].float().mean(), pixels[:, 10:].float().mean()
        assert top > 200 and bottom < 50, name


def test_too_large_image_is_refused_from_its_header(tmp_path: Path):
    scene(300, 200).save(tmp_path / "big.png")
    data = (tmp_path / "big.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 3])  # the header alone is enough
    pre = ImagePreprocessor("image", size=8, max_pixels=50_000)
    for name in ("big.png", "cut.png"):
        with pytest.raises(RowError) as err:
            pre.read(name, tmp_path)
        assert err.value.reason == "image too large"
        assert "300x200 = 60000 pixels > data.image.max_pixels (50000)" in err.value.detail
        assert name in err.value.detail
    at_limit = ImagePreprocessor("image", size=8, max_pixels=60_000)
    assert at_limit.read("big.png", tmp_path).shape == (3, 8, 8)


def test_pillow_bomb_is_a_row_error_and_its_warning_is_silent(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow refuses over 2000 pixels
    Image.new("L", (50, 50)).save(tmp_path / "bomb.png")
    Image.new("L", (40, 40)).save(tmp_path / "warned.png")  # over 1000: Pillow warns
    pre = ImagePreprocessor("image", size=8)
    with pytest.raises(RowError) as err:
        pre.read("bomb.png", tmp_path)
    assert err.value.reason == "image too large"
    assert err.value.detail == (
        f"{tmp_path / 'bomb.png'}: 2500 pixels > Pillow's limit (2000), which "
        "data.image.max_pixels cannot lift; raise PIL.Image.MAX_IMAGE_PIXELS to read such images"
    )
    within = ImagePreprocessor("image", size=8, max_pixels=2000)
    with pytest.raises(RowError) as err:
        within.read("bomb.png", tmp_path)
    assert str(err.value) == (
        f"image too large: {tmp_path / 'bomb.png'}: 2500 pixels > data.image.max_pixels (2000)"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert pre.read("warned.png", tmp_path).shape == (3, 8, 8)
    assert Image.MAX_IMAGE_PIXELS == 1000
