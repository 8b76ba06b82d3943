from __future__ import annotations

import torch
from torch import nn

from polymodal.models.encoders import SequenceRNN, SequenceTransformer


def test_sequence_rnn_reads_the_channels_of_each_step():
    enc = SequenceRNN(channels=3, dim=8, hidden=6, layers=2, cell="lstm").eval()
    assert isinstance(enc.rnn, nn.LSTM) and enc.rnn.input_size == 3 and enc.rnn.num_layers == 2
    out = enc(torch.randn(2, 5, 3), torch.tensor([5, 2]))
    assert out.tokens.shape == (2, 5, 8) and out.token_mask.sum(1).tolist() == [5, 2]


def test_sequence_transformer_depends_on_step_order():
    enc = SequenceTransformer(channels=2, max_length=6, dim=8, layers=1, heads=2).eval()
    x = torch.randn(1, 4, 2)
    with torch.no_grad():
        assert not torch.allclose(enc(x).pooled, enc(x.flip(1)).pooled)
