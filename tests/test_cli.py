"""The ``polymodal`` command, run in-process: data, train, eval, predict and their user errors."""

from __future__ import annotations

import contextlib
import io
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from polymodal import __version__
from polymodal.cli import main
from polymodal.models.architectures import list_models, load_architecture
from polymodal.predictor import Predictor

COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220)}

CONFIG = """\
name: tiny
seed: 0
data:
  manifest: {manifest}
  image: {{size: 16}}
model:
  inputs: [image, text, price]
  encoders:
    image: {{type: cnn, channels: [8, 8], dim: 16}}
    text: {{type: transformer, dim: 16, layers: 1, heads: 2}}
    price: {{type: mlp, dim: 16, hidden: 16}}
  fusion: {{dim: 16}}
  tasks: [{{type: classify, target: label, hidden: 16}}]
train:
  epochs: 1
  batch_size: 4
  lr: 0.005
"""


def write_png(path: Path, colour: str, size: int = 16) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), COLOURS[colour]).save(path)


def write_config(folder: Path, manifest: str) -> Path:
    path = folder / "tiny.yaml"
    path.write_text(CONFIG.format(manifest=manifest), encoding="utf-8")
    return path


def cli(capsys: pytest.CaptureFixture[str], *argv: Any) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def generate(capsys: pytest.CaptureFixture[str], out: Path, *argv: Any) -> tuple[int, str, str]:
    return cli(capsys, "data", "generate", "shapeworld", "--out", out, *argv)


def assert_one_line_error(err: str, *fragments: str) -> None:
    assert err.startswith("error: ")
    assert err.count("\n") == 1 and err.endswith("\n")
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err


@pytest.fixture(scope="module")
def trained(
    tmp_path_factory: pytest.TempPathFactory, write_tiny_manifest: Callable[[Path], Path]
) -> dict[str, Any]:
    """``polymodal train`` once for the module, with --set overrides; its exit code and output."""
    root = tmp_path_factory.mktemp("cli_run")
    write_tiny_manifest(root / "data")
    config = write_config(root, "data/manifest.jsonl")  # relative to the config file
    out_dir = root / "runs"
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(
            ["train", str(config), "--set", "train.epochs=2", "--set", f"train.out_dir={out_dir}"]
        )
    return {
        "code": code,
        "out": stdout.getvalue(),
        "err": stderr.getvalue(),
        "run_dir": out_dir / "tiny",
        "root": root,
    }


# --- version and data ----------------------------------------------------------------------


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out == f"polymodal {__version__}\n"


def test_a_command_is_required(capsys):
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == 2
    assert "COMMAND" in capsys.readouterr().err


