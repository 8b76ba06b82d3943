"""Images: Pillow decode, EXIF orientation, RGB, resize + centre crop, normalise."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from polymodal.errors import RowError


class ImagePreprocessor:
    """Reads an image path into a uint8 (3, size, size) tensor; collates to normalised floats."""

    kind = "image"

    def __init__(
        self,
        column: str,
        size: int = 64,
        mean: tuple[float, float, float] = (0.5, 0.5, 0.5),
        std: tuple[float, float, float] = (0.5, 0.5, 0.5),
    ) -> None:
        self.column = column
        self.size = size
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)

    def fit(self, rows: list[dict[str, Any]]) -> None:
        """Images need no statistics from the data."""

    def read(self, value: Any, base_dir: Path) -> torch.Tensor:
        path = Path(str(value)).expanduser()
        path = path if path.is_absolute() else base_dir / path
        if not path.is_file():
            raise RowError("missing image file", f"{path} does not exist")
        try:
            with Image.open(path) as img:
                img = ImageOps.exif_transpose(img).convert("RGB")
                img = ImageOps.fit(img, (self.size, self.size), Image.Resampling.BILINEAR)
                array = np.asarray(img, dtype=np.uint8)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
            raise RowError("unreadable image", f"{path}: {err}") from err
        return torch.from_numpy(array.copy()).permute(2, 0, 1)

    def collate(self, items: list[torch.Tensor | None]) -> tuple[torch.Tensor, None]:
        blank = torch.zeros(3, self.size, self.size, dtype=torch.uint8)
        pixels = torch.stack([blank if x is None else x for x in items]).float().div_(255)
        present = torch.tensor([x is not None for x in items]).view(-1, 1, 1, 1)
        return ((pixels - self.mean) / self.std) * present, None

    def encoder_args(self) -> dict[str, Any]:
        return {"in_channels": 3}

    def state(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "mean": self.mean.flatten().tolist(),
            "std": self.std.flatten().tolist(),
        }

    @classmethod
    def from_state(cls, column: str, state: dict[str, Any]) -> ImagePreprocessor:
        return cls(column, state["size"], tuple(state["mean"]), tuple(state["std"]))
