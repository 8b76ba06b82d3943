from __future__ import annotations

import torch
from torch import nn

from polymodal.models.encoders import TextBag, TextRNN, TextTransformer


def test_text_transformer_ignores_padding():
    enc = TextTransformer(vocab_size=20, dim=16, layers=1, heads=2, max_length=8).eval()
    ids = torch.tensor([[5, 6, 7, 0, 0], [5, 6, 7, 9, 9]])
    out = enc(ids, torch.tensor([3, 3]))  # row 2's trailing tokens are padding by length
    assert torch.allclose(out.pooled[0], out.pooled[1], atol=1e-5)
    assert out.token_mask.tolist()[0] == [True, True, True, False, False]
    empty = enc(torch.zeros(1, 4, dtype=torch.long), torch.tensor([0]))  # absent row: no NaN
    assert torch.isfinite(empty.pooled).all()


def test_text_rnn_cells_and_both_directions():
    assert isinstance(TextRNN(20, cell="lstm").rnn, nn.LSTM)
    enc = TextRNN(20, dim=8, hidden=6, cell="gru").eval()
    assert isinstance(enc.rnn, nn.GRU) and enc.rnn.bidirectional
    ids = torch.tensor([[5, 6, 7, 0], [5, 6, 8, 0]])
    with torch.no_grad():
        out = enc(ids, torch.tensor([3, 3]))
    # the backward direction carries the last token's change to the first token
    assert not torch.allclose(out.tokens[0, 0], out.tokens[1, 0])
    assert torch.allclose(out.pooled, out.tokens[:, :3].mean(1), atol=1e-6)


def test_text_rnn_one_direction_reads_left_to_right():
    enc = TextRNN(20, dim=8, hidden=6, bidirectional=False).eval()
    ids = torch.tensor([[5, 6, 7], [5, 6, 8]])
    with torch.no_grad():
        out = enc(ids)
    assert torch.allclose(out.tokens[0, :2], out.tokens[1, :2])
    assert not torch.allclose(out.tokens[0, 2], out.tokens[1, 2])


def test_bag_is_the_mean_of_the_valid_token_embeddings():
    enc = TextBag(vocab_size=20, dim=8).eval()
    ids = torch.tensor([[3, 4, 9, 9], [5, 0, 0, 0]])
    out = enc(ids, torch.tensor([2, 1]))
    assert torch.allclose(out.pooled[0], enc.embed.weight[[3, 4]].mean(0))
    assert torch.allclose(out.pooled[1], enc.embed.weight[5])
    assert out.tokens[0, 2:].abs().sum() == 0
