"""A transformer decoder over an encoder's tokens: causal self-attention over the tokens so
far, cross-attention over the memory, tied input/output embeddings; one step at a time with a
key/value cache, or over whole sequences (teacher forcing)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from polymodal.errors import ConfigError


class Attention(nn.Module):
    """Multi-head attention whose keys and values can be computed apart (and cached)."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.query = nn.Linear(dim, dim)
        self.key_value = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, heads, T, D / heads)."""
        return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)

    def keys_values(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        keys, values = self.key_value(x).chunk(2, dim=-1)
        return self._split(keys), self._split(values)

    def forward(
        self,
        x: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        mask: torch.Tensor | None = None,
        causal: bool = False,
    ) -> torch.Tensor:
        """(B, T, D) queries attending to (B, heads, S, D / heads) keys and values; ``mask``
        (B, S) is True where a key may be attended to."""
        attn_mask = None if mask is None else mask[:, None, None, :]
        out = F.scaled_dot_product_attention(
            self._split(self.query(x)),
            keys,
            values,
            attn_mask=attn_mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=causal,
        )
        return self.out(out.transpose(1, 2).flatten(2))


@dataclass
class Memory:
    """One layer's cross-attention keys and values (M, heads, S, D / heads) and mask (M, S)
    (None: every position valid); each ``group`` consecutive query rows share a memory row."""

    keys: torch.Tensor
    values: torch.Tensor
    mask: torch.Tensor | None
    group: int = 1


@dataclass
class DecoderState:
    """What decoding token by token keeps: per row, each layer's keys and values of the tokens
    so far and the memory row it attends to (``memory_rows``); per memory row, each layer's
    memory keys and values, computed once. The beams of an image share its memory row."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    memory_keys: list[torch.Tensor]
    memory_values: list[torch.Tensor]
    memory_mask: torch.Tensor | None
    memory_rows: torch.Tensor

    @property
    def steps(self) -> int:
        return self.keys[0].shape[2]

    def memory(self, layer: int) -> Memory:
        """Layer ``layer``'s memory for the rows: shared by groups of consecutive rows when
        they are so arranged (the beams of each image), else one copy per row."""
        keys, values, mask = self.memory_keys[layer], self.memory_values[layer], self.memory_mask
        rows = self.memory_rows
        group = len(rows) // len(keys)
        expected = torch.arange(len(keys), device=rows.device).repeat_interleave(group)
        if len(rows) == group * len(keys) and torch.equal(rows, expected):
            return Memory(keys, values, mask, group)
        return Memory(keys[rows], values[rows], None if mask is None else mask[rows])

    def select(self, index: torch.Tensor) -> None:
        """Keep rows ``index`` (beams reordered, finished rows dropped); memory rows no row
        attends to any more are dropped."""
        self.keys[:] = [k.index_select(0, index) for k in self.keys]
        self.values[:] = [v.index_select(0, index) for v in self.values]
        used, self.memory_rows = torch.unique(self.memory_rows[index], return_inverse=True)
        if len(used) < len(self.memory_keys[0]):
            self.memory_keys[:] = [k.index_select(0, used) for k in self.memory_keys]
            self.memory_values[:] = [v.index_select(0, used) for v in self.memory_values]
            if self.memory_mask is not None:
                self.memory_mask = self.memory_mask.index_select(0, used)


class DecoderLayer(nn.Module):
    """Pre-norm causal self-attention, cross-attention over the memory, feed-forward."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.self_norm, self.cross_norm, self.ff_norm = (nn.LayerNorm(dim) for _ in range(3))
        self.self_attention = Attention(dim, heads, dropout)
        self.cross_attention = Attention(dim, heads, dropout)
        self.feed_forward = nn.Sequential(
            nn.Linear(dim, 4 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(4 * dim, dim)
        )
        self.drop = nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        memory: Memory,
        causal: bool,
    ) -> torch.Tensor:
        """``keys`` and ``values`` are those of the tokens before and including ``x``'s."""
        x = x + self.drop(self.self_attention(self.self_norm(x), keys, values, causal=causal))
        queries = self.cross_norm(x)  # a group's rows attend to one memory row as one sequence
        queries = queries.reshape(len(memory.keys), -1, queries.shape[-1])
        cross = self.cross_attention(queries, memory.keys, memory.values, memory.mask)
        x = x + self.drop(cross.reshape(x.shape))
        return x + self.drop(self.feed_forward(self.ff_norm(x)))


