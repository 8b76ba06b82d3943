from __future__ import annotations

import pytest
import torch

from polymodal.errors import ConfigError
from polymodal.models.encoders import ImageCNN, ImageViT


def test_image_cnn_shapes():
    enc = ImageCNN(dim=16, channels=[8, 8]).eval()
    out = enc(torch.randn(2, 3, 32, 32))
    assert out.tokens.shape == (2, 64, 16) and out.pooled.shape == (2, 16)
    assert out.token_mask.all() and enc.output_dim == 16


def test_vit_tokens_are_patches_and_pooled_is_the_class_token():
    enc = ImageViT(size=32, dim=16, patch=8, layers=1, heads=2).eval()
    out = enc(torch.randn(2, 3, 32, 32))
    assert out.tokens.shape == (2, 16, 16) and out.pooled.shape == (2, 16)
    assert enc.position.shape == (17, 16)  # 4 x 4 patches + the class token
    assert not torch.allclose(out.pooled, out.tokens.mean(1))


def test_vit_sees_where_things_are():
    enc = ImageViT(size=16, dim=8, patch=8, layers=1, heads=2).eval()
    image = torch.zeros(1, 3, 16, 16)
    image[..., :8, :8] = 1.0
    moved = torch.zeros(1, 3, 16, 16)
    moved[..., 8:, 8:] = 1.0  # the same patch, elsewhere: only the positions tell them apart
    with torch.no_grad():
        assert not torch.allclose(enc(image).pooled, enc(moved).pooled)


def test_vit_patch_larger_than_the_image_is_a_config_error():
    with pytest.raises(ConfigError, match=r"patch \(32 px\) is larger than the 16 px images"):
        ImageViT(size=16, patch=32)
