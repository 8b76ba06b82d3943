"""Tiny randomly initialised Hugging Face models saved to a temporary folder, with the files a
real model folder has beside its weights (tokenizer.json, preprocessor_config.json)."""

from __future__ import annotations

from pathlib import Path

import pytest

WORDS = ["a", "the", "red", "blue", "green", "square", "circle", "triangle", "is", "there"]
WORDS += ["one", "two", "three", "big", "small"]
TEXT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
CLIP_SPECIALS = ["[PAD]", "[UNK]", "<|startoftext|>", "<|endoftext|>"]


def save_word_tokenizer(folder: Path, specials: list[str]) -> int:
    """A word-level tokenizer.json (lower case, the first special is padding, the third and
    fourth open and close every text); returns its vocabulary size."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    vocab = {word: i for i, word in enumerate([*specials, *WORDS])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=specials[1]))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{specials[2]} $A {specials[3]}",
        special_tokens=[(specials[2], 2), (specials[3], 3)],
    )
    tokenizer.save(str(folder / "tokenizer.json"))
    return len(vocab)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Folders of a BERT, a ViT, a CLIP, a Whisper and a wav2vec2 model, each a few thousand
    parameters, as ``save_pretrained`` writes them."""
    import torch
    import transformers as tf

    tf.utils.logging.disable_progress_bar()
    root = tmp_path_factory.mktemp("hf")
    folders = {name: root / name for name in ("bert", "vit", "clip", "whisper", "wav2vec2")}
    torch.manual_seed(0)
    small = {"num_hidden_layers": 3, "num_attention_heads": 2, "intermediate_size": 32}
    folders["bert"].mkdir()
    vocab = save_word_tokenizer(folders["bert"], TEXT_SPECIALS)
    bert = tf.BertConfig(vocab_size=vocab, hidden_size=16, max_position_embeddings=24, **small)
    tf.BertModel(bert).save_pretrained(folders["bert"])
    vit = tf.ViTConfig(image_size=32, patch_size=8, hidden_size=16, **small)
    tf.ViTModel(vit).save_pretrained(folders["vit"])
    tf.ViTImageProcessorPil(
        size={"height": 32, "width": 32}, image_mean=[0.4, 0.5, 0.6], image_std=[0.2, 0.3, 0.4]
    ).save_pretrained(folders["vit"])
    folders["clip"].mkdir()
    text = {"vocab_size": vocab, "hidden_size": 16, "max_position_embeddings": 16, **small}
    text.update(bos_token_id=2, eos_token_id=3, pad_token_id=0)
    vision = {"image_size": 32, "patch_size": 8, "hidden_size": 24, **small}
    clip = tf.CLIPConfig(text_config=text, vision_config=vision, projection_dim=12)
    tf.CLIPModel(clip).save_pretrained(folders["clip"])
    save_word_tokenizer(folders["clip"], CLIP_SPECIALS)
    tf.CLIPImageProcessorPil(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    ).save_pretrained(folders["clip"])
    whisper = tf.WhisperConfig(
        vocab_size=40,
        num_mel_bins=80,
        d_model=16,
        encoder_layers=3,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_source_positions=50,  # 100 frames: 1 s
        max_target_positions=16,
        pad_token_id=1,
        bos_token_id=2,
        eos_token_id=2,
        decoder_start_token_id=3,
    )
    tf.WhisperModel(whisper).save_pretrained(folders["whisper"])
    tf.WhisperFeatureExtractor(feature_size=80, chunk_length=1).save_pretrained(folders["whisper"])
    wav2vec2 = tf.Wav2Vec2Config(
        vocab_size=10,
        hidden_size=16,
        conv_dim=(8, 8),
        conv_stride=(5, 4),
        conv_kernel=(10, 4),
        num_conv_pos_embeddings=8,
        num_conv_pos_embedding_groups=2,
        **small,
    )
    tf.Wav2Vec2Model(wav2vec2).save_pretrained(folders["wav2vec2"])
    tf.Wav2Vec2FeatureExtractor(do_normalize=True).save_pretrained(folders["wav2vec2"])
    return folders
