"""Captioning ShapeWorld: greedy against beam search on held-out scenes, and how fast 1,000
images are captioned.

Trains the packaged ``shapeworld_caption`` config on N generated scenes (``--reuse`` reads back
a finished run), scores its test split with every COCO caption metric for greedy decoding and
beam 3, then times the model captioning 1,000 preprocessed images (image encoder + search,
batches of 250) in the same process, medians of ``--repeats``, at 1 and 2 threads: greedy,
beam 3 with the key/value cache (what ``polymodal`` runs), and the baseline, the same beam
search rerunning the decoder over the whole prefix at every step.

Writes ``benchmarks/results/caption_decoding.json`` (every number and the machine) and
``docs/examples/shapeworld_caption.{json,md}``.

    python benchmarks/caption_decoding.py [--rows 4000] [--images 1000] [--repeats 3] [--epochs N]
        [--work DIR] [--threads N] [--reuse]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import torch
from machine import load_average, machine, write_report
from study import Study, add_study_options, markdown

import polymodal.tasks.caption as caption_module
from polymodal.data.dataset import read_all
from polymodal.data.pipeline import Example
from polymodal.data.shapeworld import generate
from polymodal.inference import batches, eval_mode, evaluate_model
from polymodal.models.decoder import DecoderScorer
from polymodal.models.model import MultimodalModel
from polymodal.tasks import Caption

CONFIG = "shapeworld_caption"
RESULTS = Path(__file__).resolve().parent / "results" / "caption_decoding.json"
BATCH = 250
METRICS = ("Bleu_1", "Bleu_4", "ROUGE_L", "CIDEr", "mean_words")


@contextmanager
def decoding(model: MultimodalModel, beam_size: int, cache: bool = True) -> Iterator[None]:
    """The model's caption task searching with ``beam_size`` (and without the key/value cache
    unless ``cache``), restored after."""
    task = next(t for t in model.tasks.values() if isinstance(t, Caption))
    options = task.options
    task.options = dataclasses.replace(options, beam_size=beam_size)
    if not cache:
        caption_module.DecoderScorer = partial(DecoderScorer, cache=False)  # type: ignore[misc]
    try:
        yield
    finally:
        task.options = options
        caption_module.DecoderScorer = DecoderScorer  # type: ignore[misc]


def seconds(model: MultimodalModel, examples: list[Example], repeats: int) -> list[float]:
    """Wall seconds of each of ``repeats`` passes captioning ``examples`` (collated first)."""
    collated = [model.preprocessor.collate(chunk) for chunk in batches(examples, BATCH)]
    times = []
    with eval_mode(model):
        for _ in range(repeats):
            start = time.perf_counter()
            for batch in collated:
                model(batch)
            times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=4000, help="ShapeWorld scenes generated")
    parser.add_argument("--images", type=int, default=1000, help="images captioned when timing")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=None, help="default: the config's")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=None)
    add_study_options(parser)
    args = parser.parse_args()
    Study.configure(args)
    start, load_at_start = time.perf_counter(), load_average()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        folder = work / "shapeworld"
        if not (folder / "captions.jsonl").is_file():
            generate(folder, n=args.rows, seed=args.seed)
        study = Study(CONFIG, folder / "captions.jsonl", work, seed=args.seed)
        epochs = {} if args.epochs is None else {"epochs": args.epochs}
        run = study.train(study.config(CONFIG, **epochs))
        model = MultimodalModel.from_pretrained(run.model_dir)
        data = study.data or study.prepare(study.base)
        test = read_all(data.splits["test"], data.quarantine)
        quality = {}
        for name, beam in (("greedy", 1), ("beam_3", 3)):
            with decoding(model, beam):
                scores = evaluate_model(model, test)
            quality[name] = next(iter(scores.values()))
        rows = [
            example
            for split in ("test", "val", "train")
            for example in read_all(data.splits[split], data.quarantine)
        ][: args.images]
        timing: dict[str, Any] = {}
        for threads in (1, 2):
            torch.set_num_threads(threads)
            for name, beam, cache in (
                ("greedy", 1, True),
                ("beam_3", 3, True),
                ("beam_3_no_cache", 3, False),
            ):
                with decoding(model, beam, cache):
                    times = seconds(model, rows, args.repeats)
                timing[f"{name}_threads_{threads}"] = {
                    "seconds": [round(t, 3) for t in times],
                    "median_seconds": round(statistics.median(times), 3),
                    "images_per_second": round(len(rows) / statistics.median(times), 1),
                }
            cached, rerun = (
                timing[f"{key}_threads_{threads}"]["median_seconds"]
                for key in ("beam_3", "beam_3_no_cache")
            )
            timing[f"cache_speedup_threads_{threads}"] = round(rerun / cached, 2)
    report = {
        "config": CONFIG,
        "scenes": args.rows,
        "test_rows": quality["greedy"]["rows"],
        "quality": quality,
        "beam_no_worse_than_greedy": quality["beam_3"]["CIDEr"] >= quality["greedy"]["CIDEr"],
        "timed_images": len(rows),
        "batch_size": BATCH,
        "timing": timing,
        "train_seconds": study.results[CONFIG].get("train_seconds"),
        "machine": machine(),
        "load_average_start": load_at_start,
    }
    table = markdown(
        ["decoding", *METRICS],
        [[name, *(scores.get(metric) for metric in METRICS)] for name, scores in quality.items()],
    )
    speed = markdown(
        ["threads", "greedy s", "beam 3 s", "beam 3 without cache s", "cache speed-up"],
        [
            [
                threads,
                *(
                    timing[f"{key}_threads_{threads}"]["median_seconds"]
                    for key in ("greedy", "beam_3", "beam_3_no_cache")
                ),
                timing[f"cache_speedup_threads_{threads}"],
            ]
            for threads in (1, 2)
        ],
    )
    study.write(
        CONFIG,
        f"{table}\n\nCaptioning {len(rows)} images (median seconds of {args.repeats}):\n\n{speed}",
        report,
    )
    write_report(report, start, RESULTS)


if __name__ == "__main__":
    main()
