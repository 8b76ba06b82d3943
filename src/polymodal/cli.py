"""The ``polymodal`` command: data, train, eval, predict, demo, models, config.

Heavy modules are imported inside each command, so ``polymodal --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from polymodal import __version__
from polymodal.errors import ConfigError, DataError, PolymodalError


def _console() -> Any:
    from rich.console import Console

    return Console(highlight=False)


GENERATE_OPTIONS = {  # the options of `data generate` beyond --out, --n and --seed
    "shapeworld": ("image_size", "statement_mix", "sound"),
    "driving": ("image_size",),
    "voice_commands": (),
}


def _cmd_generate(args: argparse.Namespace) -> int:
    given = [k for k in ("image_size", "statement_mix", "sound") if getattr(args, k) is not None]
    if wrong := [k for k in given if k not in GENERATE_OPTIONS[args.dataset]]:
        flags = ", ".join("--" + k.replace("_", "-") for k in wrong)
        raise ConfigError(f"{flags}: not an option of the {args.dataset} dataset")
    common = {"n": args.n, "seed": args.seed, "progress": not args.quiet}
    image_size = 64 if args.image_size is None else args.image_size
    if args.dataset == "shapeworld":
        from polymodal.data.shapeworld import generate

        manifest = generate(
            args.out,
            image_size=image_size,
            statement_mix=_statement_mix(args.statement_mix),
            sound=args.sound is not False,
            **common,
        )
        print(f"wrote {args.n} scenes: {manifest}")
        return 0
    if args.dataset == "driving":
        from polymodal.data.driving import generate as generate_driving

        manifest = generate_driving(args.out, image_size=image_size, **common)
    else:
        from polymodal.data.voice_commands import generate as generate_voice

        manifest = generate_voice(args.out, **common)
    print(f"wrote {args.n} rows: {manifest}")
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


def _cmd_convert(args: argparse.Namespace) -> int:
    from polymodal.data import sources as s

    convert = {
        "coco-captions": lambda: s.convert_coco_captions(
            args.out,
            s.by_split(args.captions, "captions"),
            s.one_or_by_split(args.images, "--images"),
            args.check_images,
        ),
        "karpathy": lambda: s.convert_karpathy(
            args.out, args.split_file, args.images, args.restval, args.check_images
        ),
        "vqa": lambda: s.convert_vqa(
            args.out,
            s.by_split(args.questions, "--questions"),
            s.one_or_by_split(args.images, "--images"),
            s.by_split(args.annotations or [], "--annotations"),
            args.pairs or [],
            args.image_pattern,
            args.check_images,
        ),
        "easyvqa": lambda: s.convert_easyvqa(args.out, args.val_fraction, args.seed, args.link),
        "image-folder": lambda: s.convert_image_folder(
            args.out,
            s.one_or_by_split(args.root, "ROOT"),
            args.val_fraction,
            args.test_fraction,
            args.seed,
        ),
    }
    print(convert[args.format]().describe())
    return 0


def _add_convert_parser(data_commands: Any, common: argparse.ArgumentParser) -> None:
    """``data convert FORMAT``: one sub-command per published format, each with its inputs."""
    convert = data_commands.add_parser(
        "convert", help="write a manifest from a dataset in its published format"
    )
    formats = convert.add_subparsers(dest="format", required=True, metavar="FORMAT")
    split_file = "SPLIT=FILE, or FILE whose name says train, val or test"
    folders = "one folder for every split, or SPLIT=FOLDER for each"

    def add(name: str, help: str) -> argparse.ArgumentParser:
        sub = formats.add_parser(name, parents=[common], help=help, description=help)
        sub.add_argument("--out", required=True, help="output folder: OUT/manifest.jsonl")
        sub.set_defaults(func=_cmd_convert)
        return sub

    def no_check(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--no-check-images",
            dest="check_images",
            action="store_false",
            help="write every row without looking for its image on disk",
        )

    coco = add("coco-captions", "COCO caption files (captions_train2014.json ...)")
    coco.add_argument("captions", nargs="+", help=split_file)
    coco.add_argument("--images", nargs="+", required=True, help=folders)
    no_check(coco)
    karpathy = add("karpathy", "Karpathy's split file (dataset_coco.json ...)")
    karpathy.add_argument("split_file")
    karpathy.add_argument("--images", required=True, help="the folder of FILEPATH/FILENAME")
    karpathy.add_argument(
        "--restval", choices=["train", "restval"], default="train", help="restval images join"
    )
    no_check(karpathy)
    vqa = add("vqa", "VQA v2 questions, annotations and complementary pairs files")
    vqa.add_argument("--questions", nargs="+", required=True, help=split_file)
    vqa.add_argument("--annotations", nargs="+", help=f"{split_file} (none: rows to predict)")
    vqa.add_argument("--pairs", nargs="+", help="complementary pairs files")
    vqa.add_argument("--images", nargs="+", required=True, help=folders)
    vqa.add_argument(
        "--image-pattern",
        help="image file names, with fields {image_id}, {data_subtype}, {split} "
        "(default: COCO_{data_subtype}_{image_id:012d}.jpg)",
    )
    no_check(vqa)
    easy = add("easyvqa", "easy-VQA from its PyPI package (pip install easy-vqa)")
    easy.add_argument("--val-fraction", type=float, default=0.1, help="train images held out")
    easy.add_argument("--seed", type=int, default=0)
    easy.add_argument("--link", action="store_true", help="link the images instead of copying")
    folder = add("image-folder", "a folder with one sub-folder of images per class")
    folder.add_argument("root", nargs="+", help="ROOT (split by the fractions), or SPLIT=ROOT")
    folder.add_argument("--val-fraction", type=float, default=0.1)
    folder.add_argument("--test-fraction", type=float, default=0.2)
    folder.add_argument("--seed", type=int, default=0)


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


HEADLINE_METRICS = (  # what the end-of-training table shows; results.json holds every metric
    "vqa_accuracy",
    "accuracy",
    "f1_macro",
    "auroc",
    "auroc_ovr_macro",
    "ece_15",
    "R@1",
    "R@5",
    "R@10",
    "median_rank",
    "Bleu_4",
    "METEOR",
    "ROUGE_L",
    "CIDEr",
    "num_examples",
    "gallery_size",
)


def _results_table(title: str, scores: dict[str, dict[str, Any]]) -> Any:
    """One row per headline metric of each task (nested ones, e.g. a retrieval direction, too)."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(title))
    for column in ("task", "metric", "value"):
        table.add_column(column, justify="right" if column == "value" else "left")

    def rows(task: str, prefix: str, values: dict[str, Any]) -> None:
        for key, value in values.items():
            if isinstance(value, dict):
                rows(task, f"{prefix}{key} ", value)
            elif key in HEADLINE_METRICS and isinstance(value, int | float):
                shown = f"{value:.4f}" if isinstance(value, float) else str(value)
                table.add_row(escape(task), escape(prefix + key), shown)

    for task, values in scores.items():
        rows(task, "", values)
    return table


