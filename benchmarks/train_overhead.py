"""Training overhead: polymodal's Trainer against a hand-written PyTorch loop.

Both train the same model from the same initial weights on the same batches, in one process:
one ``MultimodalModel`` is built (the ShapeWorld statement classifier as packaged: image CNN
+ statement transformer, concat fusion, a true/false head) and its initial state copied; each
run loads that state. The data is a warm disk store (``data.cache: disk``, built beforehand and
not timed) read by the DataLoader that ``polymodal.data.dataset.loader`` makes, with the
trainer's shuffled ``ResumableSampler`` (seed, epoch 1), the trainer's number of workers and
the trainer's number of torch threads for both.

The hand loop is what one writes without a framework: AdamW with two parameter groups (weight
matrices decay; biases and norms do not), LambdaLR with linear warmup then cosine decay over
the same total steps, ``model.loss(batch)``, backward, ``clip_grad_norm_``, step, zero_grad.

Timing is per optimizer step for both: a timestamp right after each optimizer step (for the
Trainer, in a subclass that wraps ``Trainer._step``), so the time between two stamps is one
whole iteration: waiting for the batch, forward, backward, clipping, the step, and whatever
bookkeeping the loop does (the Trainer's progress, quarantine and TensorBoard calls). The
medians over the steps after a warm-up are compared within each round (a trainer run and a
hand run back to back), and the median of the rounds' ratios is the result; the main thread's
CPU time per step (``time.thread_time``; with one torch thread the model runs in it) is
compared too, being less moved by other processes. Nothing outside the step loop is in
them: the run has no val split (no validation), and the Trainer's end-of-epoch work
(metrics.jsonl, saving ``best/``, the checkpoint) is reported apart. Runs alternate (hand
first, then trainer first, ...) so a change in the machine's load hits both. The data-wait
fraction is the one the Trainer records in its metrics.jsonl. The batches, the losses and the
final weights are compared, to show that both did the same work.

    python benchmarks/train_overhead.py [--quick] [--rows 10000] [--rounds 6] [--warmup 5]
        [--work DIR] [--out FILE]
"""

from __future__ import annotations

import argparse
import copy
import itertools
import math
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from machine import load_average, machine, write_report

from polymodal.config import RunConfig, validate
from polymodal.data.dataset import RowDataset, loader, workers_for
from polymodal.data.pipeline import PreparedData, prepare_data
from polymodal.data.shapeworld import generate
from polymodal.demo import packaged_config
from polymodal.models.model import MultimodalModel, build_model
from polymodal.progress import set_quiet
from polymodal.train.distributed import DistContext
from polymodal.train.sampler import ResumableSampler
from polymodal.train.trainer import Trainer, choose_threads, seed_everything

SEED = 0
STEP_RATIO_TARGET = 1.05  # the Trainer's median step at most 5 % slower than the hand loop's
DATA_WAIT_TARGET = 0.05  # at most 5 % of the Trainer's epoch spent waiting for batches
PARAGRAPHS = __doc__.split("\n\n")
RESULTS = Path("benchmarks/results/train_overhead.json")  # quick runs write theirs to --work


# --- the machine ---------------------------------------------------------------------------


# --- data, config, model -------------------------------------------------------------------


def shapeworld(work: Path, rows: int) -> tuple[Path, float | None]:
    """``rows`` distinct ShapeWorld scenes, all train, generated once into ``work``."""
    folder = work / f"shapeworld-{rows}-seed{SEED}"
    if (folder / "complete").is_file():
        return folder / "manifest.jsonl", None
    shutil.rmtree(folder, ignore_errors=True)
    start = time.perf_counter()
    manifest = generate(folder, n=rows, seed=SEED, splits=(1.0, 0.0, 0.0))
    (folder / "complete").write_text("ok\n")
    return manifest, round(time.perf_counter() - start, 1)


def make_config(manifest: Path, out_dir: Path) -> RunConfig:
    raw = packaged_config("shapeworld_statement", manifest, out_dir).model_dump(mode="json")
    raw["data"].update(cache="disk", cache_dir=str(out_dir / "cache"))  # workers: the default
    raw["train"].update(epochs=1, device="cpu")
    return validate(raw, "train_overhead benchmark")


# --- the two loops -------------------------------------------------------------------------


