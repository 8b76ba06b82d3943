from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from polymodal.data.modalities.text import SPECIALS, TextPreprocessor, WordTokenizer
from polymodal.errors import RowError


def test_word_tokenizer_fit_order_and_unknown():
    tok = WordTokenizer.fit(["a red circle.", "a blue circle", "A square"])
    assert tok.vocab[: len(SPECIALS)] == list(SPECIALS)
    assert tok.vocab[4:] == ["a", "circle", ".", "blue", "red", "square"]  # by count, then name
    assert tok.encode("A red triangle!") == [tok.ids["a"], tok.ids["red"], tok.unk_id, tok.unk_id]
    assert tok.decode(tok.encode("a red circle")) == "a red circle"


def test_min_freq_and_max_size():
    tok = WordTokenizer.fit(["a a a b b c"], min_freq=2)
    assert tok.vocab[4:] == ["a", "b"]
    assert WordTokenizer.fit(["a a a b b c"], max_size=1).vocab[4:] == ["a"]


def test_preprocessor_save_load_round_trip(tmp_path: Path):
    rows = [{"text": "a red circle"}, {"text": "a blue square"}, {"text": 3}]
    pre = TextPreprocessor("text", max_length=3)
    pre.fit(rows)
    state = json.loads(json.dumps(pre.state()))  # what is written to preprocessor.json
    again = TextPreprocessor.from_state("text", state)
    for text in ("a red square", "an unknown word here and longer"):
        assert torch.equal(pre.read(text, tmp_path), again.read(text, tmp_path))
    assert len(again.read("one two three four five", tmp_path)) == 3  # truncated
    assert again.encoder_args() == {"vocab_size": len(pre.tokenizer), "pad_id": 0, "max_length": 3}


def test_non_string_is_undecodable(tmp_path: Path):
    pre = TextPreprocessor("text")
    pre.fit([{"text": "hello"}])
    with pytest.raises(RowError) as err:
        pre.read({"nested": 1}, tmp_path)
    assert err.value.reason == "undecodable text"


def test_collate_pads_and_reports_lengths():
    pre = TextPreprocessor("text")
    pre.fit([{"text": "a b c"}])
    ids, lengths = pre.collate([torch.tensor([4, 5, 6]), None, torch.tensor([4])])
    assert lengths.tolist() == [3, 0, 1]
    assert ids.tolist() == [[4, 5, 6], [0, 0, 0], [4, 0, 0]]


def test_hugging_face_tokenizer_file(tmp_path: Path):
    tokenizers = pytest.importorskip("tokenizers")
    vocab = {"[PAD]": 0, "[UNK]": 1, "red": 2, "circle": 3}
    model = tokenizers.models.WordLevel(vocab, unk_token="[UNK]")
    hf = tokenizers.Tokenizer(model)
    hf.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    hf.save(str(tmp_path / "tokenizer.json"))
    pre = TextPreprocessor("text", tokenizer=str(tmp_path))
    pre.fit([])
    assert pre.read("red circle square", tmp_path).tolist() == [2, 3, 1]
    again = TextPreprocessor.from_state("text", json.loads(json.dumps(pre.state())))
    assert again.read("circle red", tmp_path).tolist() == [3, 2]
    assert again.encoder_args()["vocab_size"] == 4


def test_hugging_face_truncation_keeps_the_closing_special_token(tmp_path: Path):
    tokenizers = pytest.importorskip("tokenizers")
    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "red": 4, "circle": 5}
    hf = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    hf.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    hf.post_processor = tokenizers.processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    hf.save(str(tmp_path / "tokenizer.json"))
    pre = TextPreprocessor("text", tokenizer=str(tmp_path), max_length=4).fit([])
    assert pre.read("red circle red circle", tmp_path).tolist() == [2, 4, 5, 3]
    assert pre.read("red", tmp_path).tolist() == [2, 4, 3]