def sinusoids(steps: int, dim: int, device: torch.device) -> torch.Tensor:
    """(steps, dim) sine/cosine position codes (as in "Attention is all you need")."""
    position = torch.arange(steps, device=device, dtype=torch.float32)[:, None]
    rates = torch.exp(torch.arange(0, dim, 2, device=device) * (-math.log(10000.0) / dim))
    codes = torch.zeros(steps, dim, device=device)
    codes[:, 0::2] = torch.sin(position * rates)
    codes[:, 1::2] = torch.cos(position * rates[: dim // 2])
    return codes


class CaptionDecoder(nn.Module):
    """Generates token ids conditioned on memory tokens (an image encoder's).

    The memory is projected to ``dim`` and normalised, with sine position codes added (a CNN's
    cells carry no position of their own). Token embeddings are scaled by sqrt(dim) and shared
    with the output layer; ``positions`` is the longest token sequence (start token included).
    """

    def __init__(
        self,
        vocab_size: int,
        memory_dim: int,
        dim: int = 256,
        layers: int = 3,
        heads: int = 4,
        dropout: float = 0.1,
        positions: int = 65,
    ) -> None:
        super().__init__()
        if dim % heads:
            raise ConfigError(f"a caption decoder's dim ({dim}) must be a multiple of its heads")
        self.dim, self.positions = dim, positions
        self.embed = nn.Embedding(vocab_size, dim)
        nn.init.normal_(self.embed.weight, std=dim**-0.5)
        self.position = nn.Parameter(torch.randn(positions, dim) * 0.02)
        self.memory_proj = nn.Linear(memory_dim, dim)
        self.memory_norm = nn.LayerNorm(dim)
        self.layers = nn.ModuleList(DecoderLayer(dim, heads, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.bias = nn.Parameter(torch.zeros(vocab_size))
        self.drop = nn.Dropout(dropout)

    def memory(self, tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder ``tokens`` (B, S, E) where ``mask`` (B, S) is True as the decoder's memory
        (B, S, dim) and its mask. A row without any valid token (its input absent) attends to
        zeros instead, so nothing it decodes depends on the absent input's values."""
        empty = ~mask.any(1)
        tokens = tokens * mask[..., None].to(tokens.dtype)
        memory = self.memory_norm(self.memory_proj(tokens))
        memory = memory + sinusoids(tokens.shape[1], self.dim, tokens.device)
        return memory, mask | empty[:, None]

    def _embed(self, tokens: torch.Tensor, start: int) -> torch.Tensor:
        end = start + tokens.shape[1]
        if end > self.positions:
            raise ConfigError(
                f"the caption decoder reads at most {self.positions} tokens, got {end}"
            )
        return self.drop(self.embed(tokens) * math.sqrt(self.dim) + self.position[start:end])

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.norm(x), self.embed.weight, self.bias)

    def forward(
        self, tokens: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor
    ) -> torch.Tensor:
        """(B, T, V) next-token logits at each position of ``tokens`` (B, T) (teacher forcing:
        each position sees the tokens up to itself)."""
        mask = None if memory_mask.all() else memory_mask
        x = self._embed(tokens, 0)
        for layer in self.layers:
            keys, values = layer.self_attention.keys_values(layer.self_norm(x))
            memory_kv = layer.cross_attention.keys_values(memory)
            x = layer(x, keys, values, Memory(*memory_kv, mask), causal=True)
        return self._logits(x)

    def start(self, memory: torch.Tensor, memory_mask: torch.Tensor) -> DecoderState:
        """The state before the first token: the memory's keys and values, computed once."""
        memory_kv = [layer.cross_attention.keys_values(memory) for layer in self.layers]
        empty = memory.new_zeros(len(memory), 0, self.dim)
        self_kv = [layer.self_attention.keys_values(empty) for layer in self.layers]
        return DecoderState(
            [k for k, _ in self_kv],
            [v for _, v in self_kv],
            [k for k, _ in memory_kv],
            [v for _, v in memory_kv],
            None if memory_mask.all() else memory_mask,
            torch.arange(len(memory), device=memory.device),
        )

    def step(self, tokens: torch.Tensor, state: DecoderState) -> torch.Tensor:
        """(N, V) logits after one more token per row (``tokens`` (N,)); the tokens' keys and
        values join ``state``."""
        if state.steps + 1 > self.positions:
            raise ConfigError(
                f"the caption decoder reads at most {self.positions} tokens, got {state.steps + 1}"
            )
        past = list(zip(state.keys, state.values, strict=True))
        memory = [state.memory(i) for i in range(len(self.layers))]
        position = torch.tensor([state.steps], device=tokens.device)
        logits, grown = self.cached_step(tokens, position, past, memory)
        state.keys[:] = [keys for keys, _ in grown]
        state.values[:] = [values for _, values in grown]
        return logits

    def cached_step(
        self,
        tokens: torch.Tensor,
        position: torch.Tensor,
        past: list[tuple[torch.Tensor, torch.Tensor]],
        memory: list[Memory],
    ) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        """``step`` on explicit tensors (what an ONNX export of a step runs): ``tokens`` (N,)
        at ``position`` (1,), each layer's ``past`` keys and values and its ``memory``; the
        (N, V) logits and each layer's keys and values grown by the step."""
        x = self.drop(self.embed(tokens[:, None]) * math.sqrt(self.dim) + self.position[position])
        grown = []
        for layer, (past_keys, past_values), layer_memory in zip(
            self.layers, past, memory, strict=True
        ):
            keys, values = layer.self_attention.keys_values(layer.self_norm(x))
            keys, values = torch.cat([past_keys, keys], 2), torch.cat([past_values, values], 2)
            grown.append((keys, values))
            x = layer(x, keys, values, layer_memory, causal=False)
        return self._logits(x[:, 0]), grown


class DecoderScorer:
    """A ``polymodal.models.decoding.Scorer`` over a decoder and its memory: one token per step
    with a key/value cache (``cache``), or the whole prefix rerun at every step."""

    def __init__(
        self,
        decoder: CaptionDecoder,
        memory: torch.Tensor,
        memory_mask: torch.Tensor,
        cache: bool = True,
    ) -> None:
        self.decoder = decoder
        self.state = decoder.start(memory, memory_mask) if cache else None
        self.memory = None if cache else (memory, memory_mask)

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.state is not None:
            if tokens.shape[1] != self.state.steps + 1:
                raise ValueError("a cached scorer takes the prefix grown by one token per call")
            logits = self.decoder.step(tokens[:, -1], self.state)
        else:
            assert self.memory is not None
            logits = self.decoder(tokens, *self.memory)[:, -1]
        return logits.float().log_softmax(-1)

    def select(self, index: torch.Tensor) -> None:
        if self.state is not None:
            self.state.select(index)
        else:
            assert self.memory is not None
            self.memory = (self.memory[0][index], self.memory[1][index])
