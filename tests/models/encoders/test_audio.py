from __future__ import annotations

import torch

from polymodal.models.encoders import AudioCNN, AudioTransformer


def test_audio_cnn_tokens_follow_time_and_the_strided_lengths():
    enc = AudioCNN(n_mels=10, dim=8, channels=[4, 4]).eval()
    out = enc(torch.randn(3, 13, 10), torch.tensor([13, 5, 0]))
    assert out.tokens.shape == (3, 4, 8)  # 13 frames -> 7 -> 4 steps
    assert out.token_mask.sum(1).tolist() == [4, 2, 1]  # 5 frames -> 3 -> 2; absent keeps one


def test_audio_cnn_keeps_which_bands_are_loud():
    enc = AudioCNN(n_mels=8, dim=8, channels=[4]).eval()
    low, high = torch.zeros(1, 6, 8), torch.zeros(1, 6, 8)
    low[..., :2], high[..., 6:] = 1.0, 1.0  # same energy, other mel bands
    with torch.no_grad():
        assert not torch.allclose(enc(low).pooled, enc(high).pooled)


def test_audio_transformer_groups_frames_into_patches():
    enc = AudioTransformer(n_mels=6, max_frames=13, dim=8, layers=1, heads=2, patch=4).eval()
    assert enc.position.shape == (4, 8)
    out = enc(torch.randn(3, 13, 6), torch.tensor([13, 5, 0]))
    assert out.tokens.shape == (3, 4, 8)
    assert out.token_mask.sum(1).tolist() == [4, 2, 1]
