"""ONNX Runtime against eager PyTorch: parity, speed at batch 1 and 32, and what int8 costs.

Trains (``--reuse`` reads back a finished run) the demo's two models (image <-> caption
retrieval, the statement classifier on image + statement), the ShapeWorld caption model and
the easy-VQA model from their packaged configs, exports each with ``polymodal export``, and in
one process:

- parity: every output of the eager Predictor and the ONNX Runtime one on the test rows
  (max absolute difference of each float output, equality of decoded tokens);
- speed: the model's forward (encoders, fusion, heads; search for captions) on preprocessed
  batches of 1 and 32 test rows, eager then ONNX Runtime, each timed over the same batches,
  median of ``--repeats``, at ``--threads`` threads (PyTorch's and ONNX Runtime's intra-op);
- int8: each test metric eager fp32, ONNX fp32 and ONNX with int8 weights.

Writes ``benchmarks/results/onnx_speed.json`` (every number and the machine).

    python benchmarks/onnx_speed.py [--rows 4000] [--epochs N] [--batches 20] [--repeats 5]
        [--work DIR] [--threads 1] [--reuse]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from machine import load_average, machine, write_report
from study import Study, add_study_options, markdown

from polymodal.data.dataset import read_all
from polymodal.data.pipeline import Example
from polymodal.data.shapeworld import generate
from polymodal.data.sources import convert_easyvqa
from polymodal.export import differences, export_onnx, quantize_export
from polymodal.inference import batches, evaluate_model
from polymodal.models.model import MultimodalModel
from polymodal.onnx_backend import OnnxRunner
from polymodal.predictor import Predictor

RESULTS = Path(__file__).resolve().parent / "results" / "onnx_speed.json"
MODELS = {  # name -> (packaged config, the ShapeWorld view or data set it reads)
    "demo_retrieval": ("shapeworld_retrieval", "manifest.jsonl"),
    "demo_statement": ("shapeworld_statement", "manifest.jsonl"),
    "caption": ("shapeworld_caption", "captions.jsonl"),
    "easyvqa": ("easyvqa", "easyvqa"),
}
PARITY_ROWS = 256


def seconds_per_batch(forward: Callable[[Any], Any], collated: list[Any], repeats: int) -> float:
    """Median over ``repeats`` of the mean wall seconds ``forward`` takes per batch."""
    forward(collated[0])  # warm-up: first-call allocations and lazy initialisation
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for batch in collated:
            forward(batch)
        times.append((time.perf_counter() - start) / len(collated))
    return statistics.median(times)


def max_differences(eager: Predictor, onnx: Predictor, examples: list[Example]) -> dict[str, float]:
    """Each output's max absolute difference over ``examples`` (decoded tokens: 0 when all
    equal, else inf), in batches of 32."""
    worst: dict[str, float] = {}
    collate = eager.model.preprocessor.collate
    for chunk in batches(examples, 32):
        batch = collate(chunk)
        for key, diff in differences(eager.forward(batch), onnx.forward(batch)).items():
            worst[key] = max(worst.get(key, 0.0), diff)
    return worst


def main_metrics(
    model: MultimodalModel, test: list[Example], run: Callable[[Any], Any] | None
) -> dict[str, float]:
    """Each task's main test metric, by the eager model or by ``run``."""
    scores = evaluate_model(model, test, run=run)
    return {name: scores[name][task.main_metric] for name, task in model.tasks.items()}


