from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from polymodal.config import DataConfig
from polymodal.data.dataset import read_all
from polymodal.data.modalities.tabular import LabelPreprocessor
from polymodal.data.modalities.text import SPECIALS, TextPreprocessor
from polymodal.data.pipeline import PREPROCESSOR_FILE, Preprocessor, prepare_data, split_positions
from polymodal.data.quarantine import Quarantine
from polymodal.data.schema import FieldSpec, Schema
from polymodal.data.sources import LINE_KEY, index_manifest
from polymodal.errors import DataError

RED, BLUE = (220, 30, 30), (30, 30, 220)
FIELDS = {
    "image": FieldSpec(kind="image"),
    "text": FieldSpec(kind="text"),
    "price": FieldSpec(kind="tabular", numeric=["price"]),
    "label": FieldSpec(kind="label", role="target"),
}


def write_manifest(directory: Path, rows: list[dict], name: str = "manifest.jsonl") -> Path:
    """Write rows as JSONL; a value ``("png", colour)`` becomes a solid PNG file's path."""
    out = []
    for i, row in enumerate(rows):
        row = dict(row)
        for key, value in row.items():
            if isinstance(value, tuple):
                path = directory / "img" / f"{i}-{key}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (16, 16), value[1]).save(path)
                row[key] = f"img/{path.name}"
        out.append(json.dumps(row))
    path = directory / name
    path.write_text("\n".join(out) + "\n", encoding="utf-8")
    return path


def lines(examples: list[dict]) -> list[int]:
    return [ex[LINE_KEY] for ex in examples]


def test_absent_or_empty_fields_load_with_mask_false(tmp_path):
    rows = [
        {"image": ("png", RED), "text": "a red square", "price": 1.0, "label": "red"},
        {"text": "", "price": None, "label": "blue"},  # no image key, empty text, null price
        {"image": ("png", BLUE), "text": "   ", "price": 3.0},  # blank text, no label key
        {"image": None, "text": "blue and more words", "price": 5.0, "label": "blue"},
    ]
    manifest = write_manifest(tmp_path, rows)
    config = DataConfig(
        manifest=manifest, fields=FIELDS, image={"size": 8}, val_fraction=0.0, test_fraction=0.0
    )
    data = prepare_data(config)
    assert len(data.quarantine) == 0
    examples = data.splits["train"]
    assert lines(examples) == [1, 2, 3, 4]  # every row loads
    batch = data.preprocessor.collate(examples)

    assert batch.rows == [1, 2, 3, 4]
    assert batch.present["image"].tolist() == [True, False, True, False]
    assert batch.present["text"].tolist() == [True, False, False, True]
    assert batch.present["price"].tolist() == [True, False, True, True]
    assert batch.present["label"].tolist() == [True, True, False, True]

    image = data.preprocessor.fields["image"].model_input(
        batch.values["image"], batch.present["image"]
    )
    assert image.shape == (4, 3, 8, 8)
    for row, colour in ((0, RED), (2, BLUE)):
        for channel, value in enumerate(colour):
            expected = (value / 255 - 0.5) / 0.5
            assert torch.allclose(image[row, channel], torch.full((8, 8), expected))
    assert torch.all(image[1] == 0) and torch.all(image[3] == 0)

    tok = data.preprocessor.fields["text"].tokenizer
    assert batch.lengths["text"].tolist() == [3, 0, 0, 4]
    assert batch.values["text"][0, :3].tolist() == tok.encode("a red square")
    assert batch.values["text"][3].tolist() == tok.encode("blue and more words")
    assert batch.values["text"][1].tolist() == [tok.pad_id] * 4

    mean, std = 3.0, math.sqrt(8 / 3)  # fitted on the present prices 1, 3, 5
    assert batch.values["price"][:, 0].tolist() == pytest.approx(
        [(1 - mean) / std, 0.0, 0.0, (5 - mean) / std]
    )
    labels = data.preprocessor.fields["label"].labels
    assert labels == ["blue", "red"]
    assert batch.values["label"].tolist() == [1, 0, -100, 0]
    assert len(batch) == 4