def test_generate_writes_the_same_files_for_the_same_seed(capsys, tmp_path):
    outputs = []
    for name in ("a", "b"):
        code, out, _ = generate(capsys, tmp_path / name, "--n", 20, "--seed", 1)
        assert code == 0
        assert out == f"wrote 20 scenes: {tmp_path / name / 'manifest.jsonl'}\n"
        outputs.append(tmp_path / name)
    a, b = outputs
    rows = [json.loads(line) for line in (a / "manifest.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [f"{i:06d}" for i in range(20)]
    assert {r["split"] for r in rows} <= {"train", "val", "test"}
    images = sorted(p.name for p in (a / "images").iterdir())
    assert images == [f"{i:06d}.png" for i in range(20)]
    assert all((a / r["image"]).is_file() for r in rows)
    assert (a / "questions.jsonl").read_text().strip()
    for name in ["manifest.jsonl", "questions.jsonl"] + [f"images/{i}" for i in images]:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name

    code, _, _ = generate(capsys, tmp_path / "c", "--n", 20, "--seed", 2)
    assert code == 0
    assert (tmp_path / "c" / "manifest.jsonl").read_bytes() != (a / "manifest.jsonl").read_bytes()


def test_generate_statement_mix_count_only(capsys, tmp_path):
    code, _, _ = generate(capsys, tmp_path, "--n", 20, "--seed", 1, "--statement-mix", "count=1")
    assert code == 0
    rows = [json.loads(line) for line in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 20
    assert {r["statement_type"] for r in rows} == {"count"}
    for row in rows:
        assert any(f" {k} shape" in row["statement"] for k in (1, 2, 3)), row["statement"]


@pytest.mark.parametrize(
    ("mix", "fragments"),
    [
        ("spatial=x", ("--statement-mix 'spatial=x'", "type=weight")),
        ("spatial", ("--statement-mix 'spatial'", "type=weight")),
        ("colour=1", ("statement_mix", "keys must be among")),
        ("count=-1", ("statement_mix", "non-negative")),
    ],
)
def test_generate_rejects_a_bad_statement_mix(capsys, tmp_path, mix, fragments):
    out_dir = tmp_path / "out"
    code, out, err = generate(capsys, out_dir, "--n", 5, "--statement-mix", mix)
    assert code == 2
    assert out == ""
    assert_one_line_error(err, *fragments)
    assert not out_dir.exists()


def test_generate_rejects_a_too_small_image(capsys, tmp_path):
    code, _, err = generate(capsys, tmp_path, "--n", 5, "--image-size", 8)
    assert code == 2
    assert_one_line_error(err, "image_size is 8", "at least 32")


def test_generate_shapeworld_sound_is_on_unless_turned_off(capsys, tmp_path):
    assert generate(capsys, tmp_path / "on", "--n", 4)[0] == 0
    assert generate(capsys, tmp_path / "off", "--n", 4, "--no-sound")[0] == 0
    on, off = ((tmp_path / d / "manifest.jsonl").read_text().splitlines() for d in ("on", "off"))
    assert all(json.loads(line)["trimodal"] in ("true", "false") for line in on)
    assert len(list((tmp_path / "on" / "sounds").glob("*.wav"))) >= 4
    assert not (tmp_path / "off" / "sounds").exists() and "audio" not in json.loads(off[0])


def test_generate_driving(capsys, tmp_path):
    argv = ("data", "generate", "driving", "--out", tmp_path, "--size", 12, "--seed", 1)
    code, out, _ = cli(capsys, *argv)
    assert code == 0
    assert out == f"wrote 12 rows: {tmp_path / 'manifest.jsonl'}\n"
    rows = [json.loads(line) for line in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and all((tmp_path / r["camera"]).is_file() for r in rows)


@pytest.mark.parametrize(
    ("dataset", "option", "named"),
    [
        ("driving", ("--statement-mix", "count=1"), "--statement-mix"),
        ("voice_commands", ("--no-sound",), "--sound"),
    ],
)
def test_generate_rejects_another_dataset_s_option(capsys, tmp_path, dataset, option, named):
    code, _, err = cli(capsys, "data", "generate", dataset, "--out", tmp_path / "x", *option)
    assert code == 2
    assert_one_line_error(err, f"{named}: not an option of the {dataset} dataset")
    assert not (tmp_path / "x").exists()


def test_inspect_json(capsys, tiny_manifest):
    code, out, _ = cli(capsys, "data", "inspect", tiny_manifest, "--json")
    assert code == 0
    report = json.loads(out)
    assert report["manifest"] == str(tiny_manifest)
    assert report["schema_inferred"] is True
    assert {name: spec["kind"] for name, spec in report["fields"].items()} == {
        "image": "image",
        "label": "label",
        "price": "tabular",
        "text": "text",
    }
    assert report["fields"]["label"]["role"] == "target"
    assert report["fields"]["price"]["numeric"] == ["price"]
    assert all(spec["present"] == 1.0 for spec in report["fields"].values())
    assert report["rows"] == {"read": 24, "loaded": 24, "quarantined": 0}
    assert report["splits"] == {"train": 16, "val": 4, "test": 4}
    assert report["quarantine"] == {}
    assert "quarantine_file" not in report


def test_inspect_json_counts_bad_rows(capsys, tiny_manifest, tmp_path):
    with tiny_manifest.open("a", encoding="utf-8") as f:
        f.write("{not json\n")
        row = {"split": "test", "image": "img/none.png", "text": "x", "price": 1, "label": "red"}
        f.write(json.dumps(row) + "\n")
    quarantine = tmp_path / "bad.jsonl"
    code, out, _ = cli(
        capsys, "data", "inspect", tiny_manifest, "--json", "--quarantine", quarantine
    )
    assert code == 0
    report = json.loads(out)
    assert report["rows"] == {"read": 26, "loaded": 24, "quarantined": 2}
    assert {reason: info["count"] for reason, info in report["quarantine"].items()} == {
        "malformed row": 1,
        "missing image file": 1,
    }
    assert report["quarantine_file"] == str(quarantine)
    assert len(quarantine.read_text().splitlines()) == 2


def test_inspect_table(capsys, tiny_manifest):
    code, out, _ = cli(capsys, "data", "inspect", tiny_manifest)
    assert code == 0
    for name in ("image", "label", "price", "text"):
        assert name in out
    assert "rows: 24 read, 24 loaded, 0 quarantined; splits: train 16, val 4, test 4" in out


def test_inspect_missing_manifest(capsys, tmp_path):
    code, _, err = cli(capsys, "data", "inspect", tmp_path / "nope.jsonl")
    assert code == 2
    assert_one_line_error(err, "nope.jsonl does not exist")


def test_convert_writes_a_manifest_and_prints_counts(capsys, tmp_path):
    captions = tmp_path / "captions_val2014.json"
    images = [{"id": i, "file_name": f"{i}.jpg"} for i in (1, 2, 3)]
    annotations = [{"image_id": i, "caption": f"picture {i}"} for i in (1, 2, 3)]
    captions.write_text(json.dumps({"images": images, "annotations": annotations}))
    for i in (1, 2):
        (tmp_path / f"{i}.jpg").write_bytes(b"")
    out = tmp_path / "out"

    def convert(*argv: Any) -> tuple[int, str, str]:
        return cli(capsys, "data", "convert", *argv, "--images", tmp_path, "--out", out)

    code, text, _ = convert("coco-captions", captions)
    assert code == 0
    assert text.splitlines() == [
        f"wrote 2 rows (val 2): {out / 'manifest.jsonl'}",
        f"left out 1 entries (missing image 1): {out / 'skipped.jsonl'}",
    ]
    code, _, err = convert("vqa", "--questions", captions)
    assert code == 2
    assert_one_line_error(err, "expected a list under 'questions'")
    code, _, err = convert("karpathy", tmp_path / "no.json")
    assert code == 2
    assert_one_line_error(err, "no.json does not exist")


# --- train, eval, predict ------------------------------------------------------------------


def test_train_prints_test_scores_and_writes_the_run(trained):
    assert trained["code"] == 0
    run_dir = trained["run_dir"]
    out = trained["out"]
    assert "Traceback" not in trained["err"]
    assert f"best model: {run_dir / 'best'}\nrun files: {run_dir}\n" in out
    assert "rows: train 16, val 4, test 4" in out
    # --set train.epochs=2 overrode the file's epochs: 1
    history = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in history] == [1, 2]
    for name in ("config.yaml", "metrics.jsonl", "results.json", "best/config.json"):
        assert (run_dir / name).is_file(), name
    results = json.loads((run_dir / "results.json").read_text())
    assert "{" not in out  # a short table, not a JSON dump; results.json holds every metric
    table = out[out.index("test split (every metric: results.json)") : out.index("best model:")]
    scores = results["test"]["classify_label"]
    assert scores["num_examples"] == 4 and scores["labels"] == ["blue", "red"]
    for metric in ("accuracy", "f1_macro", "auroc", "ece_15"):
        assert f"classify_label │ {metric}" in table
        assert f"{scores[metric]:.4f}" in table
    assert re.search(r"num_examples\s*│\s*4\s*│", table)
    assert len(table.splitlines()) < 15


def test_eval_prints_scores_and_writes_out_file(capsys, trained, tmp_path):
    run_dir = trained["run_dir"]
    results = json.loads((run_dir / "results.json").read_text())
    out_file = tmp_path / "new" / "folder" / "scores.json"
    code, out, _ = cli(capsys, "eval", run_dir, "--out", out_file)
    assert code == 0
    scores = json.loads(out)
    assert scores == {"split": "test", "rows": 4, "tasks": results["test"]}
    assert json.loads(out_file.read_text()) == scores
    assert json.loads((run_dir / "eval_test.json").read_text()) == scores


def test_eval_another_split(capsys, trained):
    code, out, _ = cli(capsys, "eval", trained["run_dir"], "--split", "val")
    assert code == 0
    scores = json.loads(out)
    assert scores["split"] == "val" and scores["rows"] == 4
    assert scores["tasks"]["classify_label"]["num_examples"] == 4


def write_request(folder: Path, rows: Any) -> Path:
    """A JSON request whose image paths are relative to its own folder."""
    write_png(folder / "pics" / "red.png", "red")
    write_png(folder / "pics" / "blue.png", "blue")
    path = folder / "request.json"
    path.write_text(json.dumps(rows), encoding="utf-8")
    return path


def check_prediction(prediction: dict[str, Any]) -> None:
    assert set(prediction) == {"classify_label", "absent_inputs"}
    result = prediction["classify_label"]
    probabilities = result["probabilities"]
    assert set(probabilities) == {"blue", "red"}
    assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert result["label"] == max(probabilities, key=probabilities.get)


def test_predict_one_row(capsys, trained, tmp_path, monkeypatch):
    model_dir = trained["run_dir"] / "best"
    row = {"image": "pics/red.png", "text": "a red square", "price": 3.0}
    request = write_request(tmp_path / "request", row)
    monkeypatch.chdir(tmp_path)  # paths are relative to the JSON file's folder, not the cwd
    code, out, err = cli(capsys, "predict", model_dir, "--input", request)
    assert code == 0, err
    prediction = json.loads(out)
    check_prediction(prediction)
    expected = Predictor.from_pretrained(model_dir).predict([row], request.parent)[0]
    assert prediction == expected


def test_predict_a_list_of_rows(capsys, trained, tmp_path):
    model_dir = trained["run_dir"] / "best"
    rows = [
        {"image": "pics/red.png", "text": "a red square", "price": 3.0},
        {"image": "pics/blue.png"},  # text and price are optional
    ]
    request = write_request(tmp_path, rows)
    code, out, err = cli(capsys, "predict", model_dir, "--input", request)
    assert code == 0, err
    predictions = json.loads(out)
    assert isinstance(predictions, list) and len(predictions) == 2
    for prediction in predictions:
        check_prediction(prediction)
    assert predictions == Predictor.from_pretrained(model_dir).predict(rows, tmp_path)


def test_quiet_is_accepted_after_the_command(capsys, tiny_manifest, tmp_path, monkeypatch):
    from polymodal import progress

    monkeypatch.setattr(progress, "_quiet", False)
    config = write_config(tmp_path, str(tiny_manifest))
    code, _, err = cli(
        capsys, "train", config, "--quiet", "--set", f"train.out_dir={tmp_path / 'runs'}"
    )
    assert code == 0, err
    assert progress.quiet()
    monkeypatch.setattr(progress, "_quiet", False)
    code, _, err = cli(capsys, "data", "inspect", tiny_manifest, "--quiet")
    assert code == 0, err
    assert progress.quiet()


def test_train_refuses_an_existing_run_unless_overwrite(capsys, tiny_manifest, tmp_path):
    config = write_config(tmp_path, str(tiny_manifest))
    argv = ["train", config, "--set", f"train.out_dir={tmp_path / 'runs'}"]
    assert cli(capsys, *argv)[0] == 0
    code, out, err = cli(capsys, *argv)
    assert code == 2
    assert_one_line_error(err, str(tmp_path / "runs" / "tiny"), "pass --overwrite to replace it")
    code, out, err = cli(capsys, *argv, "--overwrite")
    assert code == 0, err
    assert "best model:" in out


def test_demo_refuses_an_existing_folder_it_did_not_write(capsys, tmp_path):
    notes = tmp_path / "out" / "notes.txt"
    notes.parent.mkdir()
    notes.write_text("mine", encoding="utf-8")
    code, _, err = cli(capsys, "demo", "--out", notes.parent, "--n", 20)
    assert code == 2
    assert_one_line_error(err, "demo folder", "pass --overwrite")
    code, _, err = cli(capsys, "demo", "--out", notes.parent, "--n", 20, "--overwrite")
    assert code == 2
    assert_one_line_error(err, "holds files polymodal did not write; nothing was deleted")
    assert notes.read_text(encoding="utf-8") == "mine"


def test_predict_names_the_tasks_it_gives(capsys, trained, tmp_path):
    request = write_request(tmp_path, {"image": "pics/red.png"})
    model_dir = trained["run_dir"] / "best"
    code, out, err = cli(
        capsys, "predict", model_dir, "--input", request, "--tasks", "classify_label"
    )
    assert code == 0, err
    check_prediction(json.loads(out))
    code, out, err = cli(capsys, "predict", model_dir, "--input", request, "--tasks", "clasify")
    assert code == 2 and out == ""
    assert_one_line_error(err, "no task 'clasify'; did you mean 'classify_label'?")


def test_predict_a_misspelt_field(capsys, trained, tmp_path):
    request = write_request(tmp_path, {"image": "pics/red.png", "txet": "a red square"})
    code, out, err = cli(capsys, "predict", trained["run_dir"] / "best", "--input", request)
    assert code == 2 and out == ""
    assert_one_line_error(err, "row 0: unknown field 'txet'; did you mean 'text'?")


def test_data_cache_builds_the_store_training_then_finds(capsys, tiny_manifest, tmp_path):
    config = write_config(tmp_path, str(tiny_manifest))
    out = tmp_path / "runs"
    code, printed, err = cli(
        capsys, "data", "cache", tiny_manifest, "--config", config, "--set", f"train.out_dir={out}"
    )
    assert code == 0, err
    stores = sorted((out / "cache").glob("*/*/store.json"))
    assert sorted(p.parent.name for p in stores) == ["test", "train", "val"]
    assert "train: 16 rows in" in printed
    built = {p: p.stat().st_mtime_ns for p in stores}
    argv = ["train", config, "--set", f"train.out_dir={out}", "--set", "data.cache=disk"]
    assert cli(capsys, *argv)[0] == 0
    assert {p: p.stat().st_mtime_ns for p in stores} == built  # found, not rebuilt


def test_train_resume_takes_a_run_and_nothing_else(capsys, trained, tmp_path):
    code, _, err = cli(capsys, "train", "--resume", trained["run_dir"], "--set", "seed=1")
    assert code == 2
    assert_one_line_error(err, "train --resume RUN_DIR goes on with the run's own config.yaml")
    code, _, err = cli(capsys, "train", "--resume", tmp_path)
    assert code == 2
    assert_one_line_error(err, "config.yaml is missing")
    code, _, err = cli(capsys, "train")
    assert code == 2
    assert_one_line_error(err, "train needs a CONFIG file (or --resume RUN_DIR)")


def test_resuming_a_finished_run_changes_nothing(capsys, trained):
    run_dir = trained["run_dir"]
    before = (run_dir / "best" / "model.safetensors").read_bytes()
    code, out, err = cli(capsys, "train", "--resume", run_dir)
    assert code == 0, err
    assert (run_dir / "best" / "model.safetensors").read_bytes() == before
    assert f"run files: {run_dir}" in out


# --- user errors: exit code 2, one clear message, no traceback --------------------------------


def test_train_unknown_config_key_suggests_the_right_one(capsys, tiny_manifest, tmp_path):
    config = write_config(tmp_path, str(tiny_manifest))
    code, out, err = cli(
        capsys, "train", config, "--set", "train.batchsize=8", "--set", f"train.out_dir={tmp_path}"
    )
    assert code == 2
    assert out == ""
    assert err.startswith("error: ")
    assert "unknown key 'train.batchsize'" in err
    assert "did you mean 'batch_size'" in err
    assert "Traceback" not in err
    assert not (tmp_path / "tiny").exists()


def test_train_bad_override_syntax(capsys, tiny_manifest, tmp_path):
    config = write_config(tmp_path, str(tiny_manifest))
    code, _, err = cli(capsys, "train", config, "--set", "train.epochs")
    assert code == 2
    assert_one_line_error(err, "--set 'train.epochs'", "key.path=value")


def test_train_missing_config_file(capsys, tmp_path):
    code, _, err = cli(capsys, "train", tmp_path / "none.yaml")
    assert code == 2
    assert_one_line_error(err, "none.yaml does not exist")


def test_predict_missing_input_file(capsys, trained, tmp_path):
    missing = tmp_path / "row.json"
    code, out, err = cli(capsys, "predict", trained["run_dir"] / "best", "--input", missing)
    assert code == 2
    assert out == ""
    assert_one_line_error(err, f"--input {missing} does not exist")
    code, _, err = cli(capsys, "predict", trained["run_dir"] / "best", "--input", tmp_path)
    assert code == 2
    assert_one_line_error(err, f"--input {tmp_path} is a folder")


def test_predict_input_that_is_not_json(capsys, trained, tmp_path):
    bad = tmp_path / "row.json"
    bad.write_text("{image: red.png", encoding="utf-8")
    code, out, err = cli(capsys, "predict", trained["run_dir"] / "best", "--input", bad)
    assert code == 2
    assert out == ""
    assert_one_line_error(err, f"--input {bad} is not valid JSON")


def test_predict_row_with_a_missing_image(capsys, trained, tmp_path):
    request = tmp_path / "row.json"
    request.write_text(json.dumps({"image": "gone.png"}), encoding="utf-8")
    code, out, err = cli(capsys, "predict", trained["run_dir"] / "best", "--input", request)
    assert code == 2
    assert out == ""
    assert_one_line_error(err, "row 0, field 'image': missing image file", "gone.png")


def test_predict_on_a_folder_without_a_model(capsys, trained, tmp_path):
    request = write_request(tmp_path, {"image": "pics/red.png"})
    empty = tmp_path / "empty"
    empty.mkdir()
    for folder in (empty, trained["run_dir"]):  # the run dir itself holds no model: best/ does
        code, out, err = cli(capsys, "predict", folder, "--input", request)
        assert code == 2
        assert out == ""
        assert_one_line_error(err, f"{folder / 'config.json'} is missing")


def test_eval_on_a_folder_that_is_not_a_run(capsys, tmp_path):
    code, out, err = cli(capsys, "eval", tmp_path)
    assert code == 2
    assert out == ""
    assert_one_line_error(err, f"{tmp_path / 'config.yaml'} is missing", "polymodal train")


def test_eval_unknown_split(capsys, trained):
    code, out, err = cli(capsys, "eval", trained["run_dir"], "--split", "holdout")
    assert code == 2
    assert out == ""
    assert_one_line_error(err, "split 'holdout' has no rows", "train, val, test")


def test_eval_run_with_robustness_efficiency_and_report(capsys, trained):
    run_dir = trained["run_dir"]
    code, out, _ = cli(capsys, "eval", run_dir, "--robustness", "--efficiency", "--report")
    assert code == 0
    result = json.loads(out)
    robustness = result["robustness"]["tasks"]["classify_label"]
    assert robustness["clean"] == result["tasks"]["classify_label"]["accuracy"]
    assert set(robustness["missing"]) == {"image", "price", "text"}
    assert result["efficiency"]["parameters"]["total"]["total"] > 0
    assert (run_dir / "robustness.json").is_file() and (run_dir / "efficiency.json").is_file()
    assert (run_dir / "robustness_classify_label.png").read_bytes()[:4] == b"\x89PNG"
    html = Path(result["report"]).read_text(encoding="utf-8")
    assert "Robustness" in html and "Efficiency" in html


def test_eval_runs_aggregates(capsys, trained, tmp_path):
    run_dir = trained["run_dir"]
    (tmp_path / "copy").mkdir()
    (tmp_path / "copy" / "results.json").write_bytes((run_dir / "results.json").read_bytes())
    code, out, _ = cli(capsys, "eval", "--runs", run_dir, tmp_path / "copy")
    assert code == 0
    accuracy = json.loads(out)["test.classify_label.accuracy"]
    assert accuracy["n"] == 2 and accuracy["std"] == 0.0
    code, _, err = cli(capsys, "eval", run_dir, "--runs", run_dir)
    assert code == 2
    assert_one_line_error(err, "not both")


def test_eval_retrieval_and_classification_files(capsys, tmp_path):
    similarity = tmp_path / "similarity.json"
    similarity.write_text(json.dumps([[0.9, 0.1, 0.3], [0.2, 0.1, 0.8], [0.5, 0.6, 0.55]]))
    code, out, _ = cli(capsys, "eval", "retrieval", "--similarity", similarity, "--ks", "1", "2")
    assert code == 0
    scores = json.loads(out)
    assert scores["image_to_text"]["R@1"] == pytest.approx(1 / 3)  # row 0 only
    assert scores["image_to_text"]["R@2"] == pytest.approx(2 / 3)  # row 2 ranks its text second
    labels, probs = tmp_path / "y.csv", tmp_path / "p.npy"
    labels.write_text("0\n1\n1\n0\n")
    np.save(probs, np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.9, 0.1]]))
    code, out, _ = cli(capsys, "eval", "classification", "--y-true", labels, "--probs", probs)
    assert code == 0
    assert json.loads(out)["accuracy"] == 0.75


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["eval"], "give a RUN_DIR"),
        (["eval", "vqa", "--questions", "q.json"], "eval vqa needs --annotations, --predictions"),
        (["eval", "retrieval", "--similarity", "s.pkl"], "unknown format"),
        (["eval", "retrieval", "--similarity", "nope.npy"], "does not exist"),
    ],
)
def test_eval_file_errors(capsys, tmp_path, monkeypatch, argv, fragment):
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(capsys, *argv)
    assert code == 2
    assert_one_line_error(err, fragment)


