"""Images: size check, reduced Pillow decode, EXIF orientation, RGB, resize + crop, normalise."""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from polymodal.data.modalities.base import FileField, GivenBytes, given_bytes, resolve_path
from polymodal.errors import RowError

DEFAULT_MAX_PIXELS = 2 * Image.MAX_IMAGE_PIXELS  # Pillow's own hard limit

# EXIF orientation -> the transpose that shows the image upright, as ImageOps.exif_transpose
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


Source = Path | GivenBytes | Image.Image


def array_image(array: np.ndarray) -> Image.Image:
    """A uint8 (H, W) grey or (H, W, 1|3|4) array as an image."""
    shaped = array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (1, 3, 4))
    if array.dtype != np.uint8 or not shaped or not array.size:
        raise RowError(
            "bad image array",
            f"an image array must be uint8 of shape (H, W) or (H, W, 1|3|4); got "
            f"{array.dtype} {tuple(array.shape)}",
        )
    return Image.fromarray(array[:, :, 0] if array.ndim == 3 and array.shape[2] == 1 else array)


class ImagePreprocessor(FileField):
    """Reads an image into a uint8 (3, size, size) tensor; collates to normalised floats.

    A manifest cell names a file; a row given in memory (``Predictor``, the service) may also
    hold the file's bytes, a PIL image or a uint8 array.
    """

    kind = "image"

    def __init__(
        self,
        column: str,
        size: int = 64,
        mean: tuple[float, float, float] = (0.5, 0.5, 0.5),
        std: tuple[float, float, float] = (0.5, 0.5, 0.5),
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        self.column = column
        self.size = size
        self.max_pixels = max_pixels
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)

    @staticmethod
    def resolve(value: Any, base_dir: Path) -> Source:
        """The image file a cell names (relative to ``base_dir``), which must exist, or the
        image given in memory."""
        if isinstance(value, Image.Image):
            return value
        if isinstance(value, np.ndarray):
            return array_image(value)
        return given_bytes(value) or resolve_path(value, base_dir, "image")

    def decode(self, path: Source, training: bool = False) -> torch.Tensor:
        """A uint8 (3, size, size) tensor of the image at ``path`` (no augmentation)."""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                if isinstance(path, Image.Image):
                    fitted = self.fit_image(path.copy(), "the given image")
                    array = np.asarray(fitted, dtype=np.uint8)
                else:
                    with Image.open(path) as img:
                        array = np.asarray(self.fit_image(img, path), dtype=np.uint8)
        except Image.DecompressionBombError as err:
            raise RowError("image too large", self._too_large(path, err)) from err
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
            raise RowError("unreadable image", f"{path}: {err}") from err
        return torch.from_numpy(array.copy()).permute(2, 0, 1)

    def _too_large(self, path: Source, err: Image.DecompressionBombError) -> str:
        """Why an image that Pillow refused to open is too large (its message names its size)."""
        found = re.search(r"\((\d+) pixels\)", str(err))
        pillow_limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)
        pixels = found.group(1) if found else f"over {pillow_limit}"
        if self.max_pixels <= pillow_limit:
            return f"{path}: {pixels} pixels > data.image.max_pixels ({self.max_pixels})"
        return (
            f"{path}: {pixels} pixels > Pillow's limit ({pillow_limit}), which data.image."
            "max_pixels cannot lift; raise PIL.Image.MAX_IMAGE_PIXELS to read such images"
        )

    def fit_image(self, img: Image.Image, path: Path | GivenBytes | str) -> Image.Image:
        """Check the header's size, decode reduced to about twice the target, then fit.

        Large images never exist at full size more than once: JPEGs are scaled down while
        decoding (``draft``) and every image is reduced by an integer factor before the copies
        that orientation and RGB conversion make.
        """
        width, height = img.size
        if width * height > self.max_pixels:
            raise RowError(
                "image too large",
                f"{path}: {width}x{height} = {width * height} pixels "
                f"> data.image.max_pixels ({self.max_pixels})",
            )
        img.draft("RGB", (2 * self.size, 2 * self.size))
        img.load()
        upright = _UPRIGHT.get(img.getexif().get(ExifTags.Base.Orientation, 1))
        factor = min(img.size) // (2 * self.size)
        if factor > 1:
            img = (img if img.mode in ("L", "RGB") else img.convert("RGB")).reduce(factor)
        if upright is not None:
            img = img.transpose(upright)
        img = img.convert("RGB")
        return ImageOps.fit(img, (self.size, self.size), Image.Resampling.BILINEAR)

    def collate(self, items: list[torch.Tensor | None]) -> tuple[torch.Tensor, None]:
        """uint8 pixels, zeros where absent: a quarter of the bytes of floats to pass from a
        DataLoader worker or to a GPU; ``model_input`` normalises them there."""
        blank = torch.zeros(3, self.size, self.size, dtype=torch.uint8)
        return torch.stack([blank if x is None else x for x in items]), None

    def model_input(self, values: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """Pixels scaled to [0, 1], normalised by mean and std; zeros where absent. The
        channels are the third-last dimension: (B, 3, H, W), or (B, F, 3, H, W) video frames."""
        mean, std = self.mean.to(values.device), self.std.to(values.device)
        pixels = values.float().div_(255).sub_(mean).div_(std)
        return pixels.mul_(present.view(-1, *(1,) * (values.dim() - 1)).to(pixels.dtype))

    def encoder_args(self) -> dict[str, Any]:
        return {"in_channels": 3, "size": self.size}

    def state(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "mean": self.mean.flatten().tolist(),
            "std": self.std.flatten().tolist(),
            "max_pixels": self.max_pixels,
        }

    @classmethod
    def from_state(cls, column: str, state: dict[str, Any]) -> ImagePreprocessor:
        return cls(
            column,
            state["size"],
            tuple(state["mean"]),
            tuple(state["std"]),
            state.get("max_pixels", DEFAULT_MAX_PIXELS),  # absent in states saved before it
        )