def test_batch_where_a_field_is_absent_in_every_row(tiny_manifest):
    data = prepare_data(DataConfig(manifest=tiny_manifest, image={"size": 8}))
    rows = [{LINE_KEY: 30, "label": "red"}, {LINE_KEY: 31, "label": "blue", "text": ""}]
    pre = data.preprocessor
    batch = pre.collate([pre.example(r, tiny_manifest.parent) for r in rows])
    assert batch.rows == [30, 31]
    for name in ("image", "text", "price"):
        assert batch.present[name].tolist() == [False, False]
    assert batch.values["text"].shape == (2, 1) and batch.lengths["text"].tolist() == [0, 0]
    assert batch.values["label"].tolist() == [1, 0]


def test_split_column_is_used(tiny_manifest):
    data = prepare_data(DataConfig(manifest=tiny_manifest, image={"size": 8}))
    assert {name: lines(ex) for name, ex in data.splits.items()} == {
        "train": list(range(1, 17)),
        "val": list(range(17, 21)),
        "test": list(range(21, 25)),
    }
    assert data.schema_inferred
    assert "split" not in data.schema.fields and "id" not in data.schema.fields


def test_empty_split_values_train_and_unknown_names_are_quarantined(tmp_path):
    rows = [
        {"x": "a b c", "split": "val"},
        {"x": "d e f"},
        {"x": "g h i", "split": "test"},
        {"x": "j k l", "split": "holdout"},
        {"x": "m n o", "split": "train"},
        {"x": "p q r", "split": None},
        {"x": "s t u", "split": " "},
    ]
    manifest = write_manifest(tmp_path, rows)
    quarantine = Quarantine()
    config = DataConfig(manifest=manifest)
    index = index_manifest(manifest, quarantine)
    splits = split_positions(index, config, 0, quarantine)
    assert {name: index.lines[p].tolist() for name, p in splits.items()} == {
        "train": [2, 5, 6, 7],
        "val": [1],
        "test": [3],
    }
    [bad] = quarantine.rows
    assert (bad.line, bad.reason, bad.field) == (4, "unknown split", "split")
    assert "'holdout' is not a split; use train, val, test" in bad.detail


def test_named_split_column(tmp_path):
    rows = [{"x": "a b", "fold": "val" if i % 3 == 0 else "train"} for i in range(9)]
    manifest = write_manifest(tmp_path, rows)
    config = DataConfig(manifest=manifest, split_column="fold")
    splits = split_positions(index_manifest(manifest, split_column="fold"), config, 0, Quarantine())
    assert [len(splits[name]) for name in ("train", "val", "test")] == [6, 3, 0]


def random_split_manifest(directory: Path, n: int = 20) -> Path:
    rows = [{"text": f"row {i} words here", "label": "ab"[i % 2]} for i in range(n)]
    return write_manifest(directory, rows)


def test_seeded_random_split_fractions_and_coverage(tmp_path):
    manifest = random_split_manifest(tmp_path)
    config = DataConfig(manifest=manifest, val_fraction=0.2, test_fraction=0.15)
    data = prepare_data(config, seed=7)
    split_lines = {name: lines(ex) for name, ex in data.splits.items()}
    assert {name: len(v) for name, v in split_lines.items()} == {"train": 13, "val": 4, "test": 3}
    all_lines = [line for v in split_lines.values() for line in v]
    assert sorted(all_lines) == list(range(1, 21))  # disjoint and complete
    assert all(v == sorted(v) for v in split_lines.values())  # manifest order within a split


