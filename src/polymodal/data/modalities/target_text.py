"""Text a model generates (a caption): a text field of role target.

A cell holds one reference text or several (a JSON list of strings, or a CSV cell holding
one). They are kept as written, as UTF-8 bytes, so generated text is scored against the
references themselves (out-of-vocabulary words included), as the official caption metrics
do. A word vocabulary is fitted on the train split's references (the ``data.text`` options
``min_freq``, ``max_vocab`` and ``max_length`` apply; the tokenizer is always ``word``); the
task turns a reference into ids framed by the start and end tokens for teacher forcing.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from polymodal.data.modalities.base import FieldBase, Row, pad_batch
from polymodal.data.modalities.text import BOS, EOS, PAD, UNK, WordTokenizer
from polymodal.errors import ConfigError, RowError

_ATTACHED = re.compile(r" ([,.;:!?])")  # punctuation the word tokenizer split off
MAX_BYTES = 4096  # a row's references, UTF-8: evaluation keeps them in rows of this width


def reference_texts(value: Any) -> list[str]:
    """The reference texts of a cell: a string, a list of strings, or a JSON list's text.

    Newlines become spaces (as the COCO caption tokenizer does); blank texts are dropped.
    """
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value  # a text that starts with a bracket
        value = parsed
    texts = value if isinstance(value, list) else [value]
    if not all(isinstance(text, str) for text in texts):
        kinds = sorted({type(text).__name__ for text in texts})
        raise RowError("undecodable text", f"expected text or a list of texts, got {kinds}")
    texts = [" ".join(text.split()) for text in texts]
    texts = [text for text in texts if text]
    if not texts:
        raise RowError("undecodable text", "no reference text: the list is empty or blank")
    return texts


class TargetTextPreprocessor(FieldBase):
    """Reads references as bytes (texts joined by newlines); fits a word vocabulary."""

    kind = "text"

    def __init__(
        self, column: str, max_length: int = 64, min_freq: int = 1, max_vocab: int | None = None
    ) -> None:
        self.column = column
        self.max_length = max_length
        self.min_freq = min_freq
        self.max_vocab = max_vocab
        self.tokenizer: WordTokenizer | None = None
        self._counts: Counter[str] = Counter()

    def observe(self, row: Row) -> None:
        value = row.get(self.column)
        try:
            texts = reference_texts(value) if value is not None else []
        except RowError:  # quarantined when the row is read
            return
        for text in texts:
            self._counts.update(WordTokenizer.split(text))

    def finish(self) -> None:
        self.tokenizer = WordTokenizer.from_counts(self._counts, self.min_freq, self.max_vocab)

    def read(self, value: Any, base_dir: Path, training: bool = False) -> torch.Tensor:
        joined = "\n".join(reference_texts(value)).encode("utf-8")
        if len(joined) > MAX_BYTES:
            raise RowError(
                "text too long",
                f"{len(joined)} bytes of reference text; a row holds at most {MAX_BYTES}",
            )
        return torch.frombuffer(bytearray(joined), dtype=torch.uint8)

    def collate(self, items: list[torch.Tensor | None]) -> tuple[torch.Tensor, torch.Tensor]:
        return pad_batch(items, (), torch.uint8)

    @staticmethod
    def full_width(values: torch.Tensor) -> torch.Tensor:
        """Collated (N, L) bytes padded to (N, MAX_BYTES): the same width in every batch."""
        return F.pad(values, (0, MAX_BYTES - values.shape[1]))

    def encoder_args(self) -> dict[str, Any]:
        raise ConfigError(
            f"field '{self.column}' is a text target (generated); it cannot be a model input: "
            "make it role: input, or leave it out of model.inputs"
        )

    @property
    def vocab(self) -> WordTokenizer:
        assert self.tokenizer is not None, "fit() the preprocessor first"
        return self.tokenizer

    def special(self, token: str) -> int:
        """The id of a special token (PAD, UNK, BOS, EOS)."""
        assert token in (PAD, UNK, BOS, EOS)
        return self.vocab.ids[token]

    @staticmethod
    def references(values: torch.Tensor, lengths: torch.Tensor) -> list[list[str]]:
        """Each row's reference texts from collated (N, L) bytes and their (N,) lengths."""
        rows = values.cpu().numpy()
        return [
            bytes(row[:n]).decode("utf-8").split("\n")
            for row, n in zip(rows, lengths.tolist(), strict=True)
        ]

    def teacher_forcing(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets), each (N, T) ids padded with PAD: the start token and the text's
        first ``max_length`` words, and those words and the end token."""
        ids = [self.vocab.encode(text)[: self.max_length] for text in texts]
        steps = max(len(i) for i in ids) + 1
        inputs = torch.full((len(ids), steps), self.special(PAD), dtype=torch.long)
        targets = inputs.clone()
        for row, words in enumerate(ids):
            inputs[row, : len(words) + 1] = torch.tensor([self.special(BOS), *words])
            targets[row, : len(words) + 1] = torch.tensor([*words, self.special(EOS)])
        return inputs, targets

    def decode(self, ids: Sequence[int]) -> str:
        """Words of ``ids`` (special tokens left out), punctuation attached to the word before."""
        return _ATTACHED.sub(r"\1", self.vocab.decode(ids))

    def state(self) -> dict[str, Any]:
        return {
            "max_length": self.max_length,
            "min_freq": self.min_freq,
            "max_vocab": self.max_vocab,
            "tokenizer": self.vocab.state(),
        }

    @classmethod
    def from_state(cls, column: str, state: dict[str, Any]) -> TargetTextPreprocessor:
        pre = cls(column, state["max_length"], state["min_freq"], state["max_vocab"])
        pre.tokenizer = WordTokenizer(state["tokenizer"]["vocab"])
        return pre