class Run:
    """What one epoch of either loop leaves: a stamp after each optimizer step, the losses, a
    key of each batch (its manifest lines), the time spent waiting for batches."""

    def __init__(self) -> None:
        self.stamps: list[float] = []
        self.cpu_stamps: list[float] = []  # the main thread's CPU time (time.thread_time)
        self.losses: list[float] = []
        self.batches: list[int] = []
        self.waiting = 0.0
        self.first_wait = 0.0  # of the waiting, for the first batch (the worker starting)
        self.seconds = 0.0
        self.state: dict[str, torch.Tensor] = {}

    def steps(self, warmup: int) -> list[float]:
        """Seconds of each whole iteration after the first ``warmup``."""
        return [b - a for a, b in itertools.pairwise(self.stamps)][warmup:]

    def cpu_steps(self, warmup: int) -> list[float]:
        """CPU seconds of the main thread in each iteration after the first ``warmup``."""
        return [b - a for a, b in itertools.pairwise(self.cpu_stamps)][warmup:]


class TimedTrainer(Trainer):
    """The Trainer as is, noting a timestamp after each optimizer step, each batch's rows and
    loss (two list appends per step, as the hand loop does)."""

    run: Run

    def _accumulate(self, wrapped, model, batch, precision, scaler) -> float:
        loss = super()._accumulate(wrapped, model, batch, precision, scaler)
        self.run.losses.append(loss)
        self.run.batches.append(hash(tuple(batch.rows)))
        return loss

    def _step(self, model, optimizer, scaler) -> None:
        super()._step(model, optimizer, scaler)
        self.run.stamps.append(time.perf_counter())
        self.run.cpu_stamps.append(time.thread_time())


def trainer_epoch(
    model: MultimodalModel, data: PreparedData, config: RunConfig, run_dir: Path
) -> tuple[Run, dict[str, Any]]:
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    dist = DistContext(0, 1, 0, torch.device("cpu"))
    train = data.splits["train"]
    trainer = TimedTrainer(
        model, train, None, config.train, config.data, run_dir, dist, data.quarantine, SEED
    )
    trainer.run = run = Run()
    start = time.perf_counter()
    result = trainer.fit()
    run.seconds = time.perf_counter() - start
    run.state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    record = result.history[-1]
    return run, {
        "rows_per_s": record["rows_per_s"],
        "data_wait": record["data_wait"],
        "record_seconds": record["seconds"],
    }


