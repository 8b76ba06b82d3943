"""The caption decoder: cached decoding equals decoding without the cache, tied embeddings,
and rows whose memory is absent."""

from __future__ import annotations

import pytest
import torch

from polymodal.models.decoder import CaptionDecoder, DecoderScorer
from polymodal.models.decoding import SearchOptions, Vocab, search

VOCAB_SIZE, MEMORY_DIM = 14, 10
VOCAB = Vocab(bos=2, eos=3, pad=0, banned=(0, 1, 2))


@pytest.fixture
def decoder() -> CaptionDecoder:
    torch.manual_seed(0)
    return CaptionDecoder(VOCAB_SIZE, MEMORY_DIM, dim=16, layers=2, heads=4, positions=12).eval()


def memory(decoder: CaptionDecoder, rows: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    mask = torch.ones(rows, 6, dtype=torch.bool)
    mask[-1, 4:] = False  # a row with fewer tokens
    return decoder.memory(torch.randn(rows, 6, MEMORY_DIM), mask)


def test_one_token_at_a_time_with_the_cache_equals_the_whole_sequence(
    decoder: CaptionDecoder,
) -> None:
    mem, mask = memory(decoder)
    tokens = torch.randint(4, VOCAB_SIZE, (4, 9))
    whole = decoder(tokens, mem, mask)
    state = decoder.start(mem, mask)
    stepped = torch.stack([decoder.step(tokens[:, i], state) for i in range(9)], 1)
    assert torch.allclose(whole, stepped, atol=1e-5)


@pytest.mark.parametrize("beam_size", [1, 3])
def test_cached_search_equals_search_without_the_cache(
    decoder: CaptionDecoder, beam_size: int
) -> None:
    mem, mask = memory(decoder)
    options = SearchOptions(beam_size, 8, 1.0, 2)
    cached = search(DecoderScorer(decoder, mem, mask, cache=True), 4, VOCAB, options, mem.device)
    rerun = search(DecoderScorer(decoder, mem, mask, cache=False), 4, VOCAB, options, mem.device)
    assert torch.equal(cached.tokens, rerun.tokens)
    assert torch.equal(cached.lengths, rerun.lengths)
    assert torch.allclose(cached.scores, rerun.scores, atol=1e-5)


def test_input_and_output_embeddings_are_one_matrix(decoder: CaptionDecoder) -> None:
    shaped = [n for n, p in decoder.named_parameters() if p.shape == (VOCAB_SIZE, 16)]
    assert shaped == ["embed.weight"]
    mem, mask = memory(decoder, 1)
    tokens = torch.tensor([[2, 5]])
    before = decoder(tokens, mem, mask)[0, -1, 7]
    with torch.no_grad():
        decoder.embed.weight[7] += 1.0  # word 7 is not in the input: only its output changes
    assert decoder(tokens, mem, mask)[0, -1, 7] != before


def test_padding_after_a_sequence_changes_none_of_its_logits(decoder: CaptionDecoder) -> None:
    mem, mask = memory(decoder, 1)
    tokens = torch.tensor([[2, 5, 6, 7]])
    padded = torch.tensor([[2, 5, 6, 7, 0, 0]])
    assert torch.allclose(decoder(tokens, mem, mask), decoder(padded, mem, mask)[:, :4], atol=1e-6)


def test_a_row_without_memory_decodes_regardless_of_the_absent_values(
    decoder: CaptionDecoder,
) -> None:
    absent = torch.zeros(2, 6, dtype=torch.bool)
    a_mem, a_mask = decoder.memory(torch.randn(2, 6, MEMORY_DIM), absent)
    b_mem, b_mask = decoder.memory(torch.randn(2, 6, MEMORY_DIM) * 100, absent)
    tokens = torch.tensor([[2, 5, 6], [2, 8, 9]])
    a, b = decoder(tokens, a_mem, a_mask), decoder(tokens, b_mem, b_mask)
    assert torch.isfinite(a).all()
    assert torch.allclose(a, b)


def test_sequences_longer_than_the_positions_are_refused(decoder: CaptionDecoder) -> None:
    mem, mask = memory(decoder, 1)
    with pytest.raises(Exception, match="at most 12 tokens"):
        decoder(torch.full((1, 13), 5), mem, mask)
