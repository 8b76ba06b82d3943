"""The FAISS index: built from a retrieval model's embeddings, searched like brute force,
changed, reloaded, resumed after a killed build, and unharmed by a killed save."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import polymodal.index as index_module
from polymodal.cli import main
from polymodal.config import validate
from polymodal.errors import ConfigError, DataError
from polymodal.index import SKIPPED_FILE, VectorIndex
from polymodal.predictor import Predictor
from polymodal.train.run import RunResult, run_training

pytest.importorskip("faiss")


@pytest.fixture(scope="module")
def run(
    tmp_path_factory: pytest.TempPathFactory, write_tiny_manifest: Callable[[Path], Path]
) -> RunResult:
    root = tmp_path_factory.mktemp("index_run")
    manifest = write_tiny_manifest(root / "data")
    for i, row in enumerate(rows_of(manifest)):  # every image distinct: no tied scores
        red = row["label"] == "red"
        colour = (200 + i, 30 + 2 * i, 30) if red else (30, 30 + 2 * i, 200 + i)
        Image.new("RGB", (16, 16), colour).save(manifest.parent / row["image"])
    config = validate(
        {
            "name": "retrieval",
            "seed": 0,
            "data": {"manifest": str(manifest), "image": {"size": 16}},
            "model": {
                "inputs": ["image", "text"],
                "encoders": {
                    "image": {"type": "cnn", "dim": 16, "channels": [8, 8]},
                    "text": {"type": "bag", "dim": 16},
                },
                "tasks": [{"type": "retrieve", "query": "image", "gallery": "text", "dim": 8}],
            },
            "train": {"epochs": 1, "batch_size": 8, "out_dir": str(root / "runs")},
        }
    )
    return run_training(config, log=lambda m: None)


@pytest.fixture
def manifest(run: RunResult) -> Path:
    return run.data.index.path


def rows_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def brute_force(run: RunResult, manifest: Path, text: str) -> list[tuple[int, float]]:
    """Every row's image embedding from the Predictor, ranked by cosine to the text's."""
    predictor = Predictor.from_pretrained(run.model_dir)
    task = "retrieve_image_text"
    images = predictor.predict([{"image": r["image"]} for r in rows_of(manifest)], manifest.parent)
    gallery = np.array([p[task]["image_embedding"] for p in images])
    query = np.array(predictor({"text": text})[task]["text_embedding"])
    scores = gallery @ query
    order = np.argsort(-scores, kind="stable")
    return [(int(i), float(scores[i])) for i in order]


@pytest.mark.parametrize("kind", ["exact", "hnsw"])
def test_search_finds_what_brute_force_finds(run, manifest, tmp_path, kind):
    index = VectorIndex.build(run.model_dir, manifest, "image", tmp_path / "index", kind=kind)
    assert len(index) == 24 and index.info.kind == kind and index.info.dim == 8
    vectors = index.query_vectors("text", ["a red square"], tmp_path)
    found = index.search(vectors, k=5)[0]
    expected = brute_force(run, manifest, "a red square")[:5]
    assert [hit["id"] for hit in found] == [i for i, _ in expected]
    assert [hit["score"] for hit in found] == pytest.approx([s for _, s in expected], abs=1e-5)
    assert found[0]["item"] == {k: v for k, v in rows_of(manifest)[found[0]["id"]].items()}


def test_remove_add_and_reload(run, manifest, tmp_path):
    for kind in ("exact", "hnsw"):
        folder = tmp_path / kind
        index = VectorIndex.build(run.model_dir, manifest, "image", folder, kind=kind)
        query = index.query_vectors("text", ["a blue square"], tmp_path)
        first = index.search(query, k=3)[0][0]["id"]
        assert index.remove([first, first, 999]) == 1
        assert first not in [hit["id"] for hit in index.search(query, k=24)[0]]
        assert len(index.search(query, k=24)[0]) == 23
        assert index.add(manifest) == list(range(24, 48))
        again = VectorIndex.load(folder)
        assert len(again) == 47 and again.info.version == index.info.version
        assert again.search(query, k=47) == index.search(query, k=47)
        assert sorted(p.name for p in folder.iterdir()) == ["index.json", f"v{again.info.version}"]


def test_each_item_knows_the_folder_of_its_manifest(run, manifest, tmp_path):
    elsewhere = tmp_path / "elsewhere" / "more.jsonl"
    elsewhere.parent.mkdir()
    image = str((manifest.parent / rows_of(manifest)[0]["image"]).resolve())
    elsewhere.write_text(json.dumps({"image": image, "caption": "a shape"}) + "\n")
    index = VectorIndex.build(run.model_dir, manifest, "image", tmp_path / "index")
    assert index.add(elsewhere) == [24]
    again = VectorIndex.load(tmp_path / "index")
    assert again.data_dir(0) == again.data_dir(23) == manifest.parent.resolve()
    assert again.data_dir(24) == elsewhere.parent.resolve()


def test_a_killed_build_resumes_from_its_last_part(run, manifest, tmp_path, monkeypatch):
    monkeypatch.setattr(index_module, "PART_ROWS", 5)
    embedded: list[int] = []
    killed_at = [3]  # the process dies in its fourth part
    embed = index_module.Embedder.embed

    def counting(self, examples):
        if len(embedded) == killed_at[0]:
            raise KeyboardInterrupt
        embedded.append(len(examples))
        return embed(self, examples)

    monkeypatch.setattr(index_module.Embedder, "embed", counting)
    with pytest.raises(KeyboardInterrupt):
        VectorIndex.build(run.model_dir, manifest, "image", tmp_path / "index")
    assert embedded == [5, 5, 5]
    killed_at[0] = -1
    resumed = VectorIndex.build(run.model_dir, manifest, "image", tmp_path / "index")
    assert embedded == [5, 5, 5, 5, 4]  # only the two parts left
    whole = VectorIndex.build(run.model_dir, manifest, "image", tmp_path / "whole")
    query = whole.query_vectors("text", ["a red square"], tmp_path)
    assert resumed.search(query, k=24) == whole.search(query, k=24)
    assert not (tmp_path / "index" / index_module.PARTS_DIR).exists()


def test_a_save_killed_midway_leaves_the_previous_index(run, manifest, tmp_path, monkeypatch):
    index = VectorIndex.build(run.model_dir, manifest, "image", tmp_path / "index")
    query = index.query_vectors("text", ["a red square"], tmp_path)
    before = index.search(query, k=24)

    def killed(path, value):
        raise KeyboardInterrupt

    monkeypatch.setattr(index_module, "write_json", killed)
    with pytest.raises(KeyboardInterrupt):
        index.remove([0, 1, 2])
    assert VectorIndex.load(tmp_path / "index").search(query, k=24) == before


def test_unreadable_rows_are_skipped_with_reasons(run, manifest, tmp_path):
    rows = rows_of(manifest)
    rows[3]["image"] = "img/missing.png"
    rows[5]["image"] = None
    broken = manifest.with_name("broken.jsonl")
    broken.write_text("".join(json.dumps(r) + "\n" for r in rows))
    index = VectorIndex.build(run.model_dir, broken, "image", tmp_path / "index")
    assert len(index) == 22
    skipped = rows_of(tmp_path / "index" / SKIPPED_FILE)
    assert [(s["line"], s["reason"]) for s in skipped] == [
        (4, "missing image file"),
        (6, "no image"),
    ]


def test_bad_requests_are_named(run, manifest, tmp_path):
    with pytest.raises(ConfigError, match=r"--field label: .*fields it embeds: image, text"):
        VectorIndex.build(run.model_dir, manifest, "label", tmp_path / "a")
    no_image = manifest.with_name("texts.jsonl")
    no_image.write_text(json.dumps({"text": "a red square"}) + "\n")
    with pytest.raises(DataError, match=r"no 'image' column.*its columns: text"):
        VectorIndex.build(run.model_dir, no_image, "image", tmp_path / "b")
    index = VectorIndex.build(run.model_dir, manifest, "image", tmp_path / "c")
    with pytest.raises(ConfigError, match="already holds an index"):
        VectorIndex.build(run.model_dir, manifest, "image", tmp_path / "c")
    with pytest.raises(DataError, match=r"the image query: missing image file"):
        index.query_vectors("image", ["nowhere.png"], tmp_path)


def test_cli_builds_searches_and_changes_an_index(run, manifest, tmp_path, capsys):
    out = tmp_path / "index"
    argv = ["index", "build", str(run.model_dir), "--data", str(manifest), "--field", "image"]
    assert main([*argv, "--out", str(out), "--quiet"]) == 0
    assert "indexed 24 rows of 'image' (exact)" in capsys.readouterr().out
    assert main(["index", "search", str(out), "--text", "a red square", "--k", "3"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert len(hits) == 3 and hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]
    image = manifest.parent / hits[0]["item"]["image"]
    assert main(["index", "search", str(out), "--image", str(image), "--k", "1"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["score"] == pytest.approx(1.0, abs=1e-5)
    assert main(["index", "remove", str(out), "--ids", "0", "1"]) == 0
    assert "removed 2 of 2 ids; 22 left" in capsys.readouterr().out
    assert main(["index", "search", str(out), "--audio", "clip.wav"]) == 2
    assert "takes no audio query" in capsys.readouterr().err