def hand_epoch(
    model: MultimodalModel, train: RowDataset, config: RunConfig, workers: int, threads: int
) -> Run:
    """One epoch of a plain PyTorch loop over the same loader and sampler order."""
    cfg = config.train
    torch.set_num_threads(threads)
    sampler = ResumableSampler(len(train), shuffle=True, seed=SEED)
    sampler.set_epoch(1)  # the Trainer's first epoch
    batches = loader(train, model.preprocessor.collate, cfg.batch_size, workers, sampler)
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": no_decay, "weight_decay": 0.0}, {"params": decay}],
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
    )
    total = cfg.epochs * math.ceil(len(train) / cfg.batch_size)
    warmup = int(cfg.warmup_ratio * total)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    seed_everything(SEED)  # where the Trainer seeds: dropout draws the same numbers
    model.train()
    run = Run()
    start = time.perf_counter()
    iterator = iter(batches)
    while True:
        asked = time.perf_counter()
        batch = next(iterator, None)
        run.waiting += time.perf_counter() - asked
        if not run.stamps:
            run.first_wait = run.waiting
        if batch is None:
            break
        loss, _ = model.loss(batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        run.stamps.append(time.perf_counter())
        run.cpu_stamps.append(time.thread_time())
        scheduler.step()
        run.losses.append(float(loss.detach()))
        run.batches.append(hash(tuple(batch.rows)))
    run.seconds = time.perf_counter() - start
    run.state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return run


# --- the benchmark -------------------------------------------------------------------------


def receive_cost(
    train: RowDataset, collate: Any, batch_size: int, workers: int, batches: int
) -> dict[str, Any]:
    """Where the data wait goes: ``next()`` on the same loader when the worker has had time to
    have the batch ready (the main process sleeps 0.15 s between batches, leaving a CPU free),
    so what remains is handing the batch over (each tensor a shared-memory file whose
    descriptor the main process fetches from the worker); and, with no worker, reading and
    collating the batch in-process."""
    out: dict[str, Any] = {"batches": batches}
    for n_workers in sorted({workers, 0}, reverse=True):
        sampler = ResumableSampler(len(train), shuffle=True, seed=SEED)
        sampler.set_epoch(1)
        iterator = iter(loader(train, collate, batch_size, n_workers, sampler))
        first = next(iterator)
        seconds = []
        for _ in range(batches):
            time.sleep(0.15)
            asked = time.perf_counter()
            next(iterator)
            seconds.append(time.perf_counter() - asked)
        out[f"{n_workers}_workers_next_median_ms"] = round(1000 * statistics.median(seconds), 2)
        del iterator
    out["tensors_per_batch"] = sum(
        len(part) for part in (first.values, first.present, first.lengths)
    )
    return out


def summary(steps: list[float]) -> dict[str, float]:
    return {
        "steps": len(steps),
        "median_ms": round(1000 * statistics.median(steps), 2),
        "mean_ms": round(1000 * statistics.fmean(steps), 2),
        "p90_ms": round(1000 * float(np.percentile(steps, 90)), 2),
    }


def run(rows: int, rounds: int, warmup: int, work: Path) -> dict[str, Any]:
    manifest, generated = shapeworld(work, rows)
    out_dir = work / "overhead"
    shutil.rmtree(out_dir, ignore_errors=True)
    config = make_config(manifest, out_dir)
    start = time.perf_counter()
    data = prepare_data(config.data, config.seed, splits=("train",), cache_dir=out_dir / "cache")
    build_seconds = time.perf_counter() - start
    train = data.splits["train"]
    workers = workers_for(config.data)
    threads = choose_threads(workers, config.train.threads)
    seed_everything(config.seed)
    model = build_model(config.model, data.preprocessor)
    initial = copy.deepcopy(model.state_dict())
    n_parameters = sum(p.numel() for p in model.parameters())
    print(
        f"{len(train)} rows (warm disk store built in {build_seconds:.1f} s, not timed), "
        f"batch {config.train.batch_size}, {workers} worker(s), {threads} torch thread(s), "
        f"model {n_parameters:,} parameters; {rounds} rounds, alternating which loop goes first"
    )
    results = []
    runs: dict[str, list[Run]] = {"trainer": [], "hand": []}
    for index in range(rounds):
        order = ["hand", "trainer"] if index % 2 == 0 else ["trainer", "hand"]
        entry: dict[str, Any] = {"round": index + 1, "order": order}
        for name in order:
            model.load_state_dict(initial)
            if name == "trainer":
                done, recorded = trainer_epoch(model, data, config, out_dir / f"run-{index}")
                entry["trainer_recorded"] = recorded
            else:
                done = hand_epoch(model, train, config, workers, threads)
            runs[name].append(done)
            entry[name] = {
                **summary(done.steps(warmup)),
                "cpu_median_ms": round(1000 * statistics.median(done.cpu_steps(warmup)), 2),
                "epoch_seconds": round(done.seconds, 2),
                "steps_seconds": round(done.stamps[-1] - done.stamps[0], 2),
            }
        trainer, hand = runs["trainer"][-1], runs["hand"][-1]
        entry["trainer"]["outside_steps_seconds"] = round(
            trainer.seconds - (trainer.stamps[-1] - trainer.stamps[0]), 2
        )
        entry["hand"]["outside_steps_seconds"] = round(
            hand.seconds - (hand.stamps[-1] - hand.stamps[0]), 2
        )
        entry["hand"]["data_wait"] = round(hand.waiting / hand.seconds, 4)
        entry["hand"]["first_batch_wait_seconds"] = round(hand.first_wait, 3)
        entry["hand"]["data_wait_after_first_batch"] = round(
            (hand.waiting - hand.first_wait) / (hand.seconds - hand.first_wait), 4
        )
        entry["step_ratio"] = round(entry["trainer"]["median_ms"] / entry["hand"]["median_ms"], 3)
        entry["cpu_step_ratio"] = round(
            entry["trainer"]["cpu_median_ms"] / entry["hand"]["cpu_median_ms"], 3
        )
        entry["same_batches"] = trainer.batches == hand.batches
        entry["max_loss_difference"] = max(
            abs(a - b) for a, b in zip(trainer.losses, hand.losses, strict=True)
        )
        entry["max_weight_difference"] = max(
            float((trainer.state[k].float() - hand.state[k].float()).abs().max())
            for k in trainer.state
        )
        results.append(entry)
        print(
            f"round {index + 1} ({' then '.join(order)}): step median trainer "
            f"{entry['trainer']['median_ms']:.1f} ms, hand {entry['hand']['median_ms']:.1f} ms, "
            f"ratio {entry['step_ratio']:.3f} (CPU time {entry['cpu_step_ratio']:.3f}); data wait "
            f"trainer {entry['trainer_recorded']['data_wait']:.1%}, hand "
            f"{entry['hand']['data_wait']:.1%}; same batches "
            f"{entry['same_batches']}, max weight difference {entry['max_weight_difference']:.2g}"
        )
    pooled = {
        name: summary([s for r in done for s in r.steps(warmup)]) for name, done in runs.items()
    }
    pooled_ratio = pooled["trainer"]["median_ms"] / pooled["hand"]["median_ms"]
    ratio = statistics.median(r["step_ratio"] for r in results)
    cpu_ratio = statistics.median(r["cpu_step_ratio"] for r in results)
    data_wait = statistics.median(r["trainer_recorded"]["data_wait"] for r in results)
    hand_wait = statistics.median(r["hand"]["data_wait"] for r in results)
    print(
        f"step ratio trainer/hand: median of the rounds' {ratio:.3f} (target <= "
        f"{STEP_RATIO_TARGET}), pooled medians {pooled_ratio:.3f} (trainer "
        f"{pooled['trainer']['median_ms']:.1f} ms, hand {pooled['hand']['median_ms']:.1f} ms), "
        f"main-thread CPU time {cpu_ratio:.3f}; trainer data wait {data_wait:.1%} (hand loop "
        f"{hand_wait:.1%}; target <= {DATA_WAIT_TARGET:.0%})"
    )
    probes = 20 if len(train) < 5000 else 40
    receive = receive_cost(
        train, model.preprocessor.collate, config.train.batch_size, workers, probes
    )
    receive["as_share_of_trainer_median_step"] = round(
        receive[f"{workers}_workers_next_median_ms"] / pooled["trainer"]["median_ms"], 4
    )
    print(
        f"next() with the batch ready: {receive[f'{workers}_workers_next_median_ms']:.1f} ms "
        f"({workers} worker(s), {receive['tensors_per_batch']} tensors handed over per batch; "
        f"{receive['as_share_of_trainer_median_step']:.1%} of the trainer's median step), "
        f"{receive['0_workers_next_median_ms']:.1f} ms reading and collating in-process"
    )
    return {
        "data": {
            "rows": len(train),
            "generation_seconds": generated,
            "cache": "disk (warm)",
            "store_build_seconds": round(build_seconds, 2),
            "batch_size": config.train.batch_size,
            "workers": workers,
            "torch_threads": threads,
        },
        "model": {
            "config": "shapeworld_statement as packaged",
            "encoders": config.model.model_dump(mode="json")["encoders"],
            "parameters": n_parameters,
        },
        "warmup_steps": warmup,
        "rounds": results,
        "pooled": pooled,
        "step_ratio": round(ratio, 3),
        "step_ratio_is": "the median over rounds of each round's ratio of median step times",
        "pooled_step_ratio": round(pooled_ratio, 3),
        "cpu_step_ratio": round(cpu_ratio, 3),
        "trainer_data_wait": data_wait,
        "hand_data_wait": hand_wait,
        "data_wait_split": receive,
        "targets": {
            "step_ratio_at_most": STEP_RATIO_TARGET,
            "step_ratio_met": ratio <= STEP_RATIO_TARGET,
            "data_wait_at_most": DATA_WAIT_TARGET,
            "data_wait_met": data_wait <= DATA_WAIT_TARGET,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small run: a smoke check")
    parser.add_argument("--rows", type=int, help="train rows (one epoch per run)")
    parser.add_argument("--rounds", type=int, help="runs of each loop, alternating")
    parser.add_argument("--warmup", type=int, help="steps left out of each run's timings")
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "polymodal-bench"))
    parser.add_argument("--out", help="default: benchmarks/results/train_overhead.json (full)")
    args = parser.parse_args()
    set_quiet(True)
    rows = args.rows or (3_000 if args.quick else 10_000)
    rounds = args.rounds or (2 if args.quick else 6)
    warmup = args.warmup if args.warmup is not None else (3 if args.quick else 5)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "benchmark": "train_overhead",
        "mode": "quick" if args.quick else "full",
        "machine": machine(),
        "load_average_start": load_average(),
        "method": " ".join(next(p for p in PARAGRAPHS if p.startswith("Timing")).split()),
    }
    start = time.perf_counter()
    print(f"machine: {report['machine']['cpu_model']}, load {report['load_average_start']}")
    report.update(run(rows, rounds, warmup, work))
    out = Path(args.out or (work / "train_overhead-quick.json" if args.quick else RESULTS))
    write_report(report, start, out)


if __name__ == "__main__":
    main()
