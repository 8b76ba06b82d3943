"""Multitask beside single-task: the packaged ``shapeworld_multitask`` config (statement
matching, image <-> caption retrieval and object count regression on one model) and a
single-task model of each task, on one split of ShapeWorld scenes (no sound).

Each single-task model is the multitask config with one task and the inputs that task reads,
trained on the same data with the same encoders and schedule:

- ``count``: the image, regressing the number of shapes;
- ``retrieval``: image and caption, the retrieval task;
- ``statement``: image and statement, the classifier, its image encoder started from the
  retrieval model's and frozen (the recipe of the packaged ``shapeworld_statement`` config: one
  true/false bit per scene teaches a CNN colours and shapes slowly).

Writes ``docs/examples/shapeworld_multitask.json`` (every test score, time and size) and
``.md``: each task's main metric (accuracy, mean recall, R²) in points (x 100), single-task
and multitask, and their difference.

    python benchmarks/example_multitask.py [--rows 8000] [--epochs N] [--seed 0] [--work DIR]
        [--threads N] [--reuse]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from example_shapeworld import freeze
from study import Study, add_study_options, markdown

from polymodal.config import FusedTask, RetrieveConfig, RunConfig, TaskConfig
from polymodal.data.shapeworld import generate
from polymodal.tasks import TASKS

CONFIG = "shapeworld_multitask"
ALLOWED_POINTS = 2.0  # how far below its single-task model a task may score
POINTS = ("single_task", "multitask", "difference_points")


def reads(task: TaskConfig) -> list[str]:
    """The inputs a task of the multitask config reads."""
    if isinstance(task, RetrieveConfig):
        return [task.query, task.gallery]
    assert isinstance(task, FusedTask) and task.inputs, f"{task.name}: name its inputs"
    return task.inputs


def single_task(study: Study, task: TaskConfig, train: dict[str, Any]) -> RunConfig:
    """The multitask config with only ``task`` and the inputs it reads."""
    config = study.config(task.name, inputs=reads(task), **train)
    config.model.tasks = [task]
    return config


def compare(study: Study, train: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Train the single-task models (retrieval first: the statement classifier starts from its
    image encoder) and the multitask model; each task's main metric in points, both ways."""
    tasks = {task.name: task for task in study.base.model.tasks}
    retrieval = study.train(single_task(study, tasks["retrieve_image_caption"], train))
    statement = single_task(study, tasks["classify_label"], train)
    freeze(statement, "image", retrieval.model_dir)
    singles = {
        "retrieve_image_caption": retrieval,
        "classify_label": study.train(statement),
        "regress_count": study.train(single_task(study, tasks["regress_count"], train)),
    }
    multitask = study.train(study.config("multitask", **train))
    comparison = {}
    for name, task in tasks.items():
        metric = TASKS[task.type].main_metric
        single = 100 * singles[name].test[name][metric]
        multi = 100 * multitask.test[name][metric]
        comparison[name] = {
            "metric": metric,
            "single_task": round(single, 2),
            "multitask": round(multi, 2),
            "difference_points": round(multi - single, 2),
        }
    return comparison


def table(study: Study, comparison: dict[str, dict[str, Any]]) -> str:
    scores = markdown(
        ["task", "metric", "single-task", "multitask", "difference (points)"],
        [[name, c["metric"], *(f"{c[k]:.1f}" for k in POINTS)] for name, c in comparison.items()],
    )
    sizes = markdown(
        ["model", "inputs", "parameters", "train seconds"],
        [
            [name, " + ".join(r["inputs"]), f"{r['parameters']:,}", f"{r['train_seconds']:.0f}"]
            for name, r in study.results.items()
        ],
    )
    return f"{scores}\n\n{sizes}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=8000)
    parser.add_argument(
        "--epochs", type=int, default=None, help="epochs of every run; default: the config's"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=None)
    add_study_options(parser)
    args = parser.parse_args()
    Study.configure(args)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        manifest = work / "shapeworld" / "manifest.jsonl"
        if not manifest.is_file():
            manifest = generate(work / "shapeworld", n=args.rows, seed=args.seed)
        study = Study(CONFIG, manifest, work, seed=args.seed)
        comparison = compare(study, {} if args.epochs is None else {"epochs": args.epochs})
        worst = min(c["difference_points"] for c in comparison.values())
        extra = {
            "rows": args.rows,
            "epochs": args.epochs or study.base.train.epochs,
            "comparison": comparison,
            "worst_difference_points": worst,
            "allowed_points_below": ALLOWED_POINTS,
            "within_allowed": worst >= -ALLOWED_POINTS,
        }
        study.write(CONFIG, table(study, comparison), extra)


if __name__ == "__main__":
    main()
