from __future__ import annotations

import torch

from polymodal.models.encoders import VideoCNN, VideoViT


def test_a_video_of_one_frame_pools_to_that_frame():
    enc = VideoCNN(frames=3, dim=8, channels=[4]).eval()
    out = enc(torch.randn(2, 3, 3, 16, 16), torch.tensor([1, 3]))
    assert out.tokens.shape == (2, 3, 8) and out.token_mask.sum(1).tolist() == [1, 3]
    assert torch.allclose(out.pooled[0], out.tokens[0, 0])


def test_pooled_is_a_convex_mix_of_the_valid_frames():
    enc = VideoViT(size=16, frames=4, dim=8, patch=8, layers=1, heads=2).eval()
    with torch.no_grad():
        out = enc(torch.randn(1, 4, 3, 16, 16), torch.tensor([2]))
    weights = torch.linalg.lstsq(out.tokens[0, :2].T, out.pooled[0:1].T).solution.flatten()
    assert torch.all(weights > 0) and torch.isclose(weights.sum(), torch.tensor(1.0), atol=1e-4)


def test_frame_order_matters():
    enc = VideoCNN(frames=2, dim=8, channels=[4]).eval()
    video = torch.randn(1, 2, 3, 16, 16)
    with torch.no_grad():
        assert not torch.allclose(enc(video).tokens, enc(video.flip(1)).tokens.flip(1))
