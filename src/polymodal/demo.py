"""``polymodal demo``: ShapeWorld -> fused vs single-modality classifiers + retrieval -> results."""

from __future__ import annotations

import json
import time
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from polymodal.config import RunConfig, validate
from polymodal.data.pipeline import prepare_data
from polymodal.data.shapeworld import generate
from polymodal.data.sources import LINE_KEY
from polymodal.inference import evaluate_model
from polymodal.io import write_json
from polymodal.models.model import MultimodalModel
from polymodal.train.run import RunResult, fresh_directory, run_training

STATEMENT_VARIANTS = {  # results key -> the inputs the classifier reads
    "accuracy": ["image", "statement"],
    "accuracy_text_only": ["statement"],
    "accuracy_image_only": ["image"],
}


STATEMENT_LABELS = {
    "accuracy": "image + statement (fused)",
    "accuracy_text_only": "statement only",
    "accuracy_image_only": "image only",
}


def packaged_config(config: str, manifest: Path, out_dir: Path, **changes: Any) -> RunConfig:
    """One of the YAML configs shipped in ``polymodal/configs``, pointed at ``manifest``."""
    text = resources.files("polymodal.configs").joinpath(f"{config}.yaml").read_text("utf-8")
    raw = yaml.safe_load(text)
    raw["data"]["manifest"] = str(manifest)
    raw["train"]["out_dir"] = str(out_dir)
    raw.update(changes)
    return validate(raw, f"packaged config {config}")


def _say(console: Any, prefix: str) -> Any:
    from rich.markup import escape

    return lambda message: console.print(f"[dim]{prefix}[/dim] {escape(message)}")


def _retrieval_scores(scores: dict[str, Any]) -> dict[str, Any]:
    def recalls(direction: dict[str, float]) -> dict[str, float]:
        return {k: v for k, v in direction.items() if k.startswith("R@")}

    return {
        "gallery_size": scores["gallery_size"],
        "image_to_text": recalls(scores["image_to_caption"]),
        "text_to_image": recalls(scores["caption_to_image"]),
        "median_rank": {
            "image_to_text": scores["image_to_caption"]["median_rank"],
            "text_to_image": scores["caption_to_image"]["median_rank"],
        },
    }


def _statement_table(statement: dict[str, Any], test_rows: int) -> Any:
    from rich.table import Table

    kinds = sorted(statement["by_type"]["accuracy"])
    table = Table(title=f"Is the statement true of the image? ({test_rows} held-out scenes)")
    table.add_column("classifier reads")
    for column in ["accuracy", *kinds]:
        table.add_column(column, justify="right")
    for key, label in STATEMENT_LABELS.items():
        by_type = statement["by_type"][key]
        table.add_row(label, f"{statement[key]:.3f}", *(f"{by_type[k]:.3f}" for k in kinds))
    return table


def _retrieval_table(retrieval: dict[str, Any]) -> Any:
    from rich.table import Table

    table = Table(title=f"Image <-> caption retrieval (gallery {retrieval['gallery_size']})")
    table.add_column("direction")
    recalls = list(retrieval["image_to_text"])
    for column in [*recalls, "median rank"]:
        table.add_column(column, justify="right")
    for direction in ("image_to_text", "text_to_image"):
        scores = retrieval[direction]
        table.add_row(
            direction.replace("_", " "),
            *(f"{scores[k]:.3f}" for k in recalls),
            f"{retrieval['median_rank'][direction]:g}",
        )
    return table


def _accuracy_by_type(run: RunResult) -> dict[str, float]:
    """Test accuracy of a statement classifier per statement type (existence, count, ...)."""
    test = run.data.splits["test"]
    kinds = {row[LINE_KEY]: row["statement_type"] for row in run.data.index.rows(test.positions)}
    model = MultimodalModel.from_pretrained(run.model_dir)
    return {
        kind: evaluate_model(model, test.subset(lambda line, k=kind: kinds[line] == k))[
            "classify_label"
        ]["accuracy"]
        for kind in sorted(set(kinds.values()))
    }


DEMO_ENTRIES = frozenset({"data", "runs", "results.json"})  # what the demo writes in its folder


def run_demo(out: Path, n: int = 8000, seed: int = 0, overwrite: bool = False) -> dict[str, Any]:
    """Generate ShapeWorld, train four models, evaluate on the held-out split, write results.

    Retrieval trains first: its image encoder, which captions taught to tell colours, shapes
    and their places apart, is where the image-reading statement classifiers start (frozen).
    An ``out`` folder that exists is refused unless ``overwrite``, which clears it first.
    """
    from rich.console import Console
    from rich.markup import escape

    console = Console(highlight=False)
    start = time.perf_counter()
    fresh_directory(
        out, overwrite, lambda path: {p.name for p in path.iterdir()} <= DEMO_ENTRIES, "demo folder"
    )
    console.print(
        f"[bold]polymodal demo[/bold]: generating {n} ShapeWorld scenes in "
        + escape(str(out / "data"))
    )
    manifest = generate(out / "data", n=n, seed=seed)
    runs_dir = out / "runs"

    config = packaged_config("shapeworld_retrieval", manifest, runs_dir, seed=seed)
    console.print("[bold]training[/bold] image <-> caption retrieval")
    retrieval_run = run_training(config, _say(console, "retrieval"))
    retrieval = _retrieval_scores(retrieval_run.test["retrieve_image_caption"])

    statement: dict[str, Any] = {"by_type": {}}
    runs: dict[str, RunResult] = {}
    shared_data = None
    for key, inputs in STATEMENT_VARIANTS.items():
        name = "statement_" + "_".join(inputs)
        config = packaged_config("shapeworld_statement", manifest, runs_dir, name=name, seed=seed)
        config.model.inputs = inputs
        config.model.encoders = {k: v for k, v in config.model.encoders.items() if k in inputs}
        if "image" in inputs:  # start from the retrieval model's image encoder, frozen
            config.model.encoders["image"].init_from = retrieval_run.model_dir
            config.model.encoders["image"].freeze = True
        # Image preprocessing has nothing fitted, so all three variants read the data once.
        shared_data = shared_data or prepare_data(config.data, seed)
        console.print(f"[bold]training[/bold] statement classifier on {' + '.join(inputs)}")
        runs[name] = run_training(config, _say(console, name), data=shared_data)
        statement[key] = runs[name].test["classify_label"]["accuracy"]
        statement["by_type"][key] = _accuracy_by_type(runs[name])

    results = {
        "statement_matching": statement,
        "retrieval": retrieval,
        "models": {
            name: str(run.model_dir) for name, run in {**runs, "retrieval": retrieval_run}.items()
        },
        "data": {
            "manifest": str(manifest),
            "scenes": n,
            "seed": seed,
            "test_rows": len(shared_data.splits["test"]) if shared_data else 0,
        },
        "seconds": round(time.perf_counter() - start, 1),
    }
    write_json(out / "results.json", results)

    console.print(_statement_table(statement, results["data"]["test_rows"]))
    console.print(_retrieval_table(retrieval))
    for name, path in results["models"].items():
        console.print(f"saved model [bold]{name}[/bold]: {escape(path)}")
    console.print(f"results: {escape(str(out / 'results.json'))}  ({results['seconds']:.0f} s)")
    return json.loads((out / "results.json").read_text())