def test_eval_refuses_a_pickled_array(capsys, tmp_path):
    path = tmp_path / "s.npy"
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    code, _, err = cli(capsys, "eval", "retrieval", "--similarity", path)
    assert code == 2
    assert_one_line_error(err, "does not hold a numeric array")


def test_eval_vqa_files(capsys, tmp_path):
    questions = {"questions": [{"question_id": q, "image_id": 1, "question": "?"} for q in (1, 2)]}
    answers = {1: ["2"] * 10, 2: ["yes"] * 2 + ["no"] * 8}
    annotations = {
        "annotations": [
            {
                "question_id": q,
                "image_id": 1,
                "answer_type": "number" if q == 1 else "yes/no",
                "question_type": "how many" if q == 1 else "is",
                "answers": [{"answer": a, "answer_id": i + 1} for i, a in enumerate(given)],
            }
            for q, given in answers.items()
        ]
    }
    results = [{"question_id": 1, "answer": "2"}, {"question_id": 2, "answer": "yes"}]
    paths = {}
    for name, value in {"q": questions, "a": annotations, "r": results}.items():
        paths[name] = tmp_path / f"{name}.json"
        paths[name].write_text(json.dumps(value))
    code, out, _ = cli(
        capsys,
        "eval",
        "vqa",
        "--questions",
        paths["q"],
        "--annotations",
        paths["a"],
        "--predictions",
        paths["r"],
    )
    assert code == 0
    scores = json.loads(out)
    # Two of ten humans said "yes": each leave-one-out subset of nine holds one or two matches,
    # min(1, matches / 3) averaged over the ten subsets = (8 * 2/3 + 2 * 1/3) / 10 = 0.6.
    assert scores["per_answer_type"] == {"number": 1.0, "yes/no": pytest.approx(0.6)}
    assert scores["overall"] == pytest.approx(0.8)

    paths["r"].write_text(json.dumps(results[:1]))  # an unanswered question: a clear line
    argv = ["--questions", paths["q"], "--annotations", paths["a"], "--predictions", paths["r"]]
    code, out, err = cli(capsys, "eval", "vqa", *argv)
    assert code == 2 and out == ""
    assert_one_line_error(err, "eval vqa:", "no answer for 1 of 2 annotated questions")


