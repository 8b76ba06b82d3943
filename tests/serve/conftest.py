"""``served_model``: a tiny caption + VQA + image <-> caption retrieval model trained on
ShapeWorld scenes, and a FAISS index of the scenes' images, for the service's tests."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from polymodal.config import validate
from polymodal.data.shapeworld import generate
from polymodal.index import VectorIndex
from polymodal.train.run import run_training

SCENES = 36


@dataclass(frozen=True)
class ServedModel:
    """A saved model, an index of its data's images, the data folder and one of its images."""

    model_dir: Path
    index_dir: Path
    data_dir: Path
    image: Path


def write_served_manifest(world: Path) -> Path:
    """One row per scene: its image, first question and answer, caption and captions."""
    captions = {}
    for line in (world / "captions.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        captions[row["image"]] = row
    rows, seen = [], set()
    for line in (world / "questions.jsonl").read_text(encoding="utf-8").splitlines():
        question = json.loads(line)
        if question["image"] in seen:
            continue
        seen.add(question["image"])
        scene = captions[question["image"]]
        rows.append(
            {
                "split": question["split"],
                "image": question["image"],
                "question": question["question"],
                "answers": question["answer"],
                "caption": scene["caption"],
                "captions": scene["captions"],
            }
        )
    path = world / "served.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def served_config(manifest: Path, out: Path) -> dict:
    """Three tasks on 16 px images, every width 16-32: trains in a few seconds."""
    return {
        "name": "served",
        "seed": 0,
        "data": {
            "manifest": str(manifest),
            "fields": {
                "image": {"kind": "image"},
                "question": {"kind": "text"},
                "caption": {"kind": "text"},
                "answers": {"kind": "answers", "role": "target"},
                "captions": {"kind": "text", "role": "target"},
            },
            "image": {"size": 16},
            "text": {"max_length": 12},
            "workers": 0,
        },
        "model": {
            "inputs": ["image", "question", "caption"],
            "encoders": {
                "image": {"type": "cnn", "dim": 16, "channels": [8, 16]},
                "question": {"type": "bag", "dim": 16},
                "caption": {"type": "bag", "dim": 16},
            },
            "fusion": {"dim": 16},
            "tasks": [
                {
                    "type": "caption",
                    "image": "image",
                    "target": "captions",
                    "dim": 16,
                    "layers": 1,
                    "heads": 2,
                    "max_length": 8,
                },
                {"type": "vqa", "target": "answers", "inputs": ["image", "question"], "hidden": 16},
                {"type": "retrieve", "query": "image", "gallery": "caption", "dim": 16},
            ],
        },
        "train": {"epochs": 1, "batch_size": 8, "out_dir": str(out)},
    }


@pytest.fixture(scope="session")
def served_model(tmp_path_factory: pytest.TempPathFactory) -> ServedModel:
    root = tmp_path_factory.mktemp("served_model")
    world = root / "world"
    generate(world, n=SCENES, seed=0, image_size=32)
    manifest = write_served_manifest(world)
    run = run_training(validate(served_config(manifest, root / "runs")), log=lambda m: None)
    index = VectorIndex.build(run.model_dir, manifest, "image", root / "index")
    first = json.loads(manifest.read_text(encoding="utf-8").splitlines()[0])
    return ServedModel(run.model_dir, index.directory, world, world / first["image"])
