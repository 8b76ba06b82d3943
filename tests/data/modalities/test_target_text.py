"""Generated text targets: references read as written, a word vocabulary, teacher forcing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from polymodal.data.modalities.target_text import (
    MAX_BYTES,
    TargetTextPreprocessor,
    reference_texts,
)
from polymodal.data.modalities.text import BOS, EOS, PAD
from polymodal.errors import ConfigError, RowError


@pytest.mark.parametrize(
    ("cell", "texts"),
    [
        ("a red  circle", ["a red circle"]),
        (["a red circle", " ", "a red\nround shape"], ["a red circle", "a red round shape"]),
        ('["one", "two"]', ["one", "two"]),
        ("[a] note in brackets", ["[a] note in brackets"]),
    ],
)
def test_a_cell_holds_one_reference_or_a_list(cell: object, texts: list[str]) -> None:
    assert reference_texts(cell) == texts


@pytest.mark.parametrize("cell", [[], ["", " "], [1, "a"], 3])
def test_cells_without_reference_text_are_bad_rows(cell: object) -> None:
    with pytest.raises(RowError):
        reference_texts(cell)


def fitted() -> TargetTextPreprocessor:
    rows = [{"caption": ["a red circle", "a circle"]}, {"caption": "a blue square"}, {}]
    return TargetTextPreprocessor("caption", max_length=3).fit(rows)


def test_the_vocabulary_counts_every_train_reference() -> None:
    vocab = fitted().vocab.vocab
    assert vocab[:4] == [PAD, "[UNK]", BOS, EOS]
    assert vocab[4:6] == ["a", "circle"]  # the most frequent first
    assert set(vocab[6:]) == {"blue", "red", "square"}


def test_references_come_back_as_written_also_unknown_words() -> None:
    pre = fitted()
    cells = [["A Zebra, grazing.", "ünïcode words"], "a red circle"]
    values, lengths = pre.collate([pre.read(c, Path()) for c in cells])
    assert values.dtype == torch.uint8
    assert pre.references(values, lengths) == [
        ["A Zebra, grazing.", "ünïcode words"],
        ["a red circle"],
    ]


def test_references_have_one_width_in_every_batch_and_a_limit() -> None:
    pre = fitted()
    values, _ = pre.collate([pre.read("a red circle", Path())])
    assert pre.full_width(values).shape == (1, MAX_BYTES)
    with pytest.raises(RowError, match=f"at most {MAX_BYTES}"):
        pre.read(["word " * 500, "word " * 400], Path())


def test_teacher_forcing_frames_the_words_with_start_and_end() -> None:
    pre = fitted()
    inputs, targets = pre.teacher_forcing(["a red circle and more", "a zebra"])
    ids = pre.vocab.ids
    bos, eos, pad, unk = ids[BOS], ids[EOS], ids[PAD], pre.vocab.unk_id
    a, red, circle = ids["a"], ids["red"], ids["circle"]
    assert inputs.tolist() == [[bos, a, red, circle], [bos, a, unk, pad]]
    assert targets.tolist() == [[a, red, circle, eos], [a, unk, eos, pad]]


def test_decoding_skips_special_tokens_and_attaches_punctuation() -> None:
    pre = TargetTextPreprocessor("caption").fit([{"caption": "a circle , then a square ."}])
    ids = pre.vocab.ids
    words = ["a", "circle", ",", "then", "a", "square", "."]
    assert pre.decode([ids[BOS], *(ids[w] for w in words), ids[PAD]]) == "a circle, then a square."


def test_state_round_trips() -> None:
    pre = fitted()
    again = TargetTextPreprocessor.from_state("caption", pre.state())
    assert again.vocab.vocab == pre.vocab.vocab
    assert again.max_length == 3


def test_a_target_text_is_not_an_encoder_input() -> None:
    with pytest.raises(ConfigError, match="'caption' is a text target"):
        fitted().encoder_args()