def test_eval_captions_files(capsys, tmp_path):
    annotations = {
        "annotations": [
            {"image_id": 1, "caption": "A red circle to the left of a blue square."},
            {"image_id": 1, "caption": "a red circle and a blue square"},
            {"image_id": 2, "caption": "a small green triangle"},
            {"image_id": 3, "caption": "an image that was not captioned"},
        ]
    }
    results = [
        {"image_id": 1, "caption": "a red circle and a blue square"},
        {"image_id": 2, "caption": "a green triangle"},
    ]
    (tmp_path / "a.json").write_text(json.dumps(annotations))
    (tmp_path / "r.json").write_text(json.dumps(results))
    code, out, _ = cli(
        capsys,
        "eval",
        "captions",
        "--references",
        tmp_path / "a.json",
        "--predictions",
        tmp_path / "r.json",
        "--no-meteor",
    )
    assert code == 0
    scores = json.loads(out)
    assert set(scores["per_item"]) == {"1", "2"}  # image 3 has no caption to score
    assert scores["per_item"]["1"]["Bleu_1"] == pytest.approx(1.0)
    assert scores["corpus"]["METEOR"] is None and "METEOR" in scores["unavailable"]
    (tmp_path / "r.json").write_text(json.dumps([{"image_id": 9, "caption": "x"}]))
    code, _, err = cli(
        capsys,
        "eval",
        "captions",
        "--references",
        tmp_path / "a.json",
        "--predictions",
        tmp_path / "r.json",
    )
    assert code == 2
    assert_one_line_error(err, "eval captions:")


