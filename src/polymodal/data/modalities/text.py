"""Text: a word-level tokenizer fitted on the train split, or a Hugging Face tokenizer."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

import torch

from polymodal.data.modalities.base import FieldBase
from polymodal.errors import ConfigError, RowError

PAD, UNK, BOS, EOS = "[PAD]", "[UNK]", "[BOS]", "[EOS]"
SPECIALS = (PAD, UNK, BOS, EOS)
_WORD = re.compile(r"\w+|[^\w\s]")


class Tokenizer(Protocol):
    pad_id: int

    def encode(self, text: str) -> list[int]: ...

    def __len__(self) -> int: ...

    def state(self) -> dict[str, Any]: ...


class WordTokenizer:
    """Lower-cased words and punctuation marks; ids 0-3 are the special tokens.

    >>> tok = WordTokenizer.fit(["a red circle", "a blue square"])
    >>> tok.decode(tok.encode("a red square"))
    'a red square'
    """

    def __init__(self, vocab: list[str]) -> None:
        if tuple(vocab[: len(SPECIALS)]) != SPECIALS:
            raise ConfigError(f"a word vocabulary must start with {SPECIALS}")
        self.vocab = vocab
        self.ids = {word: i for i, word in enumerate(vocab)}
        self.pad_id = self.ids[PAD]
        self.unk_id = self.ids[UNK]

    @staticmethod
    def split(text: str) -> list[str]:
        return _WORD.findall(text.lower())

    @classmethod
    def fit(
        cls, texts: Iterable[str], min_freq: int = 1, max_size: int | None = None
    ) -> WordTokenizer:
        """Vocabulary by descending frequency (ties alphabetical), words seen >= min_freq."""
        counts = Counter(word for text in texts for word in cls.split(text))
        return cls.from_counts(counts, min_freq, max_size)

    @classmethod
    def from_counts(
        cls, counts: Counter[str], min_freq: int = 1, max_size: int | None = None
    ) -> WordTokenizer:
        """The vocabulary of ``fit`` from word counts gathered elsewhere."""
        words = sorted(
            (w for w, c in counts.items() if c >= min_freq), key=lambda w: (-counts[w], w)
        )
        return cls([*SPECIALS, *words[:max_size]])

    def encode(self, text: str) -> list[int]:
        return [self.ids.get(word, self.unk_id) for word in self.split(text)]

    def decode(self, ids: Iterable[int]) -> str:
        return " ".join(self.vocab[i] for i in ids if i >= len(SPECIALS))

    def __len__(self) -> int:
        return len(self.vocab)

    def state(self) -> dict[str, Any]:
        return {"type": "word", "vocab": self.vocab}


class HFTokenizer:
    """A Hugging Face ``tokenizers`` tokenizer from a tokenizer.json file, a folder, or a hub id."""

    def __init__(self, tokenizer: Any) -> None:
        tokenizer.no_padding()  # a tokenizer.json may pad each text (MiniLM: to 128); batches pad
        self.tokenizer = tokenizer
        pad = next(
            (t for t in ("[PAD]", "<pad>", "<|padding|>") if tokenizer.token_to_id(t) is not None),
            None,
        )
        self.pad_id = 0 if pad is None else tokenizer.token_to_id(pad)

    @classmethod
    def load(cls, name: str) -> HFTokenizer:
        from tokenizers import Tokenizer as _Tokenizer

        path = Path(name).expanduser()
        if path.is_dir():
            path = path / "tokenizer.json"
        if path.is_file():
            return cls(_Tokenizer.from_file(str(path)))
        try:
            return cls(_Tokenizer.from_pretrained(name))
        except Exception as err:  # the hub client raises many types; all mean "not found"
            raise ConfigError(
                f"text tokenizer '{name}' is neither a tokenizer.json file, a folder holding one, "
                f"nor a reachable hub id ({err}); use 'word' or a local path"
            ) from err

    def encode(self, text: str, max_length: int | None = None) -> list[int]:
        """Token ids with the model's special tokens; cut to ``max_length`` by the tokenizer's
        own truncation, which keeps the closing special token ([SEP], </s>) a cut would drop."""
        encoding = self.tokenizer.encode(text, add_special_tokens=False)
        if max_length is not None:  # room for the special tokens, as enable_truncation leaves
            room = max_length - self.tokenizer.num_special_tokens_to_add(is_pair=False)
            encoding.truncate(max(0, room))
        return self.tokenizer.post_process(encoding).ids

    def __len__(self) -> int:
        return self.tokenizer.get_vocab_size()

    def state(self) -> dict[str, Any]:
        return {"type": "huggingface", "json": self.tokenizer.to_str()}


def tokenizer_from_state(state: dict[str, Any]) -> Tokenizer:
    if state["type"] == "word":
        return WordTokenizer(state["vocab"])
    from tokenizers import Tokenizer as _Tokenizer

    return HFTokenizer(_Tokenizer.from_str(state["json"]))


class TextPreprocessor(FieldBase):
    """Turns a string into token ids (truncated to ``max_length``); collates with padding."""

    kind = "text"

    def __init__(
        self,
        column: str,
        tokenizer: str = "word",
        max_length: int = 64,
        min_freq: int = 1,
        max_vocab: int | None = None,
    ) -> None:
        self.column = column
        self.tokenizer_name = tokenizer
        self.max_length = max_length
        self.min_freq = min_freq
        self.max_vocab = max_vocab
        self.tokenizer: Tokenizer | None = None
        self._counts: Counter[str] = Counter()

    def observe(self, row: dict[str, Any]) -> None:
        text = row.get(self.column)
        if self.tokenizer_name == "word" and isinstance(text, str):
            self._counts.update(WordTokenizer.split(text))

    def finish(self) -> None:
        if self.tokenizer_name == "word":
            self.tokenizer = WordTokenizer.from_counts(self._counts, self.min_freq, self.max_vocab)
        else:
            self.tokenizer = HFTokenizer.load(self.tokenizer_name)

    def read(self, value: Any, base_dir: Path, training: bool = False) -> torch.Tensor:
        if not isinstance(value, str):
            raise RowError("undecodable text", f"expected a string, got {type(value).__name__}")
        assert self.tokenizer is not None, "fit() the preprocessor before reading rows"
        if isinstance(self.tokenizer, HFTokenizer):
            ids = self.tokenizer.encode(value, self.max_length)
        else:
            ids = self.tokenizer.encode(value)[: self.max_length]
        if not ids:
            ids = [self.tokenizer.pad_id]
        return torch.tensor(ids, dtype=torch.long)

    def collate(self, items: list[torch.Tensor | None]) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.tokenizer is not None
        lengths = torch.tensor([0 if x is None else len(x) for x in items], dtype=torch.long)
        ids = torch.full((len(items), max(1, int(lengths.max()))), self.tokenizer.pad_id)
        for i, x in enumerate(items):
            if x is not None:
                ids[i, : len(x)] = x
        return ids, lengths

    def encoder_args(self) -> dict[str, Any]:
        assert self.tokenizer is not None
        return {
            "vocab_size": len(self.tokenizer),
            "pad_id": self.tokenizer.pad_id,
            "max_length": self.max_length,
        }

    def state(self) -> dict[str, Any]:
        assert self.tokenizer is not None
        return {
            "tokenizer_name": self.tokenizer_name,
            "max_length": self.max_length,
            "min_freq": self.min_freq,
            "max_vocab": self.max_vocab,
            "tokenizer": self.tokenizer.state(),
        }

    @classmethod
    def from_state(cls, column: str, state: dict[str, Any]) -> TextPreprocessor:
        pre = cls(
            column,
            state["tokenizer_name"],
            state["max_length"],
            state["min_freq"],
            state["max_vocab"],
        )
        pre.tokenizer = tokenizer_from_state(state["tokenizer"])
        return pre