def test_seeded_random_split_is_deterministic(tmp_path):
    manifest = random_split_manifest(tmp_path)
    config = DataConfig(manifest=manifest, val_fraction=0.2, test_fraction=0.2)

    def split(seed: int) -> dict[str, list[int]]:
        return {name: lines(ex) for name, ex in prepare_data(config, seed=seed).splits.items()}

    assert split(7) == split(7)
    assert split(7) != split(8)
    no_holdout = DataConfig(manifest=manifest, val_fraction=0.0, test_fraction=0.0)
    assert lines(prepare_data(no_holdout).splits["train"]) == list(range(1, 21))


def test_empty_train_split_is_an_error(tmp_path):
    manifest = write_manifest(tmp_path, [{"text": "a b c", "split": "val"}] * 3)
    with pytest.raises(DataError, match="no rows in the train split"):
        prepare_data(DataConfig(manifest=manifest))


def round_trip_manifest(directory: Path) -> Path:
    rows = []
    for i in range(12):
        colour = ("red", RED) if i % 2 == 0 else ("blue", BLUE)
        rows.append(
            {
                "split": "train" if i < 8 else ("val" if i < 10 else "test"),
                "image": ("png", colour[1]),
                "text": f"a {colour[0]} shape number {i}" + (" unseen" if i >= 8 else ""),
                "price": i * 1.25 if i != 3 else None,
                "shape": ["circle", "square", "star"][i % 3] if i < 11 else "hexagon",
                "label": colour[0],
            }
        )
    return write_manifest(directory, rows)


