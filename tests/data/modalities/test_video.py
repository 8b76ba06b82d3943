from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from polymodal.data.modalities.video import VideoPreprocessor
from polymodal.errors import DataError, RowError

LEVELS = [20 * i for i in range(12)]  # frame i is a flat grey of level 20 * i


def write_video(path: Path, levels: list[int], fps: int = 10, side: int = 32) -> Path:
    av = pytest.importorskip("av")
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = side, side, "yuv420p"
        stream.options = {"qscale": "1"}
        for level in levels:
            pixels = np.full((side, side, 3), level, dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(stream.encode())
    return path


def write_frames(folder: Path, levels: list[int]) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i, level in enumerate(levels):
        Image.new("RGB", (40, 30), (level, level, level)).save(folder / f"{i:03d}.png")
        names.append(f"{folder.name}/{i:03d}.png")
    return names


def levels_of(frames: torch.Tensor) -> list[int]:
    """Which of LEVELS each frame shows (the nearest; video coding moves pixels a little)."""
    means = frames.float().mean(dim=(1, 2, 3)).tolist()
    return [min(range(len(LEVELS)), key=lambda i: abs(LEVELS[i] - m)) for m in means]


def test_a_frame_folder_and_a_frame_list_sample_segment_centres(tmp_path: Path):
    names = write_frames(tmp_path / "clip", LEVELS)
    pre = VideoPreprocessor("v", frames=4, size=16)
    frames = pre.read("clip", tmp_path)
    assert frames.shape == (4, 3, 16, 16) and frames.dtype == torch.uint8
    assert levels_of(frames) == [1, 4, 7, 10]  # the centre of each of 4 segments of 3
    assert torch.equal(pre.read(names, tmp_path), frames)
    assert torch.equal(pre.read(json.dumps(names), tmp_path), frames)  # a CSV cell


def test_training_reads_sample_at_random_inside_each_segment(tmp_path: Path):
    write_frames(tmp_path / "clip", LEVELS)
    pre = VideoPreprocessor("v", frames=4, size=8)
    torch.manual_seed(0)
    seen = [levels_of(pre.read("clip", tmp_path, training=True)) for _ in range(10)]
    for picked in seen:
        assert [i // 3 for i in picked] == [0, 1, 2, 3]  # one frame from each segment
    assert len({tuple(p) for p in seen}) > 3


@pytest.mark.parametrize("name", ["clip.mp4", "clip.mkv"])  # frame count in the header or not
def test_a_video_file_is_decoded_and_sampled(tmp_path: Path, name: str):
    write_video(tmp_path / name, LEVELS)
    frames = VideoPreprocessor("v", frames=4, size=16).read(name, tmp_path)
    assert frames.shape == (4, 3, 16, 16) and levels_of(frames) == [1, 4, 7, 10]
    first = VideoPreprocessor("v", frames=8, size=16, max_seconds=0.5).read(name, tmp_path)
    assert levels_of(first) == [0, 1, 2, 3, 4]  # 10 fps: the first half second, all kept
    halves = VideoPreprocessor("v", frames=2, size=16, max_seconds=0.6).read(name, tmp_path)
    assert levels_of(halves) == [1, 4]  # the centres of 2 segments of the first 6 frames
    torch.manual_seed(0)
    pre = VideoPreprocessor("v", frames=4, size=16)
    seen = [levels_of(pre.read(name, tmp_path, training=True)) for _ in range(6)]
    assert all([i // 3 for i in picked] == [0, 1, 2, 3] for picked in seen)
    assert len({tuple(picked) for picked in seen}) > 2


def test_fewer_frames_are_kept_and_collate_pads_with_lengths(tmp_path: Path):
    write_frames(tmp_path / "short", LEVELS[:3])
    write_frames(tmp_path / "long", LEVELS)
    pre = VideoPreprocessor("v", frames=5, size=8)
    short, long = pre.read("short", tmp_path), pre.read("long", tmp_path)
    assert short.shape == (3, 3, 8, 8) and long.shape == (5, 3, 8, 8)
    values, lengths = pre.collate([short, None, long])
    assert values.shape == (3, 5, 3, 8, 8) and values.dtype == torch.uint8
    assert lengths.tolist() == [3, 0, 5] and not values[0, 3:].any()
    present = torch.tensor([True, False, True])
    model_input = pre.model_input(values, present)
    assert torch.allclose(model_input[2], long.float() / 255 * 2 - 1)
    assert not model_input[1].any()
    assert pre.encoder_args() == {"in_channels": 3, "frames": 5, "size": 8}


def test_bad_videos_are_row_errors(tmp_path: Path):
    data = write_video(tmp_path / "ok.mp4", LEVELS).read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.mp4").write_bytes(b"not a video" * 50)
    (tmp_path / "empty").mkdir()
    write_frames(tmp_path / "broken", LEVELS[:2])
    (tmp_path / "broken" / "001.png").write_bytes(b"not a png")
    pre = VideoPreprocessor("v", frames=4, size=8)
    expected = {
        "gone.mp4": "missing video file",
        "cut.mp4": "unreadable video",
        "junk.mp4": "unreadable video",
        "empty": "empty video",
        "broken": "unreadable video frame",
        '["empty/0.png"]': "missing video frame file",
        "[]": "empty video",
    }
    for cell, reason in expected.items():
        with pytest.raises(RowError) as bad:
            pre.read(cell, tmp_path)
        assert bad.value.reason == reason, cell


def test_a_video_file_without_pyav_names_the_extra(tmp_path: Path, monkeypatch):
    write_frames(tmp_path / "clip", LEVELS[:2])
    (tmp_path / "clip.mp4").write_bytes(b"\x00" * 100)
    monkeypatch.setitem(sys.modules, "av", None)  # import av fails
    pre = VideoPreprocessor("v", frames=2, size=8)
    assert pre.read("clip", tmp_path).shape == (2, 3, 8, 8)  # frames need no PyAV
    with pytest.raises(DataError, match=r'pip install "polymodal\[video\]"'):
        pre.read("clip.mp4", tmp_path)


def test_state_round_trip():
    pre = VideoPreprocessor("v", frames=6, size=24, max_seconds=3.0)
    again = VideoPreprocessor.from_state("v", json.loads(json.dumps(pre.state())))
    assert again.state() == pre.state() == {"frames": 6, "size": 24, "max_seconds": 3.0}