# --- config: show a resolved config, print the reference -------------------------------------


def test_config_show_prints_every_default_with_absolute_paths(
    capsys, tiny_manifest, tmp_path, monkeypatch
):
    import yaml

    from polymodal.config import load_config, validate

    config = write_config(tmp_path, "manifest.jsonl")  # relative to the config file
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    code, out, _ = cli(capsys, "config", "show", config, "--set", "train.epochs=3")
    assert code == 0
    shown = yaml.safe_load(out)
    assert shown["data"]["manifest"] == str(tiny_manifest)
    assert shown["train"]["out_dir"] == str(cwd / "runs")
    assert shown["train"]["epochs"] == 3 and shown["train"]["weight_decay"] == 0.01
    assert shown["data"]["text"]["max_vocab"] is None and shown["model"]["inputs"] is not None
    assert validate(shown) == load_config(config, ["train.epochs=3"])


def test_config_show_blames_a_bad_set(capsys, tiny_manifest, tmp_path):
    config = write_config(tmp_path, str(tiny_manifest))
    code, out, err = cli(capsys, "config", "show", config, "--set", "train.epochs=abc")
    assert code == 2 and out == ""
    assert_one_line_error(err, "error: --set train.epochs=abc: 'train.epochs': Input should be")


def test_config_reference_prints_the_reference(capsys):
    from polymodal.config_reference import config_reference

    code, out, _ = cli(capsys, "config", "reference")
    assert code == 0
    assert out == config_reference()