def assert_same_examples(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for key in x:
            if isinstance(x[key], torch.Tensor):
                assert x[key].dtype == y[key].dtype and torch.equal(x[key], y[key]), key
            else:
                assert x[key] == y[key], key


def test_preprocessor_save_load_gives_identical_examples(tmp_path):
    manifest = round_trip_manifest(tmp_path)
    config = DataConfig(manifest=manifest, image={"size": 8, "mean": [0.4, 0.5, 0.6]})
    data = prepare_data(config)
    kinds = {name: pre.kind for name, pre in data.preprocessor.fields.items()}
    assert kinds == {
        "image": "image",
        "label": "label",
        "price": "tabular",
        "shape": "tabular",
        "text": "text",
    }
    saved = data.preprocessor.save(tmp_path / "model")
    assert saved == tmp_path / "model" / PREPROCESSOR_FILE

    loaded = Preprocessor.load(tmp_path / "model")
    assert loaded.state() == data.preprocessor.state()
    assert loaded.schema == data.schema
    again = prepare_data(config, preprocessor=loaded)
    assert again.preprocessor is loaded
    for name in ("train", "val", "test"):
        assert_same_examples(data.splits[name], again.splits[name])
    first, second = (d.preprocessor.collate(d.splits["val"]) for d in (data, again))
    for name in first.values:
        assert torch.equal(first.values[name], second.values[name]), name
        assert torch.equal(first.present[name], second.present[name]), name
    assert first.lengths.keys() == second.lengths.keys() == {"text"}
    assert torch.equal(first.lengths["text"], second.lengths["text"])
    # unseen values map the same way: the 'unseen' word and the 'hexagon' category
    unk = loaded.fields["text"].tokenizer.unk_id
    assert again.splits["val"][0]["text"][-1].item() == unk
    assert again.splits["test"][-1]["shape"].tolist() == [0.0]


def test_load_from_a_directory_without_a_preprocessor(tmp_path):
    with pytest.raises(DataError, match=r"preprocessor\.json is missing"):
        Preprocessor.load(tmp_path)


def test_prepare_data_keeps_a_fitted_text_preprocessor(tiny_manifest):
    given = TextPreprocessor("text", max_length=8)
    given.fit([{"text": "zebra giraffe"}, {"text": "zebra"}])
    vocab = list(given.tokenizer.vocab)
    data = prepare_data(
        DataConfig(manifest=tiny_manifest, image={"size": 8}), fitted={"text": given}
    )

    assert data.preprocessor.fields["text"] is given
    assert given.tokenizer.vocab == vocab == [*SPECIALS, "zebra", "giraffe"]  # not refit
    unk = given.tokenizer.unk_id
    for ex in data.splits["train"]:  # "a red square number 0": no word of the given vocabulary
        assert ex["text"].tolist() == [unk] * 5
    assert data.preprocessor.fields["label"].labels == ["blue", "red"]  # others are fitted
    assert data.preprocessor.encoder_args("text")["vocab_size"] == 6

    refit = prepare_data(DataConfig(manifest=tiny_manifest, image={"size": 8}))
    assert "red" in refit.preprocessor.fields["text"].tokenizer.vocab


def test_fit_takes_a_fitted_label_preprocessor_as_is(tiny_manifest):
    schema = Schema({"text": FieldSpec(kind="text"), "label": FieldSpec(kind="label")})
    data_config = DataConfig(manifest=tiny_manifest)
    rows = [{"text": "a red square", "label": "red"}, {"text": "a blue one", "label": "blue"}]
    given = LabelPreprocessor("label")
    given.fit([{"label": "red"}, {"label": "green"}])

    pre = Preprocessor.build(schema, data_config).fit(rows, fitted={"label": given})
    assert pre.fields["label"] is given and given.labels == ["green", "red"]
    assert pre.fields["text"].tokenizer.vocab[len(SPECIALS) :] == [
        "a",
        "blue",
        "one",
        "red",
        "square",
    ]
    plain = Preprocessor.build(schema, data_config).fit(rows)
    assert plain.fields["label"].labels == ["blue", "red"]


@pytest.mark.parametrize("cache", ["none", "memory", "disk"])
def test_an_oversized_image_quarantines_its_row_and_the_others_load(tmp_path, cache):
    """Found while reading (no cache) or while building the store: the same quarantine."""
    rows = [{"image": ("png", RED), "label": "red"}] * 3
    manifest = write_manifest(tmp_path, rows)
    Image.new("RGB", (40, 40), BLUE).save(tmp_path / "img" / "1-image.png")  # over 16x16
    fields = {"image": FIELDS["image"], "label": FIELDS["label"]}
    config = DataConfig(
        manifest=manifest,
        fields=fields,
        image={"size": 8, "max_pixels": 16 * 16},
        val_fraction=0.0,
        test_fraction=0.0,
        cache=cache,
    )
    data = prepare_data(config, cache_dir=tmp_path / "cache")
    assert lines(read_all(data.splits["train"], data.quarantine)) == [1, 3]
    [bad] = data.quarantine.rows
    assert (bad.line, bad.reason, bad.field) == (2, "image too large", "image")
    assert "1600 pixels > data.image.max_pixels (256)" in bad.detail


def test_nan_is_missing_in_json_and_csv_alike(tmp_path):
    """JSON NaN and a CSV's text nan follow one rule: a missing value, not a bad row."""
    rows = [
        {"text": "a", "price": "1.5", "size": "2"},
        {"text": "b", "price": "nan", "size": "NaN"},
        {"text": "c", "price": "nan", "size": "4"},
        {"text": "d", "price": "2.5", "size": "inf"},
    ]
    (tmp_path / "m.csv").write_text(
        "text,price,size\n" + "".join(f"{r['text']},{r['price']},{r['size']}\n" for r in rows)
    )
    as_json = [{k: float(v) if k != "text" else v for k, v in r.items()} for r in rows]
    (tmp_path / "m.jsonl").write_text(
        "\n".join(json.dumps(r) for r in as_json), encoding="utf-8"
    )  # json.dumps writes NaN and Infinity
    fields = {
        "text": {"kind": "text"},
        "price": {"kind": "tabular"},
        "size": {"kind": "tabular"},
    }
    prepared = []
    for name in ("m.csv", "m.jsonl"):
        data = DataConfig(manifest=tmp_path / name, fields=fields, val_fraction=0, test_fraction=0)
        prepared.append(prepare_data(data))
    read = [read_all(data.splits["train"], data.quarantine) for data in prepared]
    for data, examples in zip(prepared, read, strict=True):
        assert [(q.line, q.reason, q.field) for q in data.quarantine.rows] == [
            (data.quarantine.rows[0].line, "non-numeric value", "size")
        ]  # Infinity is an error in both
        assert [ex["price"] is None for ex in examples] == [False, True, True]
        assert [ex["size"] is None for ex in examples] == [False, True, False]
    for a, b in zip(*read, strict=True):
        for name in fields:
            assert (a[name] is None) == (b[name] is None)
            if a[name] is not None:
                assert torch.equal(a[name], b[name])


MEDIA_FIELDS = {
    "clip": {"kind": "audio"},
    "series": {"kind": "sequence"},
    "video": {"kind": "video"},
    "embedding": {"kind": "features"},
    "label": {"kind": "label", "role": "target"},
}
MEDIA_BAD = {  # the line of each bad row: (field, reason)
    4: ("clip", "missing audio file"),
    5: ("series", "wrong channel count"),
    6: ("video", "empty video"),
    7: ("embedding", "wrong features shape"),
}


def media_manifest(folder: Path) -> Path:
    """Ten rows of audio (8 kHz wav: resampled), a 2-channel series, a video (a folder of
    frames), a 3-number embedding and a label; rows 2 and 3 lack a field, 4-7 are bad."""
    rows = []
    for i in range(10):
        (folder / "frames" / str(i)).mkdir(parents=True, exist_ok=True)
        for f in range(2 + i % 3):
            Image.new("RGB", (12, 12), (20 * f, 10 * i, 90)).save(folder / f"frames/{i}/{f}.png")
        seconds = 0.2 + 0.05 * i
        t = np.arange(round(seconds * 8000)) / 8000
        sf.write(folder / f"{i}.wav", (0.4 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), 8000)
        rows.append(
            {
                "clip": f"{i}.wav",
                "series": [[s * i, -s] for s in range(1 + i % 4)],
                "video": f"frames/{i}",
                "embedding": [i, 1.0, -1.0],
                "label": "ab"[i % 2],
                "split": "val" if i >= 8 else "train",
            }
        )
    del rows[1]["clip"], rows[2]["series"]
    rows[2]["video"] = None
    rows[3]["clip"] = "gone.wav"
    rows[4]["series"] = [[1, 2, 3]]
    (folder / "frames" / "none").mkdir()
    rows[5]["video"] = "frames/none"
    rows[6]["embedding"] = [1.0, 2.0]
    path = folder / "manifest.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize("cache", ["none", "memory", "disk"])
def test_audio_sequence_video_and_features_fields_collate_into_a_batch(tmp_path, cache):
    manifest = media_manifest(tmp_path)
    config = DataConfig(
        manifest=manifest,
        fields=MEDIA_FIELDS,
        audio={"n_mels": 16, "max_seconds": 0.5},
        video={"frames": 3, "size": 8},
        cache=cache,
        workers=1 if cache == "disk" else 0,  # the store decodes in a worker process
    )
    data = prepare_data(config, cache_dir=tmp_path / "cache")
    batch = data.preprocessor.collate(read_all(data.splits["train"], data.quarantine))
    assert {q.line: (q.field, q.reason) for q in data.quarantine.rows} == MEDIA_BAD
    assert batch.rows == [1, 2, 3, 8]
    assert batch.values["clip"].shape == (4, 50, 16)  # 0.5 s at 16 kHz, 160 per frame
    assert batch.lengths["clip"].tolist() == [20, 0, 30, 50]  # 0.2, absent, 0.3, 0.55 s
    assert batch.present["clip"].tolist() == [True, False, True, True]
    assert batch.values["series"].shape == (4, 4, 2)
    assert batch.lengths["series"].tolist() == [1, 2, 0, 4]
    assert batch.present["series"].tolist() == [True, True, False, True]
    assert batch.values["video"].shape == (4, 3, 3, 8, 8)
    assert batch.values["video"].dtype == torch.uint8
    assert batch.lengths["video"].tolist() == [2, 3, 0, 3]
    assert batch.present["video"].tolist() == [True, True, False, True]
    assert batch.values["embedding"].shape == (4, 3) and "embedding" not in batch.lengths
    assert batch.values["embedding"][:, 0].tolist() == [0, 1, 2, 7]
    pre = data.preprocessor
    assert pre.encoder_args("clip") == {"n_mels": 16, "max_frames": 50}
    assert pre.encoder_args("series") == {"channels": 2, "max_length": 256}
    assert pre.encoder_args("video") == {"in_channels": 3, "frames": 3, "size": 8}
    assert pre.encoder_args("embedding") == {"input_dim": 3}
    if cache != "none":  # the store gives what reading the rows gives
        plain = prepare_data(config.model_copy(update={"cache": "none"}))
        assert_same_examples(plain.splits["val"][:], data.splits["val"][:])
        good = read_all(plain.splits["train"], Quarantine())
        assert_same_examples(good, data.splits["train"][:])


def test_media_fields_round_trip_through_save_and_load(tmp_path):
    config = DataConfig(manifest=media_manifest(tmp_path), fields=MEDIA_FIELDS)
    data = prepare_data(config)
    data.preprocessor.save(tmp_path / "model")
    loaded = Preprocessor.load(tmp_path / "model")
    assert loaded.state() == data.preprocessor.state()
    again = prepare_data(config, preprocessor=loaded)
    for name in ("train", "val"):
        first, second = (read_all(d.splits[name], Quarantine()) for d in (data, again))
        assert_same_examples(first, second)


def test_only_a_training_read_crops_at_random(tmp_path):
    t = np.arange(16000) / 16000
    sf.write(tmp_path / "long.wav", np.sin(2 * np.pi * 5 * t).astype(np.float32), 16000)
    (tmp_path / "m.jsonl").write_text(json.dumps({"clip": "long.wav", "label": "a"}))
    fields = {"clip": MEDIA_FIELDS["clip"], "label": MEDIA_FIELDS["label"]}
    config = DataConfig(
        manifest=tmp_path / "m.jsonl",
        fields=fields,
        audio={"max_seconds": 0.25, "features": "waveform"},
        val_fraction=0.0,
        test_fraction=0.0,
    )
    data = prepare_data(config)
    split = data.splits["train"]
    centre = split[0]["clip"]
    assert torch.equal(centre, split[0]["clip"]) and not split.training
    training = split.for_training()
    assert training.training and not split.training
    torch.manual_seed(0)
    crops = [training[0]["clip"] for _ in range(4)]
    assert all(crop.shape == centre.shape for crop in crops)
    assert sum(not torch.equal(crop, centre) for crop in crops) >= 3
    stored = prepare_data(config.model_copy(update={"cache": "memory"})).splits["train"]
    assert torch.equal(stored.for_training()[0]["clip"], centre)  # a store holds centre crops


def test_audio_and_sequence_fields_are_inferred_from_a_manifest(tmp_path):
    manifest = media_manifest(tmp_path)
    config = DataConfig(manifest=manifest, audio={"n_mels": 8})  # no fields: inferred
    data = prepare_data(config)
    kinds = {name: spec.kind for name, spec in data.schema.fields.items()}
    assert kinds["clip"] == "audio" and kinds["series"] == "sequence"
    assert kinds["label"] == "label" and "embedding" not in kinds  # a flat list: not inferred
    example = read_all(data.splits["train"], data.quarantine)[0]
    assert example["clip"].shape == (20, 8) and example["series"].shape == (1, 2)
