"""The ``polymodal`` command: data, train, eval, predict, demo.

Heavy modules are imported inside each command, so ``polymodal --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from polymodal import __version__
from polymodal.errors import ConfigError, PolymodalError


def _console() -> Any:
    from rich.console import Console

    return Console(highlight=False)


def _cmd_generate(args: argparse.Namespace) -> int:
    from polymodal.data.shapeworld import generate

    manifest = generate(
        args.out,
        n=args.n,
        seed=args.seed,
        image_size=args.image_size,
        statement_mix=_statement_mix(args.statement_mix),
        progress=not args.quiet,
    )
    print(f"wrote {args.n} scenes: {manifest}")
    return 0


def _statement_mix(text: str | None) -> dict[str, float] | None:
    """``existence=0.5,spatial=0.5`` -> {"existence": 0.5, "spatial": 0.5}."""
    if text is None:
        return None
    mix = {}
    for part in text.split(","):
        kind, _, weight = part.partition("=")
        try:
            mix[kind.strip()] = float(weight)
        except ValueError:
            raise ConfigError(
                f"--statement-mix {text!r}: expected type=weight pairs separated by commas, "
                "e.g. existence=0.5,count=0.25,spatial=0.25"
            ) from None
    return mix


def _cmd_inspect(args: argparse.Namespace) -> int:
    from polymodal.data.inspection import inspect_manifest, render_inspection

    report = inspect_manifest(
        args.manifest,
        config=args.config,
        target=args.target,
        labels=args.labels,
        quarantine_path=args.quarantine,
    )
    if args.json:
        print(json.dumps(report, indent=1, ensure_ascii=False))
    else:
        render_inspection(report, _console())
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from polymodal.config import load_config
    from polymodal.train.run import run_training

    overrides = list(args.set or [])
    if args.strict:
        overrides.append("data.strict=true")
    config = load_config(args.config, overrides)
    result = run_training(config, print)
    print(json.dumps(result.test, indent=1))
    print(f"best model: {result.model_dir}\nrun files: {result.run_dir}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from polymodal.evaluate.run import evaluate_run

    scores = evaluate_run(args.run_dir, args.split)
    text = json.dumps(scores, indent=1)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text, encoding="utf-8")
    print(text)
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from polymodal.errors import DataError
    from polymodal.predictor import Predictor

    path = Path(args.input)
    if not path.is_file():
        problem = "is a folder" if path.is_dir() else "does not exist"
        raise DataError(f"--input {path} {problem}; pass a JSON file holding one row object")
    try:
        row = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"--input {path} is not valid JSON: {err}") from None
    rows = row if isinstance(row, list) else [row]
    predictions = Predictor.from_pretrained(args.model_dir).predict(rows, path.parent)
    print(json.dumps(predictions if isinstance(row, list) else predictions[0], indent=1))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from polymodal.demo import run_demo

    run_demo(Path(args.out), n=args.n, seed=args.seed)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="polymodal", description="Build, train, evaluate and serve multimodal models."
    )
    parser.add_argument("--version", action="version", version=f"polymodal {__version__}")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = commands.add_parser("data", help="generate or inspect data")
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    gen = data_commands.add_parser("generate", help="write a built-in synthetic dataset")
    gen.add_argument("dataset", choices=["shapeworld"])
    gen.add_argument("--out", required=True, help="output folder")
    gen.add_argument("--n", type=int, default=5000, help="number of scenes")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--image-size", type=int, default=64)
    gen.add_argument(
        "--statement-mix",
        help="weights of the statement types, e.g. existence=0.5,count=0.25,spatial=0.25 "
        "(default existence=0.75,count=0.25)",
    )
    gen.set_defaults(func=_cmd_generate)
    ins = data_commands.add_parser("inspect", help="fields, kinds, counts, presence, bad rows")
    ins.add_argument("manifest")
    ins.add_argument("--config", help="a run config whose data section (fields, labels) applies")
    ins.add_argument("--target", help="the target column, when fields are inferred")
    ins.add_argument("--labels", help="comma-separated label set for the target")
    ins.add_argument(
        "--quarantine", help="where to write quarantined rows (default: beside the manifest)"
    )
    ins.add_argument("--json", action="store_true", help="print the report as JSON")
    ins.set_defaults(func=_cmd_inspect)

    train = commands.add_parser("train", help="train a model from a YAML config")
    train.add_argument("config")
    train.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.epochs=3 (repeatable)",
    )
    train.add_argument("--strict", action="store_true", help="any bad row is an error")
    train.set_defaults(func=_cmd_train)

    ev = commands.add_parser("eval", help="evaluate a run's best model on a split")
    ev.add_argument("run_dir")
    ev.add_argument("--split", default="test")
    ev.add_argument("--out", help="also write the scores to this JSON file")
    ev.set_defaults(func=_cmd_eval)

    pred = commands.add_parser("predict", help="predict one row (or a list of rows) from JSON")
    pred.add_argument("model_dir")
    pred.add_argument("--input", required=True, help="JSON file: a row object or a list of them")
    pred.set_defaults(func=_cmd_predict)

    demo = commands.add_parser("demo", help="end-to-end run on built-in ShapeWorld data")
    demo.add_argument("--out", default="polymodal-demo", help="output folder")
    demo.add_argument("--n", type=int, default=8000, help="number of scenes")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.quiet:
        from polymodal.progress import set_quiet

        set_quiet(True)
    try:
        return args.func(args)
    except PolymodalError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