def bench_model(
    name: str, model_dir: Path, test: list[Example], args: argparse.Namespace, work: Path
) -> dict[str, Any]:
    onnx_dir = work / "onnx" / name
    start = time.perf_counter()
    export_onnx(model_dir, onnx_dir, log=lambda message: None)
    export_seconds = time.perf_counter() - start
    int8_dir = work / "onnx" / f"{name}_int8"
    quantize_export(onnx_dir, int8_dir, log=lambda message: None)
    threads = args.threads or torch.get_num_threads()
    eager = Predictor.from_pretrained(model_dir)
    onnx = Predictor(eager.model, runner=OnnxRunner(onnx_dir, threads))
    int8 = Predictor(eager.model, runner=OnnxRunner(int8_dir, threads))
    collate = eager.model.preprocessor.collate
    speed = {}
    for size in (1, 32):
        rows = test[: size * args.batches]
        collated = [collate(chunk) for chunk in batches(rows, size)]
        eager_s = seconds_per_batch(eager.forward, collated, args.repeats)
        onnx_s = seconds_per_batch(onnx.forward, collated, args.repeats)
        int8_s = seconds_per_batch(int8.forward, collated, args.repeats)
        speed[f"batch_{size}"] = {
            "eager_ms": round(1000 * eager_s, 3),
            "onnx_ms": round(1000 * onnx_s, 3),
            "onnx_int8_ms": round(1000 * int8_s, 3),
            "onnx_speedup": round(eager_s / onnx_s, 2),
            "onnx_int8_speedup": round(eager_s / int8_s, 2),
        }
    parity = max_differences(eager, onnx, test[:PARITY_ROWS])
    metrics = {
        "eager": main_metrics(eager.model, test, None),
        "onnx": main_metrics(eager.model, test, onnx.forward),
        "onnx_int8": main_metrics(eager.model, test, int8.forward),
    }
    return {
        "model_dir": str(model_dir),
        "parameters": sum(p.numel() for p in eager.model.parameters()),
        "export_seconds": round(export_seconds, 1),
        "parity_rows": min(PARITY_ROWS, len(test)),
        "parity_max_abs_difference": parity,
        "parity_worst": max(parity.values()),
        "speed": speed,
        "test_metrics": metrics,
        "test_rows": len(test),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=4000, help="ShapeWorld scenes generated")
    parser.add_argument("--epochs", type=int, default=None, help="default: each config's")
    parser.add_argument("--batches", type=int, default=20, help="batches timed per size")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    add_study_options(parser)
    args = parser.parse_args()
    Study.configure(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    start, load_at_start = time.perf_counter(), load_average()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        world = work / "shapeworld"
        if not (world / "captions.jsonl").is_file():
            generate(world, n=args.rows, seed=args.seed)
        for name in args.models:
            config, source = MODELS[name]
            if source == "easyvqa":
                manifest = work / "easyvqa" / "manifest.jsonl"
                if not manifest.is_file():
                    convert_easyvqa(manifest.parent)
            else:
                manifest = world / source
            study = Study(config, manifest, work, seed=args.seed)
            epochs = {} if args.epochs is None else {"epochs": args.epochs}
            trained = study.train(study.config(name, **epochs))
            data = study.data or study.prepare(study.base)
            test = read_all(data.splits["test"], data.quarantine)
            results[name] = bench_model(name, trained.model_dir, test, args, work)
            results[name]["config"] = config
            print(f"{name}: {results[name]['speed']} parity {results[name]['parity_worst']:.1e}")
    report = {
        "models": results,
        "threads": args.threads or torch.get_num_threads(),
        "goal": "ONNX Runtime >= 1.5x eager at batch 1",
        "machine": machine(),
        "load_average_start": load_at_start,
    }
    print(
        markdown(
            [
                "model",
                "parity",
                "b1 eager ms",
                "b1 onnx ms",
                "b1 x",
                "b32 eager ms",
                "b32 onnx ms",
                "b32 x",
                "int8 b1 x",
                "metric eager / onnx / int8",
            ],
            [
                [
                    name,
                    f"{r['parity_worst']:.1e}",
                    r["speed"]["batch_1"]["eager_ms"],
                    r["speed"]["batch_1"]["onnx_ms"],
                    r["speed"]["batch_1"]["onnx_speedup"],
                    r["speed"]["batch_32"]["eager_ms"],
                    r["speed"]["batch_32"]["onnx_ms"],
                    r["speed"]["batch_32"]["onnx_speedup"],
                    r["speed"]["batch_1"]["onnx_int8_speedup"],
                    " / ".join(
                        ", ".join(f"{v:.4f}" for v in r["test_metrics"][k].values())
                        for k in ("eager", "onnx", "onnx_int8")
                    ),
                ]
                for name, r in results.items()
            ],
        )
    )
    write_report(report, start, RESULTS)


if __name__ == "__main__":
    main()