def _cmd_train(args: argparse.Namespace) -> int:
    from polymodal.config import load_config
    from polymodal.train.distributed import shutdown_distributed
    from polymodal.train.run import resume_training, run_training

    try:
        if args.resume:
            if args.config or args.set or args.overwrite:
                raise ConfigError(
                    "train --resume RUN_DIR goes on with the run's own config.yaml; "
                    "give no CONFIG, --set or --overwrite with it"
                )
            result = resume_training(args.resume, print)
        else:
            if not args.config:
                raise ConfigError("train needs a CONFIG file (or --resume RUN_DIR)")
            overrides = list(args.set or [])
            if args.strict:
                overrides.append("data.strict=true")
            if args.device:
                overrides.append(f"train.device={args.device}")
            config = load_config(args.config, overrides)
            result = run_training(config, print, overwrite=args.overwrite)
    finally:
        shutdown_distributed()
    if result.is_main:  # under torchrun, one process reports
        console = _console()
        if result.test:
            console.print(_results_table("test split (every metric: results.json)", result.test))
        else:
            console.print("no test rows: nothing was scored on a held-out split")
        print(f"best model: {result.model_dir}\nrun files: {result.run_dir}")
    return 0


def _cmd_cache(args: argparse.Namespace) -> int:
    from polymodal.config import load_config, task_targets
    from polymodal.data.cache import cache_root
    from polymodal.data.pipeline import prepare_data
    from polymodal.models.encoders.pretrained import field_options
    from polymodal.models.transfer import transferred_preprocessors

    overrides = [f"data.manifest={args.manifest}", "data.cache=disk", *(args.set or [])]
    config = load_config(args.config, overrides)
    root = cache_root(config.data, config.train.out_dir / "cache")
    data = prepare_data(
        config.data,
        config.seed,
        fitted=transferred_preprocessors(config.model),
        targets=task_targets(config.model),
        cache_dir=root,
        field_options=field_options(config.model),
    )
    for name, split in data.splits.items():
        print(f"{name}: {len(split)} rows in {split.store.folder}")  # type: ignore[union-attr]
    if len(data.quarantine):
        counts = ", ".join(f"{n} {reason}" for reason, n in data.quarantine.counts().items())
        print(f"quarantined {len(data.quarantine)} rows: {counts}")
    return 0


