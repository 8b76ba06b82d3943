"""DDP: two processes (gloo, CPU) train what one process trains with the same global batch.

Same seed, same global batches (rank r takes every second row of the one order), dropout off
and no batch-norm (per-rank statistics would differ by design), so the only difference is
float summation order. Stated tolerances: the models' outputs and every weight agree within
1e-5, except the key third of attention's input bias: softmax is blind to it, so its true
gradient is zero and AdamW turns the float noise left there into steps of up to the learning
rate each; it is held to learning rate x steps (and the outputs show it does not matter).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from polymodal.models.model import MultimodalModel, build_model
from polymodal.train.trainer import seed_everything

CONFIG = """\
name: {name}
seed: 3
data:
  manifest: {manifest}
  workers: 0
model:
  inputs: [text, price]
  encoders:
    text: {{type: transformer, dim: 16, layers: 1, heads: 2, dropout: 0.0}}
    price: {{type: mlp, dim: 16, hidden: 16, dropout: 0.0}}
  fusion: {{dim: 16, dropout: 0.0}}
  tasks: [{task}]
train:
  epochs: 2
  batch_size: 8
  lr: {lr}
  out_dir: {out}
"""
TASKS = {
    "classifier": "{type: classify, target: label, hidden: 16, dropout: 0.0}",
    "retrieval": "{type: retrieve, query: text, gallery: price, dim: 16}",
}
# An image CNN read only through its pooled vector (concat, retrieval): its token projection
# gets no gradient. Its batch norm normalises each rank's rows apart, so these runs are not
# compared with one process.
IMAGE_CONFIG = """\
name: {name}
seed: 3
data:
  manifest: {manifest}
  workers: 0
  image: {{size: 16}}
model:
  inputs: [image, text]
  encoders:
    image: {{type: cnn, dim: 16, channels: [8, 8]}}
    text: {{type: transformer, dim: 16, layers: 1, heads: 2, dropout: 0.0}}
  fusion: {{type: concat, dim: 16, dropout: 0.0}}
  tasks: [{task}]
train:
  epochs: 2
  batch_size: 8
  out_dir: {out}
"""
IMAGE_TASKS = {
    "classifier": TASKS["classifier"],
    "retrieval": "{type: retrieve, query: image, gallery: text, dim: 16}",
}
# polymodal's command line with rank 1 slow to check the run directory, as under CPU load
LATE_RANK_1 = """\
import os, runpy, sys, time

import polymodal.train.run as run

if os.environ["RANK"] == "1":
    check = run.refuse_existing
    run.refuse_existing = lambda *args: (time.sleep(5), check(*args))[1]
sys.argv[0] = "polymodal"
runpy.run_module("polymodal", run_name="__main__")
"""
TOLERANCE = 1e-5
LR, STEPS = 0.01, 4  # 2 epochs of 16 train rows in global batches of 8


def train(config: Path, processes: int, program: tuple[str, ...] = ("-m", "polymodal")) -> None:
    env = {**os.environ, "CI": "true", "OMP_NUM_THREADS": "1"}
    launch = [sys.executable, *program]
    if processes > 1:
        launch = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={processes}",
            *program,
        ]
    done = subprocess.run(
        [*launch, "train", str(config), "--device", "cpu"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.slow
@pytest.mark.parametrize("task", list(TASKS))
def test_two_processes_train_what_one_does(tmp_path, tiny_manifest, task):
    runs = {}
    for processes in (1, 2):
        out = tmp_path / f"p{processes}"
        config = tmp_path / f"p{processes}.yaml"
        text = CONFIG.format(name=task, manifest=tiny_manifest, task=TASKS[task], out=out, lr=LR)
        config.write_text(text, encoding="utf-8")
        train(config, processes)
        runs[processes] = out / task
    one, two = (load_file(runs[p] / "best" / "model.safetensors") for p in (1, 2))
    assert one.keys() == two.keys()
    for key in one:
        a, b = one[key], two[key]
        if key.endswith("self_attn.in_proj_bias"):  # query, key, value thirds
            third = len(a) // 3
            assert (a[third : 2 * third] - b[third : 2 * third]).abs().max() <= LR * STEPS
            a, b = torch.cat([a[:third], a[2 * third :]]), torch.cat([b[:third], b[2 * third :]])
        torch.testing.assert_close(b, a, rtol=0, atol=TOLERANCE, msg=key)
    models = [MultimodalModel.from_pretrained(runs[p] / "best") for p in (1, 2)]
    rows = [json.loads(line) for line in tiny_manifest.read_text().splitlines()]
    batch = models[0].preprocessor.collate(
        [models[0].preprocessor.example(row, tiny_manifest.parent) for row in rows]
    )
    with torch.no_grad():
        outputs = [model(batch) for model in models]
    for name, value in outputs[0].items():
        for key, tensor in value.items() if isinstance(value, dict) else [("", value)]:
            torch.testing.assert_close(
                (outputs[1][name][key] if key else outputs[1][name]).float(),
                tensor.float(),
                rtol=0,
                atol=TOLERANCE,
            )
    history = [
        [json.loads(line) for line in (runs[p] / "metrics.jsonl").read_text().splitlines()]
        for p in (1, 2)
    ]
    # Validation covers the whole split on 2 ranks too. Retrieval's score is a mean of recalls
    # over 4 val rows: weights equal within 1e-5 can still reorder two near-tied gallery items,
    # moving one row's rank in one recall (1/4 of one of its 6 recalls) and no more.
    score_tolerance = 1e-6 if task == "classifier" else 1 / 24 + 1e-6
    for a, b in zip(*history, strict=True):
        assert b["val_score"] == pytest.approx(a["val_score"], abs=score_tolerance)
        assert b["train_loss"] == pytest.approx(a["train_loss"], abs=1e-5)
    assert len(list((runs[2] / "tensorboard").glob("events.*"))) == 1  # the main process only


@pytest.mark.slow
@pytest.mark.parametrize("task", list(IMAGE_TASKS))
def test_two_processes_train_an_image_cnn_read_through_its_pooled_vector(
    tmp_path, tiny_manifest, task
):
    config = tmp_path / "run.yaml"
    text = IMAGE_CONFIG.format(
        name=task, manifest=tiny_manifest, task=IMAGE_TASKS[task], out=tmp_path
    )
    config.write_text(text, encoding="utf-8")
    train(config, processes=2)
    run = tmp_path / task
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [record["epoch"] for record in history] == [1, 2]
    assert all(math.isfinite(record["train_loss"]) for record in history)
    best = MultimodalModel.from_pretrained(run / "best")
    seed_everything(3)  # as the run did before building its model
    initial, trained = build_model(best.config, best.preprocessor).state_dict(), best.state_dict()
    # The unread head is saved under its name, as initialised; the read one learned.
    unread, read = "encoders.image.token_proj.weight", "encoders.image.pool_proj.1.weight"
    assert torch.equal(trained[unread], initial[unread])
    assert not torch.equal(trained[read], initial[read])


@pytest.mark.slow
def test_the_run_directory_is_made_once_every_process_has_checked_it(tmp_path, tiny_manifest):
    script = tmp_path / "late_rank_1.py"
    script.write_text(LATE_RANK_1, encoding="utf-8")
    config = tmp_path / "run.yaml"
    text = CONFIG.format(
        name="late", manifest=tiny_manifest, task=TASKS["classifier"], out=tmp_path, lr=LR
    )
    config.write_text(text, encoding="utf-8")
    train(config, processes=2, program=(str(script),))  # rank 1 must not find it made
    assert (tmp_path / "late" / "best" / "model.safetensors").is_file()
