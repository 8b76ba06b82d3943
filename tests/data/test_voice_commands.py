"""Voice commands: readable 16 kHz clips of the transcript, balanced commands, exact splits,
determinism, and a clear error when no synthesiser is installed."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile

import polymodal
from polymodal.config import load_config
from polymodal.data.voice_commands import COMMANDS, available_voices, generate
from polymodal.errors import DataError

needs_tts = pytest.mark.skipif(
    not (shutil.which("flite") or shutil.which("espeak-ng")),
    reason="no speech synthesiser on PATH (apt-get install flite espeak-ng)",
)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def spoken(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    manifest = generate(tmp_path_factory.mktemp("voice") / "data", n=30, seed=0, workers=2)
    return manifest, read_jsonl(manifest)


@needs_tts
def test_clips_say_their_transcript(spoken):
    manifest, rows = spoken
    assert [r["id"] for r in rows] == [f"{i:06d}" for i in range(30)]
    assert Counter(r["split"] for r in rows) == {"train": 21, "val": 3, "test": 6}
    commands = Counter(r["command"] for r in rows)
    assert set(commands) <= {c.replace(" ", "_") for c in COMMANDS}
    assert max(commands.values()) - min(commands.values()) <= 1 and len(commands) == 12
    for row in rows:
        assert row["command"].replace("_", " ") in row["transcript"]
        info = soundfile.info(manifest.parent / row["audio"])
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert 0.4 < info.duration < 5
        samples, _ = soundfile.read(manifest.parent / row["audio"])
        # speech lies above the noise: the loudest 50 ms is well over the quietest
        frames = np.sqrt(np.mean(samples[: len(samples) // 800 * 800].reshape(-1, 800) ** 2, 1))
        assert frames.max() > 2 * np.sort(frames)[len(frames) // 10], row
        assert 5 <= row["snr_db"] <= 30 and row["noise"] in ("white", "pink", "brown")


@needs_tts
def test_voices_of_every_synthesiser_on_path(spoken):
    _, rows = spoken
    engines = {v.engine for v in available_voices()}
    assert engines == {e for e in ("flite", "espeak-ng") if shutil.which(e)}
    assert {r["voice"].split(":")[0] for r in rows} == engines
    assert len({r["voice"] for r in rows}) >= 10


@needs_tts
def test_same_seed_same_bytes(tmp_path: Path):
    a = generate(tmp_path / "a", n=8, seed=3, workers=1).parent
    b = generate(tmp_path / "b", n=8, seed=3, workers=3, progress=True).parent
    c = generate(tmp_path / "c", n=8, seed=4).parent
    assert (a / "manifest.jsonl").read_bytes() == (b / "manifest.jsonl").read_bytes()
    assert (a / "manifest.jsonl").read_bytes() != (c / "manifest.jsonl").read_bytes()
    for i in range(8):
        name = f"audio/{i:06d}.wav"
        assert (a / name).read_bytes() == (b / name).read_bytes()
    assert generate(tmp_path / "none", n=0).read_text() == ""


def test_no_synthesiser_names_what_to_install(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DataError, match=r"neither flite nor espeak-ng.*apt-get install flite"):
        generate(tmp_path / "out", n=3)
    assert not (tmp_path / "out").exists()


@needs_tts
def test_the_packaged_config_reads_the_manifest_s_columns(spoken):
    manifest, rows = spoken
    path = Path(polymodal.__file__).parent / "configs" / "voice_commands.yaml"
    config = load_config(path, [f"data.manifest={manifest}"])
    assert config.data.fields is not None
    assert {k: v.kind for k, v in config.data.fields.items()} == {
        "audio": "audio",
        "command": "label",
    }
    assert set(config.data.fields) <= set(rows[0])