def _cmd_transcribe(args: argparse.Namespace) -> int:
    from polymodal.data.transcribe import Transcriber, transcribe_manifest

    report = transcribe_manifest(
        args.manifest,
        args.audio,
        args.out,
        args.text_column,
        args.reference,
        Transcriber(args.model),
    )
    print(
        f"wrote {report.rows} rows to {report.out}: {report.transcribed} transcribed in "
        f"{report.seconds:.1f} s (each file's transcript is cached: a rerun redoes none)"
    )
    for row in report.failed:
        print(f"  line {row.line}: {row.reason}: {row.detail}")
    if report.wer is not None:
        print(f"word error rate: {report.wer:.4f} over {report.scored} rows with a reference")
    elif args.reference:
        print(f"word error rate: no transcribed row has a '{args.reference}' reference")
    return 0


FILE_KINDS = ("captions", "vqa", "retrieval", "classification")
FILE_OPTIONS = {  # what each kind of output file scoring reads
    "captions": ("references", "predictions"),
    "vqa": ("questions", "annotations", "predictions"),
    "retrieval": ("similarity",),
    "classification": ("y_true", "probs"),
}


def _score_files(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    """Score another model's output files (``polymodal eval captions|vqa|...``)."""
    missing = [name for name in FILE_OPTIONS[kind] if getattr(args, name) is None]
    if missing:
        flags = ", ".join("--" + name.replace("_", "-") for name in missing)
        raise ConfigError(f"eval {kind} needs {flags}")
    if kind == "captions":
        from polymodal.metrics.captioning import caption_scores, load_coco_captions

        references, candidates = load_coco_captions(args.references, args.predictions)
        # As the COCO evaluation does, the images scored are those the results caption.
        references = {image: refs for image, refs in references.items() if image in candidates}
        try:
            return caption_scores(references, candidates, meteor=not args.no_meteor)
        except ValueError as err:
            raise DataError(f"eval captions: {err}") from None
    if kind == "vqa":
        from polymodal.metrics.vqa import vqa_scores_from_files

        try:
            return vqa_scores_from_files(args.questions, args.annotations, args.predictions)
        except ValueError as err:
            raise DataError(f"eval vqa: {err}") from None
    from polymodal.io import read_array, read_class_ids

    if kind == "retrieval":
        from polymodal.metrics.retrieval import retrieval_scores

        relevance = read_array(args.relevance, "--relevance") if args.relevance else None
        similarity = read_array(args.similarity, "--similarity")
        try:
            return retrieval_scores(similarity, relevance, ks=args.ks, ties=args.ties)
        except ValueError as err:
            raise DataError(f"eval retrieval: {err}") from None
    from polymodal.metrics.classification import classification_scores

    try:
        return classification_scores(
            read_class_ids(args.y_true, "--y-true"), read_array(args.probs, "--probs")
        )
    except ValueError as err:
        raise DataError(f"eval classification: {err}") from None


def _cmd_eval(args: argparse.Namespace) -> int:
    if args.runs:
        from polymodal.evaluate.confidence import aggregate_runs

        if args.target:
            raise ConfigError("eval: give either RUN_DIR or --runs RUN1 RUN2 ..., not both")
        result: Any = aggregate_runs(args.runs)
    elif args.target in FILE_KINDS:
        result = _score_files(args.target, args)
    elif args.target:
        from polymodal.evaluate.run import evaluate_run

        result = evaluate_run(
            args.target,
            args.split,
            robustness=args.robustness,
            efficiency=args.efficiency,
            report=args.report,
            reference=args.reference,
            seed=args.seed,
            by=args.by or (),
        )
    else:
        raise ConfigError(
            f"eval: give a RUN_DIR, --runs RUN1 RUN2 ..., or one of {', '.join(FILE_KINDS)}"
        )
    text = json.dumps(result, indent=1, ensure_ascii=False)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n", encoding="utf-8")
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
    predictor = Predictor.from_pretrained(args.model_dir, backend=args.backend)
    predictions = predictor.predict(rows, path.parent, tasks=args.tasks)
    print(json.dumps(predictions if isinstance(row, list) else predictions[0], indent=1))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from polymodal.export import export_onnx, manifest_rows

    rows, base_dir = manifest_rows(args.data, args.rows) if args.data else (None, Path.cwd())
    info = export_onnx(args.model_dir, args.out, rows, base_dir, quantize=args.quantize == "int8")
    worst = max(info.parity.values())
    print(f"exported to {args.out}; parity with eager PyTorch: max |difference| {worst:.2e}")
    return 0


def _cmd_index(args: argparse.Namespace) -> int:
    from polymodal.index import VectorIndex

    if args.action == "build":
        index = VectorIndex.build(args.model_dir, args.data, args.field, args.out, args.kind)
        print(f"indexed {len(index)} rows of '{args.field}' ({index.info.kind}): {args.out}")
        return 0
    index = VectorIndex.load(args.index_dir)
    if args.action == "add":
        ids = index.add(args.data)
        print(f"added {len(ids)} rows (ids {ids[0] if ids else '-'}..{ids[-1] if ids else '-'})")
    elif args.action == "remove":
        print(f"removed {index.remove(args.ids)} of {len(args.ids)} ids; {len(index)} left")
    else:
        kind, value = next(
            (k, getattr(args, k)) for k in ("text", "image", "audio") if getattr(args, k)
        )
        vectors = index.query_vectors(kind, [value], Path.cwd())
        print(json.dumps(index.search(vectors, args.k)[0], indent=1, ensure_ascii=False))
    return 0


SERVE_FLAGS = {"timeout_s": "--timeout", "max_body_bytes": "--max-body-mib"}  # settings -> flag


def _cmd_serve(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from polymodal.serve.app import serve
    from polymodal.serve.schemas import MIB, ServeSettings

    try:
        settings = ServeSettings(
            model_dir=args.model_dir,
            index_dir=args.index,
            data_dir=args.data_dir,
            backend=args.backend,
            threads=args.threads,
            api_key=args.api_key or os.environ.get("POLYMODAL_API_KEY") or None,
            max_batch=args.max_batch,
            max_wait_ms=args.max_wait_ms,
            max_queue=args.max_queue,
            timeout_s=args.timeout,
            max_body_bytes=round(args.max_body_mib * MIB),
            max_image_pixels=args.max_image_pixels,
            max_audio_seconds=args.max_audio_seconds,
        )
    except ValidationError as err:
        problems = (
            f"{SERVE_FLAGS.get(str(e['loc'][0]), '--' + str(e['loc'][0]).replace('_', '-'))}: "
            f"{e['msg']}"
            for e in err.errors()
        )
        raise ConfigError("serve " + "; ".join(problems)) from None
    serve(settings, args.host, args.port, args.workers)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from polymodal.demo import run_demo

    run_demo(Path(args.out), n=args.n, seed=args.seed, overwrite=args.overwrite)
    return 0


def _cmd_config_show(args: argparse.Namespace) -> int:
    from polymodal.config import dump_config, load_config

    print(dump_config(load_config(args.config, args.set or [])), end="")
    return 0


def _cmd_config_reference(args: argparse.Namespace) -> int:
    from polymodal.config_reference import config_reference

    print(config_reference(), end="")
    return 0


def _cmd_models_list(args: argparse.Namespace) -> int:
    from rich.markup import escape
    from rich.table import Table

    from polymodal.models.architectures import list_models, load_architecture

    table = Table(title="named architectures (model.architecture: NAME)")
    for column in ("name", "description"):
        table.add_column(column)
    for name in list_models():
        table.add_row(escape(name), escape(load_architecture(name)["description"]))
    _console().print(table)
    return 0


def _cmd_models_show(args: argparse.Namespace) -> int:
    from polymodal.models.architectures import load_architecture

    print(json.dumps(load_architecture(args.name), indent=2, ensure_ascii=False))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="polymodal", description="Build, train, evaluate and serve multimodal models."
    )
    parser.add_argument("--version", action="version", version=f"polymodal {__version__}")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    # --quiet is also accepted after any command; SUPPRESS keeps a subcommand's absent flag
    # from resetting one given before the command.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bars"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = commands.add_parser("data", help="generate, convert or inspect data")
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    gen = data_commands.add_parser(
        "generate", parents=[common], help="write a built-in synthetic dataset"
    )
    gen.add_argument("dataset", choices=list(GENERATE_OPTIONS))
    gen.add_argument("--out", required=True, help="output folder")
    gen.add_argument("--n", "--size", type=int, default=5000, help="number of scenes (rows)")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--image-size", type=int, help="shapeworld, driving: side in pixels (64)")
    gen.add_argument(
        "--statement-mix",
        help="shapeworld: weights of the statement types, e.g. "
        "existence=0.5,count=0.25,spatial=0.25 (default existence=0.75,count=0.25)",
    )
    gen.add_argument(
        "--sound",
        action=argparse.BooleanOptionalAction,
        help="shapeworld: also write each scene's sound and the tri-modal label (default: on)",
    )
    gen.set_defaults(func=_cmd_generate)
    ins = data_commands.add_parser(
        "inspect", parents=[common], help="fields, kinds, counts, presence, bad rows"
    )
    ins.add_argument("manifest")
    ins.add_argument("--config", help="a run config whose data section (fields, labels) applies")
    ins.add_argument("--target", help="the target column, when fields are inferred")
    ins.add_argument("--labels", help="comma-separated label set for the target")
    ins.add_argument(
        "--quarantine", help="write every quarantined row, with its reason, to this file"
    )
    ins.add_argument("--json", action="store_true", help="print the report as JSON")
    ins.set_defaults(func=_cmd_inspect)
    cache = data_commands.add_parser(
        "cache",
        parents=[common],
        help="build the disk store of preprocessed tensors a config's training will read",
    )
    cache.add_argument("manifest")
    cache.add_argument("--config", required=True, help="the run config whose data it is for")
    cache.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a value")
    cache.set_defaults(func=_cmd_cache)
    speech = data_commands.add_parser(
        "transcribe",
        parents=[common],
        help="write a manifest with a transcript of each row's audio (Whisper tiny.en), "
        "scored against references if given",
    )
    speech.add_argument("manifest")
    speech.add_argument("--audio", required=True, help="the column of audio file paths")
    speech.add_argument("--out", required=True, help="the JSONL manifest written")
    speech.add_argument("--text-column", default="transcript", help="the column written")
    speech.add_argument(
        "--reference", help="a column of reference texts: report the word error rate"
    )
    speech.add_argument(
        "--model", help="a faster-whisper (CTranslate2) model folder; default: tiny.en"
    )
    speech.set_defaults(func=_cmd_transcribe)
    _add_convert_parser(data_commands, common)

    train = commands.add_parser(
        "train",
        parents=[common],
        help="train a model from a YAML config (or go on with a run: --resume RUN_DIR)",
        description="polymodal train CONFIG [--set K=V ...] | polymodal train --resume RUN_DIR. "
        "Several processes: torchrun --nproc_per_node=N -m polymodal train CONFIG",
    )
    train.add_argument("config", nargs="?")
    train.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.epochs=3 (repeatable)",
    )
    train.add_argument("--strict", action="store_true", help="any bad row is an error")
    train.add_argument(
        "--overwrite", action="store_true", help="replace the run directory if it exists"
    )
    train.add_argument(
        "--resume", metavar="RUN_DIR", help="go on from the run's newest checkpoint, exactly"
    )
    train.add_argument(
        "--device", choices=["auto", "cpu", "cuda"], help="override train.device (default auto)"
    )
    train.set_defaults(func=_cmd_train)

    ev = commands.add_parser(
        "eval",
        parents=[common],
        help="score a run (with robustness, efficiency, a report), several runs, or the "
        "output files of any model",
        description="polymodal eval RUN_DIR [--by COLUMN ...] [--robustness] [--efficiency] "
        "[--report] | "
        "polymodal eval --runs RUN1 RUN2 ... | polymodal eval captions --references A.json "
        "--predictions R.json | polymodal eval vqa --questions Q.json --annotations A.json "
        "--predictions R.json | polymodal eval retrieval --similarity S.npy [--relevance R.npy] "
        "| polymodal eval classification --y-true Y.json --probs P.npy",
    )
    ev.add_argument("target", nargs="?", help=f"RUN_DIR, or one of {', '.join(FILE_KINDS)}")
    ev.add_argument("--split", default="test")
    ev.add_argument("--out", help="also write the scores to this JSON file")
    ev.add_argument("--robustness", action="store_true", help="missing and noisy modalities")
    ev.add_argument("--reference", help="robustness baseline run (for effective robustness)")
    ev.add_argument("--efficiency", action="store_true", help="parameters, latency, memory")
    ev.add_argument("--report", action="store_true", help="write RUN_DIR/report/index.html")
    ev.add_argument("--seed", type=int, default=0, help="seed of corruptions and bootstraps")
    ev.add_argument(
        "--by",
        action="append",
        metavar="COLUMN",
        help="also every metric per value of this manifest column, with counts and intervals"
        " (repeatable; a VQA model adds question_type and answer_type where the manifest has"
        " them)",
    )
    ev.add_argument("--runs", nargs="+", metavar="RUN_DIR", help="mean and std over runs")
    ev.add_argument("--references", help="captions: COCO-format annotations JSON")
    ev.add_argument("--predictions", help="captions or vqa: a results JSON")
    ev.add_argument("--no-meteor", action="store_true", help="captions: skip METEOR (Java)")
    ev.add_argument("--questions", help="vqa: VQA v2 questions JSON")
    ev.add_argument("--annotations", help="vqa: VQA v2 annotations JSON")
    ev.add_argument("--similarity", help="retrieval: (images x texts) .npy/.json/.csv")
    ev.add_argument("--relevance", help="retrieval: (images x texts) 0/1 matrix")
    ev.add_argument("--ks", type=int, nargs="+", default=[1, 5, 10], help="retrieval: R@K")
    ev.add_argument("--ties", default="stable", choices=["stable", "optimistic", "pessimistic"])
    ev.add_argument("--y-true", help="classification: true class ids (.npy/.json/.csv)")
    ev.add_argument("--probs", help="classification: (N, C) probabilities")
    ev.set_defaults(func=_cmd_eval)

    pred = commands.add_parser(
        "predict", parents=[common], help="predict one row (or a list of rows) from JSON"
    )
    pred.add_argument("model_dir")
    pred.add_argument("--input", required=True, help="JSON file: a row object or a list of them")
    pred.add_argument("--tasks", nargs="+", metavar="TASK", help="only these tasks' predictions")
    pred.add_argument(
        "--backend",
        default="torch",
        choices=["torch", "onnxruntime"],
        help="onnxruntime: the graphs polymodal export wrote in MODEL_DIR",
    )
    pred.set_defaults(func=_cmd_predict)

    export = commands.add_parser(
        "export", parents=[common], help="export a saved model to ONNX, checked against PyTorch"
    )
    export.add_argument("model_dir")
    export.add_argument("--format", default="onnx", choices=["onnx"])
    export.add_argument("--out", required=True, help="the export folder (a model folder too)")
    export.add_argument(
        "--data", help="a manifest whose rows trace and check the graphs (default: made-up rows)"
    )
    export.add_argument("--rows", type=int, default=16, help="how many of its rows (default 16)")
    export.add_argument("--quantize", choices=["int8"], help="int8 weights (dynamic quantisation)")
    export.set_defaults(func=_cmd_export)

    index = commands.add_parser(
        "index", help="a FAISS index of a collection embedded by a retrieval model"
    )
    index_commands = index.add_subparsers(dest="action", required=True)
    build = index_commands.add_parser(
        "build", parents=[common], help="embed one field of a manifest's rows and index them"
    )
    build.add_argument("model_dir", help="a saved model with a retrieve task")
    build.add_argument("--data", required=True, help="manifest (.jsonl or .csv) of the collection")
    build.add_argument("--field", required=True, help="the input field to embed (image, ...)")
    build.add_argument("--out", required=True, help="the index folder")
    build.add_argument(
        "--kind",
        default="auto",
        choices=["auto", "exact", "hnsw"],
        help="exact search, or an HNSW graph; auto: exact up to 100,000 rows",
    )
    add = index_commands.add_parser("add", parents=[common], help="embed and add more rows")
    add.add_argument("index_dir")
    add.add_argument("--data", required=True, help="manifest of the rows to add")
    remove = index_commands.add_parser("remove", parents=[common], help="remove items by id")
    remove.add_argument("index_dir")
    remove.add_argument("--ids", type=int, nargs="+", required=True)
    search = index_commands.add_parser(
        "search", parents=[common], help="the nearest items to a text, an image or a clip"
    )
    search.add_argument("index_dir")
    query = search.add_mutually_exclusive_group(required=True)
    query.add_argument("--text", help="a text query")
    query.add_argument("--image", help="an image file")
    query.add_argument("--audio", help="an audio file")
    search.add_argument("--k", type=int, default=10, help="how many items")
    for sub in (build, add, remove, search):
        sub.set_defaults(func=_cmd_index)

    srv = commands.add_parser(
        "serve",
        help="an HTTP service for a saved model: predict, embed, caption, answer, search",
        description="Serve a saved model (and a FAISS index) over HTTP; see docs/serve.md. "
        "The API key may also come from the environment variable POLYMODAL_API_KEY.",
    )
    srv.add_argument("model_dir", help="a saved model (a run's best/ folder)")
    srv.add_argument("--index", help="an index folder (polymodal index build): /v1/search")
    srv.add_argument(
        "--data-dir",
        help="the folder the index's image paths are relative to (default: the folder of the "
        "manifest each item was indexed from)",
    )
    srv.add_argument("--host", default="127.0.0.1", help="0.0.0.0 listens on every interface")
    srv.add_argument("--port", type=int, default=8000)
    srv.add_argument("--api-key", help="require this key (X-API-Key or Authorization: Bearer)")
    srv.add_argument("--workers", type=int, default=1, help="processes, each loading the model")
    srv.add_argument("--backend", default="torch", choices=["torch", "onnxruntime"])
    srv.add_argument(
        "--threads",
        type=int,
        help="inference threads per process (default: all cores, shared out among --workers)",
    )
    srv.add_argument("--max-batch", type=int, default=32, help="rows predicted together")
    srv.add_argument(
        "--max-wait-ms", type=float, default=0.0, help="how long a lone row waits for company"
    )
    srv.add_argument("--max-queue", type=int, default=256, help="rows waiting; beyond: 503")
    srv.add_argument("--timeout", type=float, default=30.0, help="seconds; beyond: 504")
    srv.add_argument("--max-body-mib", type=float, default=16.0, help="request body; beyond: 413")
    srv.add_argument(
        "--max-image-pixels", type=int, default=4096 * 4096, help="per image; beyond: 422"
    )
    srv.add_argument("--max-audio-seconds", type=float, default=60.0, help="per clip; beyond: 422")
    srv.set_defaults(func=_cmd_serve)

    demo = commands.add_parser(
        "demo", parents=[common], help="end-to-end run on built-in ShapeWorld data"
    )
    demo.add_argument("--out", default="polymodal-demo", help="output folder")
    demo.add_argument("--n", type=int, default=8000, help="number of scenes")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument(
        "--overwrite", action="store_true", help="replace the output folder if it exists"
    )
    demo.set_defaults(func=_cmd_demo)

    models = commands.add_parser(
        "models", help="the named architectures a config can start from (model.architecture)"
    )
    models_commands = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    models_commands.add_parser("list", help="every named architecture, described").set_defaults(
        func=_cmd_models_list
    )
    show_model = models_commands.add_parser(
        "show", help="an architecture's JSON: its encoders per kind, fusion, task options, paper"
    )
    show_model.add_argument("name")
    show_model.set_defaults(func=_cmd_models_show)

    conf = commands.add_parser("config", help="show a resolved config, or every config key")
    conf_commands = conf.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    show = conf_commands.add_parser(
        "show", help="the config as a run reads it, as YAML: every default, paths absolute"
    )
    show.add_argument("config")
    show.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.epochs=3 (repeatable)",
    )
    show.set_defaults(func=_cmd_config_show)
    ref = conf_commands.add_parser(
        "reference", help="Markdown reference of every config key (docs/config.md)"
    )
    ref.set_defaults(func=_cmd_config_reference)
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
