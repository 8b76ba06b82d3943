"""Every fusion method on three tasks: test accuracy, parameters and training time.

The tasks are the packaged configs, each on its own generated data and unchanged except for
``model.fusion.type`` (and the epochs given here): the ShapeWorld statement (image + statement
-> true/false), the ShapeWorld tri-modal label (image + text + sound) and the driving decision
(camera + track + road condition). On ShapeWorld the image and sound encoders start from
retrieval models trained once on the same scenes and stay frozen (their features computed once),
as ``example_shapeworld.py`` does: one bit per scene teaches them too slowly, and the methods
then compare on what they are, ways of fusing. Each run trains from the same seed on the same
split, one after another in this process; the table goes to ``docs/fusion_table.md`` and every
number to ``benchmarks/results/fusion_table.json``.

    python benchmarks/fusion_table.py [--rows 4000] [--epochs 8] [--work DIR] [--quick]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from example_shapeworld import retrieval_encoders, start_from_retrieval
from machine import load_average, machine, write_report
from study import Study, add_study_options, markdown

from polymodal.data.driving import generate as generate_driving
from polymodal.data.shapeworld import generate as generate_shapeworld
from polymodal.models.fusion import FUSIONS

TASKS = {  # name -> (packaged config, the task whose accuracy is reported)
    "statement": ("shapeworld_statement", "classify_label"),
    "trimodal": ("shapeworld_trimodal", "classify_trimodal"),
    "driving": ("driving", "classify_decision"),
}
RESULTS = Path("benchmarks/results/fusion_table.json")
TABLE = Path("docs/fusion_table.md")


def manifests(work: Path, rows: int, seed: int) -> dict[str, Path]:
    """The data each task trains on, generated once into ``work``."""
    shapeworld = generate_shapeworld(work / "shapeworld", n=rows, seed=seed, sound=True)
    driving = generate_driving(work / "driving", n=rows, seed=seed)
    return {"statement": shapeworld, "trimodal": shapeworld, "driving": driving}


def run(
    work: Path, rows: int, epochs: int, seed: int, fusions: list[str], report: dict[str, Any]
) -> dict[str, Any]:
    data = manifests(work, rows, seed)
    encoders = retrieval_encoders(data["statement"], work / "encoders", seed)
    report["encoders_from"] = encoders.results
    scores: dict[str, dict[str, Any]] = {}
    for task, (config_name, key) in TASKS.items():
        study = Study(config_name, data[task], work / task, seed=seed)
        for fusion in fusions:
            config = study.config(f"{task}_{fusion}", fusion=fusion, epochs=epochs)
            if data[task] == data["statement"]:  # ShapeWorld
                start_from_retrieval(config, encoders)
            study.train(config)
            result = study.results[config.name]
            scores.setdefault(fusion, {})[task] = {
                "accuracy": result["test"][key]["accuracy"],
                "parameters": result["parameters"],
                "train_seconds": result["train_seconds"],
            }
    return scores


def table(scores: dict[str, dict[str, Any]], rows: int, epochs: int, threads: int | None) -> str:
    header = ["fusion"]
    for task in TASKS:
        header += [f"{task} accuracy", f"{task} parameters", f"{task} seconds"]
    body = []
    for fusion, by_task in scores.items():
        line: list[Any] = [fusion]
        for task in TASKS:
            s = by_task[task]
            line += [s["accuracy"], f"{s['parameters']:,}", f"{s['train_seconds']:.0f}"]
        body.append(line)
    threads_used = threads or "as many as are free"
    intro = (
        f"Every fusion method, {rows} generated rows per data set, {epochs} epochs, test split "
        "accuracy; parameters of the whole model; training seconds on the machine in "
        f"{RESULTS}, torch threads per run: {threads_used}. On ShapeWorld the image and sound "
        "encoders start from retrieval models and stay frozen (see the script). Reproduce: "
        "`python benchmarks/fusion_table.py`."
    )
    return f"# Fusion methods compared\n\n{intro}\n\n" + markdown(header, body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=4000)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--quick", action="store_true", help="400 rows, 1 epoch, 3 fusions")
    add_study_options(parser)
    args = parser.parse_args()
    Study.configure(args)
    rows, epochs = (400, 1) if args.quick else (args.rows, args.epochs)
    fusions = ["concat", "gated", "graph"] if args.quick else sorted(FUSIONS)
    start = time.perf_counter()
    report: dict[str, Any] = {"machine": machine(), "load_average_start": load_average()}
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        scores = run(work, rows, epochs, args.seed, fusions, report)
        report.update({"rows": rows, "epochs": epochs, "seed": args.seed, "threads": args.threads})
        report["scores"] = scores
        text = table(scores, rows, epochs, args.threads)
        print(text)
        if args.quick:  # a smoke run: its numbers stay in the work folder
            write_report(report, start, work / "fusion_table.json")
            return
    TABLE.write_text(text + "\n", encoding="utf-8")
    write_report(report, start, RESULTS)


if __name__ == "__main__":
    main()
