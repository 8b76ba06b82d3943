"""Video: frames sampled uniformly from a video file, a folder of frames or a list of frames.

A cell is a path (relative to the manifest's folder) to a video file (decoded with PyAV, the
``video`` extra), or to a folder of frame images (in name order), or a JSON list of frame image
paths. ``frames`` frames are sampled, one per equal segment: at a random place in each segment
in a training read (TSN's sampling), at its centre otherwise. A shorter video keeps all its
frames and reports how many. Frames are fitted to a square as images are (the same decoding),
and normalised as images are when they reach the model.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

from polymodal.data.modalities.base import FileField, json_list, pad_batch, resolve_path
from polymodal.data.modalities.image import ImagePreprocessor
from polymodal.data.schema import IMAGE_SUFFIXES
from polymodal.errors import DataError, RowError


def _av() -> ModuleType:
    """PyAV, imported when a video file is first read."""
    try:
        import av
    except ImportError as err:
        raise DataError(
            f'reading video files needs PyAV ({err}): pip install "polymodal[video]" (or give '
            "each video as a folder of frame images)"
        ) from None
    return av


class VideoPreprocessor(FileField):
    """Reads a video into uint8 (F, 3, size, size) frames (F <= ``frames``); collates to
    (B, F, 3, size, size) with each row's frame count."""

    kind = "video"

    def __init__(
        self, column: str, frames: int = 8, size: int = 64, max_seconds: float | None = None
    ) -> None:
        self.column = column
        self.frames = frames
        self.size = size
        self.max_seconds = max_seconds
        self.images = ImagePreprocessor(column, size)  # decodes and normalises each frame

    def resolve(self, value: Any, base_dir: Path) -> Path | tuple[Path, ...]:
        """A video file or frame folder, or the frame files a list names, which must exist."""
        listed = json_list(value)
        if listed is None:
            return resolve_path(value, base_dir, "video")
        if not listed:
            raise RowError("empty video", "its list of frames is empty")
        return tuple(resolve_path(item, base_dir, "video frame") for item in listed)

    def decode(self, source: Path | tuple[Path, ...], training: bool = False) -> torch.Tensor:
        if isinstance(source, tuple):
            return self._frame_files(list(source), training)
        if source.is_dir():
            files = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise RowError("empty video", f"{source} holds no frame images")
            return self._frame_files(files, training)
        return self._video_file(source, training)

    def sample(self, count: int, training: bool = False) -> list[int]:
        """Which of ``count`` frames to keep: all when there are at most ``frames``, else one
        per equal segment (random place in a training read, the centre otherwise)."""
        if count <= self.frames:
            return list(range(count))
        segment = count / self.frames
        places = torch.rand(self.frames).tolist() if training else [0.5] * self.frames
        return [min(count - 1, int(segment * (i + u))) for i, u in enumerate(places)]

    def _frame_files(self, files: list[Path], training: bool) -> torch.Tensor:
        frames = []
        for i in self.sample(len(files), training):
            try:
                frames.append(self.images.decode(files[i]))
            except RowError as err:
                raise RowError("unreadable video frame", err.detail) from None
        return torch.stack(frames)

    def _video_file(self, path: Path, training: bool) -> torch.Tensor:
        """Decode the frames (up to ``max_seconds``) and fit the sampled ones to the square.

        Where the container tells how many frames the stream holds, only the sampled ones are
        converted; otherwise every frame is fitted as it comes (a long video never sits in
        memory at full size) and the sample is taken from them.
        """
        av = _av()
        kept: list[np.ndarray] = []
        try:
            with av.open(str(path)) as container:
                if not container.streams.video:
                    raise RowError("unreadable video", f"{path} has no video stream")
                stream = container.streams.video[0]
                count = self._frame_count(stream)
                wanted = set(self.sample(count, training)) if count else None
                for i, frame in enumerate(container.decode(stream)):
                    late = self.max_seconds is not None and (frame.time or 0) >= self.max_seconds
                    if late or (count and i >= count):
                        break
                    if wanted is None or i in wanted:
                        kept.append(np.asarray(self.images.fit_image(frame.to_image(), path)))
        except (av.error.FFmpegError, OSError) as err:
            raise RowError("unreadable video", f"{path}: {err}") from None
        if not kept:
            raise RowError("no video frames", f"{path}: no frame could be decoded")
        if wanted is None:
            kept = [kept[i] for i in self.sample(len(kept), training)]
        return torch.from_numpy(np.stack(kept)).permute(0, 3, 1, 2).contiguous()

    def _frame_count(self, stream: Any) -> int:
        """The frames the container says the stream holds (those within ``max_seconds``);
        0 when it does not say."""
        count = int(stream.frames or 0)
        if count and self.max_seconds is not None:
            if not stream.average_rate:
                return 0
            count = min(count, math.ceil(self.max_seconds * stream.average_rate))
        return count

    def collate(self, items: list[torch.Tensor | None]) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 frames zero-padded to the batch's longest video, and each row's frames."""
        return pad_batch(items, (3, self.size, self.size), torch.uint8)

    def model_input(self, values: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """Frames normalised as images are (mean and std 0.5); zeros where absent."""
        return self.images.model_input(values, present)

    def encoder_args(self) -> dict[str, Any]:
        return {"in_channels": 3, "frames": self.frames, "size": self.size}

    def state(self) -> dict[str, Any]:
        return {"frames": self.frames, "size": self.size, "max_seconds": self.max_seconds}

    @classmethod
    def from_state(cls, column: str, state: dict[str, Any]) -> VideoPreprocessor:
        return cls(column, **state)