def test_models_list_names_and_describes_every_architecture(capsys):
    code, out, _ = cli(capsys, "models", "list")
    assert code == 0
    for name in list_models():
        assert name in out
    assert "Tensor Fusion Network" in out


def test_models_show_prints_the_architecture_json(capsys):
    code, out, _ = cli(capsys, "models", "show", "vse_pp")
    assert code == 0
    assert json.loads(out) == load_architecture("vse_pp")


def test_models_show_an_unknown_name(capsys):
    code, out, err = cli(capsys, "models", "show", "clip")
    assert code == 2 and out == ""
    assert_one_line_error(err, "no architecture 'clip'", "did you mean 'clip_small'?")


def test_serve_passes_its_options_and_the_key_from_the_environment(capsys, monkeypatch):
    import polymodal.serve.app as serve_app

    served: list[tuple[Any, ...]] = []
    monkeypatch.setattr(serve_app, "serve", lambda *args: served.append(args))
    monkeypatch.setenv("POLYMODAL_API_KEY", "s3cret")
    code, _, _ = cli(
        capsys,
        "serve",
        "best",
        *("--max-batch", "4", "--max-body-mib", "2", "--workers", 3, "--threads", 2),
    )
    assert code == 0
    ((settings, host, port, workers),) = served
    assert (host, port, workers) == ("127.0.0.1", 8000, 3)
    assert settings.model_dir == "best" and settings.api_key == "s3cret"
    assert settings.max_batch == 4 and settings.max_body_bytes == 2 * 2**20
    assert settings.timeout_s == 30 and settings.max_queue == 256 and settings.max_wait_ms == 0
    assert settings.threads == 2


def test_serve_names_the_option_out_of_range(capsys):
    code, _, err = cli(capsys, "serve", "best", "--max-batch", "0", "--timeout", "0")
    assert code == 2
    assert_one_line_error(
        err, "--max-batch: Input should be greater than or equal to 1", "--timeout"
    )


def test_serve_a_missing_model_is_a_clear_error(capsys, tmp_path):
    code, _, err = cli(capsys, "serve", tmp_path / "nowhere")
    assert code == 2
    assert_one_line_error(err, "config.json is missing")
