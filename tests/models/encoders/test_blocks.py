from __future__ import annotations

import pytest
import torch

from polymodal.errors import ConfigError
from polymodal.models.encoders.blocks import TokenTransformer, masked_mean, valid_mask


def test_valid_mask_keeps_one_position_of_an_absent_row():
    mask = valid_mask(torch.tensor([2, 0]), 2, 3, torch.device("cpu"))
    assert mask.tolist() == [[True, True, False], [True, False, False]]
    assert valid_mask(None, 1, 2, torch.device("cpu")).all()


def test_masked_mean_reads_valid_positions_only():
    values = torch.tensor([[[1.0], [3.0], [100.0]]])
    assert masked_mean(values, torch.tensor([[True, True, False]])).item() == 2.0


def test_dim_not_a_multiple_of_heads_is_a_config_error():
    with pytest.raises(ConfigError, match=r"dim \(10\) must be a multiple of its heads \(4\)"):
        TokenTransformer(dim=10, layers=1, heads=4, dropout=0.0, positions=4)
