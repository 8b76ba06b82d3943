from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from polymodal.data.modalities.audio import (
    AudioPreprocessor,
    hz_to_mel,
    log_mel,
    mel_filterbank,
    mel_to_hz,
)
from polymodal.errors import RowError


def sine(hz: float, seconds: float, rate: int, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def peak_hz(wave: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    return float(np.fft.rfftfreq(len(wave), 1 / rate)[spectrum.argmax()])


def test_log_mel_and_waveform_shapes(tmp_path: Path):
    sf.write(tmp_path / "a.wav", sine(440, 1.0, 16000), 16000)
    mel = AudioPreprocessor("a", n_mels=40).read("a.wav", tmp_path)
    assert mel.shape == (100, 40) and mel.dtype == torch.float32  # 16000 // 160 frames
    wave = AudioPreprocessor("a", features="waveform").read("a.wav", tmp_path)
    assert wave.shape == (16000,) and wave.dtype == torch.float32
    assert np.allclose(wave.numpy(), sine(440, 1.0, 16000), atol=1e-4)  # 16-bit PCM


def test_log_mel_is_whisper_s():
    """faster-whisper's numpy port of Whisper's log_mel_spectrogram (padding 0: the clip)."""
    extractor = pytest.importorskip("faster_whisper.feature_extractor").FeatureExtractor(80)
    rng = np.random.default_rng(0)
    wave = sine(440, 2.0, 16000, 0.3) + rng.normal(0, 0.01, 32000).astype(np.float32)
    expected = extractor(wave, padding=0).T
    filters = torch.from_numpy(mel_filterbank(16000, 400, 80))
    ours = log_mel(torch.from_numpy(wave), filters, 400, 160).numpy()
    assert ours.shape == expected.shape == (200, 80)
    assert np.abs(ours - expected).max() < 1e-4
    assert np.array_equal(extractor.mel_filters, filters.numpy())


@pytest.mark.parametrize(("rate", "n_fft", "n_mels"), [(16000, 400, 80), (22050, 1024, 64)])
def test_filterbank_is_librosa_s(rate, n_fft, n_mels):
    librosa = pytest.importorskip("librosa")
    expected = librosa.filters.mel(sr=rate, n_fft=n_fft, n_mels=n_mels)
    assert np.allclose(mel_filterbank(rate, n_fft, n_mels), expected, atol=1e-7)


def reference_filterbank(rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """Slaney's filters one value at a time, from the definitions in the Auditory Toolbox."""

    def to_mel(hz: float) -> float:
        return hz * 3 / 200 if hz < 1000 else 15 + 27 * math.log(hz / 1000) / math.log(6.4)

    def to_hz(mel: float) -> float:
        return mel * 200 / 3 if mel < 15 else 1000 * 6.4 ** ((mel - 15) / 27)

    top = to_mel(rate / 2)
    edges = [to_hz(top * i / (n_mels + 1)) for i in range(n_mels + 2)]
    out = np.zeros((n_mels, n_fft // 2 + 1))
    for m in range(n_mels):
        low, centre, high = edges[m : m + 3]
        for b in range(n_fft // 2 + 1):
            hz = b * rate / n_fft
            if low < hz <= centre:
                out[m, b] = (hz - low) / (centre - low)
            elif centre < hz < high:
                out[m, b] = (high - hz) / (high - centre)
        out[m] *= 2 / (high - low)  # norm="slaney": equal area per band
    return out


@pytest.mark.parametrize(("rate", "n_fft", "n_mels"), [(16000, 400, 80), (8000, 256, 40)])
def test_filterbank_matches_an_independent_reference(rate, n_fft, n_mels):
    assert np.allclose(
        mel_filterbank(rate, n_fft, n_mels), reference_filterbank(rate, n_fft, n_mels), atol=1e-7
    )
    assert hz_to_mel(np.array([0.0, 1000.0, 6400.0])).tolist() == pytest.approx([0, 15, 42])
    hz = np.array([50.0, 999.0, 1000.0, 3000.0, 7999.0])
    assert np.allclose(mel_to_hz(hz_to_mel(hz)), hz)


def test_another_rate_is_resampled_keeping_length_and_pitch(tmp_path: Path):
    for rate in (8000, 44100):
        sf.write(tmp_path / f"{rate}.wav", sine(440, 1.0, rate), rate)
        wave = AudioPreprocessor("a", features="waveform").read(f"{rate}.wav", tmp_path).numpy()
        assert abs(len(wave) - 16000) <= 1
        assert peak_hz(wave, 16000) == pytest.approx(440, abs=2)


def test_stereo_is_mixed_down(tmp_path: Path):
    left = sine(300, 0.5, 16000)
    sf.write(tmp_path / "s.wav", np.stack([left, np.zeros_like(left)], axis=1), 16000, "FLOAT")
    wave = AudioPreprocessor("a", features="waveform").read("s.wav", tmp_path)
    assert wave.shape == (8000,) and np.allclose(wave.numpy(), left / 2)


def test_long_clips_are_cropped_at_random_in_training_and_centred_in_evaluation(tmp_path: Path):
    ramp = np.arange(3000, dtype=np.float32) / 3000  # 3 s at 1 kHz: a sample says where it was
    sf.write(tmp_path / "r.wav", ramp, 1000, "FLOAT")
    pre = AudioPreprocessor("a", sample_rate=1000, max_seconds=1.0, features="waveform")
    centre = pre.read("r.wav", tmp_path).numpy()
    assert np.array_equal(centre, ramp[1000:2000])
    assert np.array_equal(pre.read("r.wav", tmp_path, training=False).numpy(), centre)

    def training_starts() -> list[int]:
        starts = []
        for _ in range(8):
            crop = pre.read("r.wav", tmp_path, training=True).numpy()
            start = round(float(crop[0]) * 3000)
            assert len(crop) == 1000 and np.array_equal(crop, ramp[start : start + 1000])
            starts.append(start)
        return starts

    torch.manual_seed(0)
    first = training_starts()
    torch.manual_seed(0)
    assert training_starts() == first and len(set(first)) > 4  # torch's RNG draws them


def test_short_clips_are_kept_whole_and_padded_by_collate(tmp_path: Path):
    sf.write(tmp_path / "half.wav", sine(200, 0.5, 16000), 16000)
    sf.write(tmp_path / "one.wav", sine(200, 1.0, 16000), 16000)
    pre = AudioPreprocessor("a", n_mels=32, max_seconds=2.0)
    half, one = pre.read("half.wav", tmp_path), pre.read("one.wav", tmp_path)
    values, lengths = pre.collate([half, None, one])
    assert values.shape == (3, 100, 32) and lengths.tolist() == [50, 0, 100]
    assert torch.equal(values[0, :50], half) and not values[0, 50:].any()
    assert not values[1].any() and torch.equal(values[2], one)
    waves, lengths = AudioPreprocessor("a", features="waveform").collate(
        [torch.ones(3), torch.ones(5)]
    )
    assert waves.shape == (2, 5) and lengths.tolist() == [3, 5] and waves.sum() == 8


def test_bad_files_are_row_errors_with_their_reason(tmp_path: Path):
    sf.write(tmp_path / "ok.flac", sine(440, 1.0, 16000), 16000)
    data = (tmp_path / "ok.flac").read_bytes()
    (tmp_path / "cut.flac").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.wav").write_bytes(b"not audio at all" * 20)
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
    nan = sine(440, 0.1, 16000)
    nan[10] = np.nan
    sf.write(tmp_path / "nan.wav", nan, 16000, "FLOAT")
    pre = AudioPreprocessor("a")
    expected = {
        "gone.wav": "missing audio file",
        "cut.flac": "unreadable audio",
        "junk.wav": "unreadable audio",
        "empty.wav": "empty audio",
        "nan.wav": "audio holds NaN",
    }
    for name, reason in expected.items():
        with pytest.raises(RowError) as bad:
            pre.read(name, tmp_path)
        assert bad.value.reason == reason and name in bad.value.detail
    with pytest.raises(RowError, match="Format not recognised"):  # soundfile's own words
        pre.read("junk.wav", tmp_path)


def test_encoder_args_and_state_round_trip():
    pre = AudioPreprocessor("a", 16000, 4.0, 80, 400, 160)
    assert pre.encoder_args() == {"n_mels": 80, "max_frames": 400}
    wave = AudioPreprocessor("a", 8000, 2.5, features="waveform")
    assert wave.encoder_args() == {"sample_rate": 8000, "max_samples": 20000}
    for original in (pre, wave):
        again = AudioPreprocessor.from_state("a", original.state())
        assert again.state() == original.state()
        assert torch.equal(again.filters, original.filters)


def test_audio_given_in_memory_reads_as_its_file(tmp_path: Path):
    """A file's bytes, and its samples as an array at the model's rate, read as the file."""
    ramp = np.arange(3000, dtype=np.float32) / 3000
    stereo = np.stack([ramp, ramp / 2], axis=1)
    sf.write(tmp_path / "r.wav", stereo, 1000, "FLOAT")
    pre = AudioPreprocessor("a", sample_rate=1000, max_seconds=1.0, features="waveform")
    expected = pre.read("r.wav", tmp_path).numpy()
    given = pre.read((tmp_path / "r.wav").read_bytes(), tmp_path).numpy()
    assert np.array_equal(given, expected)
    assert np.array_equal(pre.read(stereo, tmp_path).numpy(), expected)  # centred window
    assert np.allclose(pre.read(ramp.astype(np.float64), tmp_path).numpy(), ramp[1000:2000])
    torch.manual_seed(1)
    crop = pre.read(ramp, tmp_path, training=True).numpy()
    start = round(float(crop[0]) * 3000)
    assert np.array_equal(crop, ramp[start : start + 1000])


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"RIFF not really", "unreadable audio"),
        (np.zeros((2, 2, 2), np.float32), "bad audio array"),
        (np.array(["a", "b"]), "bad audio array"),
        (np.array([0.0, np.nan], np.float32), "audio holds NaN"),
        (np.zeros(0, np.float32), "empty audio"),
    ],
)
def test_bad_audio_given_in_memory_is_a_row_error(tmp_path: Path, value, reason):
    with pytest.raises(RowError) as caught:
        AudioPreprocessor("a").read(value, tmp_path)
    assert caught.value.reason == reason
