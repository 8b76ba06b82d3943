"""The ShapeWorld examples with sound: what each subset of modalities knows, and what is lost
when one goes missing.

Generates ShapeWorld with its sound track and trains, on one split:

- ``trimodal``: the packaged ``shapeworld_trimodal`` config on every subset of image,
  statement and sound (the label needs all three; any two stay at 0.75, answering "false"),
  each run within ``--trimodal-minutes`` if given (``train.max_minutes``). The image encoder
  starts from an image <-> caption retrieval model and the sound encoder from a sound <-> image
  retrieval model, both frozen and precomputed (``retrieval_encoders``): one bit per scene
  teaches them too slowly from scratch;
- ``missing``: the packaged ``shapeworld_largest`` config (the largest shape, carried by each
  modality alone) with ``train.modality_dropout`` as packaged and without it, each scored
  with all inputs and with one modality absent from every test row;
- ``retrieval``: sound <-> image retrieval (the largest config's encoders, a retrieval task);
  chance R@K is K / gallery size;
- ``lit``: image <-> caption retrieval with frozen packaged towers (MiniLM, EfficientNet-Lite0;
  features precomputed once) and trained projections, LiT-style, beside the packaged
  from-scratch dual encoder, on the first ``--lit-rows`` scenes (EfficientNet reads 224 px
  images at about 0.14 s each on 2 cores).

    python benchmarks/example_shapeworld.py [--rows 8000] [--parts trimodal,missing,...]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

from study import Study, add_study_options, markdown, subsets

from polymodal.config import PretrainedEncoderConfig, RetrieveConfig, RunConfig
from polymodal.data.shapeworld import generate

PARTS = ("trimodal", "missing", "retrieval", "lit")


class RetrievalEncoders(NamedTuple):
    """Saved retrieval models whose encoders the ShapeWorld classifiers start from."""

    caption: Path  # image <-> caption
    sound: Path  # sound <-> image, its image encoder the caption model's, frozen
    results: dict[str, Any]  # their test scores, times and sizes


def retrieval_encoders(manifest: Path, work: Path, seed: int) -> RetrievalEncoders:
    """Train image <-> caption retrieval (the packaged config), then sound <-> image retrieval
    with that image encoder frozen."""
    captions = Study("shapeworld_retrieval", manifest, work, seed=seed)
    caption = captions.train(captions.config("image_caption")).model_dir
    sounds = Study("shapeworld_largest", manifest, work, seed=seed)
    config = sounds.config("audio_image", inputs=["audio", "image"], modality_dropout=0.0)
    freeze(config, "image", caption)
    config.model.tasks = [RetrieveConfig(query="audio", gallery="image", dim=128)]
    sound = sounds.train(config).model_dir
    return RetrievalEncoders(caption, sound, {**captions.results, **sounds.results})


def freeze(config: RunConfig, field: str, model_dir: Path, source: str | None = None) -> None:
    """``field``'s encoder starts from ``source``'s (default: its own) in ``model_dir``, frozen
    and computed once per row (``precompute``)."""
    encoder = config.model.encoders[field]
    encoder.init_from, encoder.init_field = model_dir, source
    encoder.freeze = encoder.precompute = True


def start_from_retrieval(config: RunConfig, encoders: RetrievalEncoders) -> RunConfig:
    """The image encoder from the caption model and a sound encoder from the sound model,
    frozen, for whichever of them ``config`` reads."""
    for field, spec in config.data.fields.items():
        if field not in config.model.encoders:
            continue
        if spec.kind == "image":
            freeze(config, field, encoders.caption)
        elif spec.kind == "audio":
            freeze(config, field, encoders.sound, "audio")
    return config


def trimodal(manifest: Path, work: Path, seed: int, minutes: float | None) -> str:
    encoders = retrieval_encoders(manifest, work / "trimodal", seed)
    study = Study("shapeworld_trimodal", manifest, work / "trimodal", seed=seed)
    rows = []
    for inputs in subsets(["image", "statement", "paired_audio"]):
        config = study.config("_".join(inputs), inputs=inputs, max_minutes=minutes)
        run = study.train(start_from_retrieval(config, encoders))
        test = study.results[run.run_dir.name]["test"]["classify_trimodal"]
        rows.append([" + ".join(inputs), test["accuracy"], test["f1_macro"]])
    table = markdown(["inputs", "accuracy", "f1_macro"], rows)
    study.write(
        "shapeworld_trimodal", table, {"max_minutes": minutes, "encoders_from": encoders.results}
    )
    return "trimodal"


def missing(manifest: Path, work: Path, seed: int) -> str:
    study = Study("shapeworld_largest", manifest, work / "missing", seed=seed)
    fields = study.base.model.inputs or []
    dropout = study.base.train.modality_dropout
    rows = []
    for rate in (dropout, 0.0):
        run = study.train(study.config(f"dropout_{rate:g}", modality_dropout=rate))
        full = study.results[run.run_dir.name]["test"]["classify_largest"]["accuracy"]
        without = study.without(run, fields)
        kept = {f: without[f]["classify_largest"]["accuracy"] for f in fields}
        rows.append([f"{rate:g}", full, *(kept[f] for f in fields), min(kept.values()) / full])
    header = ["modality_dropout", "all inputs", *(f"without {f}" for f in fields), "worst kept"]
    study.write("shapeworld_missing", markdown(header, rows))
    return "missing"


def retrieval(manifest: Path, work: Path, seed: int) -> str:
    study = Study("shapeworld_largest", manifest, work / "retrieval", seed=seed)
    config = study.config("audio_image", inputs=["audio", "image"], modality_dropout=0.0)
    config.model.tasks = [RetrieveConfig(query="audio", gallery="image", dim=128)]
    run = study.train(config)
    scores = study.results[run.run_dir.name]["test"]["retrieve_audio_image"]
    size = scores["gallery_size"]
    rows = []
    for direction in ("audio_to_image", "image_to_audio"):
        recalls = {k: v for k, v in scores[direction].items() if k.startswith("R@")}
        rows.append(
            [direction.replace("_", " "), *recalls.values(), scores[direction]["median_rank"]]
        )
    chance = ["chance", *(int(k[2:]) / size for k in recalls), (size + 1) / 2]
    header = ["direction", *recalls, "median rank"]
    study.write("shapeworld_audio_image", markdown(header, [*rows, chance]))
    return "retrieval"


def lit(manifest: Path, work: Path, seed: int, rows: int) -> str:
    subset = work / "lit" / "manifest.jsonl"
    subset.parent.mkdir(parents=True, exist_ok=True)
    with manifest.open(encoding="utf-8") as src:
        lines = [next(src) for _ in range(rows)]
    subset.write_text("".join(lines), encoding="utf-8")
    # relative image paths resolve from the manifest's folder
    (subset.parent / "images").symlink_to(manifest.parent / "images")
    study = Study("shapeworld_retrieval", subset, work / "lit", seed=seed)
    table: list[list[Any]] = []
    frozen = {"freeze": True, "precompute": True}
    configs = {"from scratch (CNN + transformer)": study.config("scratch")}
    locked = study.config("lit", epochs=study.base.train.epochs)
    locked.model.encoders = {
        "image": PretrainedEncoderConfig(model="efficientnet-lite0", **frozen),
        "caption": PretrainedEncoderConfig(model="minilm", **frozen),
    }
    configs["LiT: frozen EfficientNet-Lite0 + MiniLM"] = locked
    for label, config in configs.items():
        run = study.train(config)
        result = study.results[run.run_dir.name]
        scores = result["test"]["retrieve_image_caption"]
        table.append(
            [
                label,
                scores["image_to_caption"]["R@1"],
                scores["image_to_caption"]["R@10"],
                scores["caption_to_image"]["R@1"],
                scores["caption_to_image"]["R@10"],
                f"{result['parameters']:,}",
                f"{result['train_seconds']:.0f}",
            ]
        )
    header = ["model", "i2t R@1", "i2t R@10", "t2i R@1", "t2i R@10", "parameters", "seconds"]
    study.write("shapeworld_lit", markdown(header, table), {"rows": rows})
    return "lit"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=8000)
    parser.add_argument("--lit-rows", type=int, default=1500)
    parser.add_argument(
        "--trimodal-minutes", type=float, default=None, help="time budget of each trimodal run"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--parts", default=",".join(PARTS))
    parser.add_argument("--work", type=Path, default=None)
    add_study_options(parser)
    args = parser.parse_args()
    Study.configure(args)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        manifest = work / "shapeworld" / "manifest.jsonl"
        if not manifest.is_file():
            manifest = generate(work / "shapeworld", n=args.rows, seed=args.seed, sound=True)
        for part in args.parts.split(","):
            if part == "trimodal":
                trimodal(manifest, work, args.seed, args.trimodal_minutes)
            elif part == "missing":
                missing(manifest, work, args.seed)
            elif part == "retrieval":
                retrieval(manifest, work, args.seed)
            elif part == "lit":
                lit(manifest, work, args.seed, args.lit_rows)
            else:
                parser.error(f"--parts: unknown part {part!r}; parts: {', '.join(PARTS)}")


if __name__ == "__main__":
    main()
