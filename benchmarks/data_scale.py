"""Data at scale: memory and speed of lazy reading, 10,000 against 100,000 ShapeWorld rows.

(a) One training epoch over every train row, streaming (``data.cache: none``, batch 64, one
DataLoader worker), each size in a fresh subprocess so that peak RSS is that run's own: the
Trainer's process (``ru_maxrss``, the same as ``VmHWM``) and its DataLoader worker
(``RUSAGE_CHILDREN`` once the worker is joined); a thread also samples both every 0.25 s, to
tell a climb with the rows read from a peak. The model is tiny (CNN with 8 channels, 16-dim
text transformer of one layer) so that the epoch is dominated by reading and decoding rows.
The baseline is the small run: lazy reading should keep the large run's peak (trainer +
worker) within 15 % of it, memory being bounded by the batch and the workers, not by the
rows. A diagnostic rerun of both epochs with glibc's mmap threshold fixed
(``MALLOC_MMAP_THRESHOLD_``) shows how much of a peak is freed memory the C heap keeps.

(b) Reading batches alone, no model: the train DataLoader iterated cold (``cache: none``, every
pass reads the manifest row, decodes the PNG and tokenizes) against a warm disk store
(``cache: disk``, built beforehand and not timed), with the same sampler, batch size and
workers (1, the target's, and 0), several passes each after an untimed first pass (worker
start, page faults); the median rows/s are compared. The PNG and manifest bytes sit in the OS
page cache in both, so "cold" means decoding, not disk reads. The reading process uses one
torch thread. One pass of each is also timed in parts in-process: ``dataset[i]`` and collate.

The rows are distinct ShapeWorld scenes (all in the train split) generated once into
``--work`` and reused; the smaller manifests are prefixes of the largest.

    python benchmarks/data_scale.py [--quick] [--rows 10000 100000] [--read-rows 10000]
        [--repeats 3] [--workers 0 1] [--no-diagnostic] [--work DIR] [--out FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch
from machine import load_average, machine, write_report

from polymodal.config import RunConfig, validate
from polymodal.data.dataset import loader, workers_for
from polymodal.data.pipeline import prepare_data
from polymodal.data.shapeworld import generate
from polymodal.demo import packaged_config
from polymodal.models.model import build_model
from polymodal.progress import set_quiet
from polymodal.train.distributed import DistContext
from polymodal.train.sampler import ResumableSampler
from polymodal.train.trainer import Trainer, seed_everything

BATCH_SIZE = 64
WORKERS = 1
SEED = 0
RSS_GROWTH_TARGET = 0.15  # the large run's peak RSS at most 15 % above the small run's
WARM_SPEEDUP_TARGET = 3.0  # a warm disk store reads at least 3x the rows/s of decoding
READ_THREADS = 1  # torch threads of the process that reads batches in (b)
MALLOC_DIAGNOSTIC = {"MALLOC_MMAP_THRESHOLD_": "131072"}
RESULTS = Path("benchmarks/results/data_scale.json")  # quick runs write theirs to --work


# --- the machine ---------------------------------------------------------------------------


def rss_mib(field: str = "VmRSS", pid: int | str = "self") -> float:
    """A process's resident memory (``VmRSS``) or its peak (``VmHWM``), MiB (0 once gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return 0.0


class RssMonitor(threading.Thread):
    """Samples this process's and its children's (the DataLoader workers') RSS every
    ``interval`` seconds: whether memory climbs with the rows read, or only peaks."""

    def __init__(self, interval: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.samples: list[tuple[float, float, float]] = []  # seconds, main MiB, workers MiB
        self.halt = threading.Event()
        self.start_time = time.perf_counter()

    def run(self) -> None:
        while not self.halt.wait(self.interval):
            children = []
            for task in Path("/proc/self/task").iterdir():
                with contextlib.suppress(OSError):  # a thread that ended meanwhile
                    children += (task / "children").read_text().split()
            workers = sum(rss_mib(pid=child) for child in children)
            self.samples.append((time.perf_counter() - self.start_time, rss_mib(), workers))

    def stop(self) -> dict[str, Any]:
        """The samples' summary: peak and second-half median of main + workers, a thinned
        trajectory."""
        self.halt.set()
        self.join()
        samples = [s for s in self.samples if s[2] > 0] or self.samples or [(0.0, 0.0, 0.0)]
        totals = [main + workers for _, main, workers in samples]
        step = max(1, len(samples) // 20)
        return {
            "samples": len(samples),
            "interval_seconds": self.interval,
            "sampled_peak_total_mib": round(max(totals), 1),
            "second_half_median_total_mib": round(statistics.median(totals[len(totals) // 2 :]), 1),
            "trajectory_seconds_main_workers_mib": [
                [round(t, 1), main, workers] for t, main, workers in samples[::step]
            ],
        }


# --- the data and the config ---------------------------------------------------------------


def shapeworld(work: Path, sizes: list[int]) -> tuple[dict[int, Path], dict[str, Any]]:
    """A manifest of each size: ``max(sizes)`` distinct scenes generated once (all train),
    the smaller manifests being its first lines."""
    largest = max(sizes)
    folder = work / f"shapeworld-{largest}-seed{SEED}"
    done = folder / "complete"
    info: dict[str, Any] = {"distinct_scenes": largest, "folder": str(folder)}
    if done.is_file():
        info["generation_seconds"] = None  # reused from an earlier run
    else:
        shutil.rmtree(folder, ignore_errors=True)
        start = time.perf_counter()
        generate(folder, n=largest, seed=SEED, splits=(1.0, 0.0, 0.0))
        info["generation_seconds"] = round(time.perf_counter() - start, 1)
        done.write_text("ok\n")
    full = folder / "manifest.jsonl"
    manifests = {largest: full}
    for size in sorted(set(sizes) - {largest}):
        path = folder / f"manifest-{size}.jsonl"
        if not path.is_file():
            with full.open("rb") as source, path.open("wb") as target:
                for _, line in zip(range(size), source, strict=False):
                    target.write(line)
        manifests[size] = path
    return manifests, info


def tiny_config(manifest: Path, out_dir: Path, cache: str, workers: int) -> RunConfig:
    """The statement classifier (image + statement -> true/false) with tiny encoders."""
    raw = packaged_config("shapeworld_statement", manifest, out_dir).model_dump(mode="json")
    raw["data"].update(cache=cache, workers=workers, cache_dir=str(out_dir / "cache"))
    raw["model"]["encoders"]["image"].update(channels=[8], dim=16)
    raw["model"]["encoders"]["statement"].update(dim=16, layers=1, heads=2)
    raw["model"]["fusion"].update(dim=16)
    raw["model"]["tasks"][0].update(hidden=16)
    raw["train"].update(epochs=1, batch_size=BATCH_SIZE, device="cpu")
    return validate(raw, "data_scale benchmark")


# --- (a) one epoch in a fresh process ------------------------------------------------------


def epoch_child(spec: dict[str, Any]) -> None:
    """Run in the subprocess: prepare the data, train one epoch, write what was measured."""
    set_quiet(True)
    start = time.perf_counter()
    rss_start = rss_mib()
    run_dir = Path(spec["run_dir"])
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    config = tiny_config(Path(spec["manifest"]), run_dir, "none", WORKERS)
    prepare = time.perf_counter()
    data = prepare_data(config.data, config.seed, splits=("train",))
    prepare_seconds = time.perf_counter() - prepare
    rss_prepared = rss_mib()
    train = data.splits["train"]
    seed_everything(config.seed)
    model = build_model(config.model, data.preprocessor)
    dist = DistContext(0, 1, 0, torch.device("cpu"))
    trainer = Trainer(
        model, train, None, config.train, config.data, run_dir, dist, data.quarantine, SEED
    )
    monitor = RssMonitor()
    monitor.start()
    fit = time.perf_counter()
    result = trainer.fit()
    fit_seconds = time.perf_counter() - fit
    sampled = monitor.stop()
    del trainer, result.history[:-1]
    gc.collect()  # the train loader (and its persistent worker) is gone: the worker is joined
    record = result.history[-1]
    report = {
        "rows": len(train),
        "quarantined": len(data.quarantine),
        "steps": -(-len(train) // BATCH_SIZE),
        "torch_threads": torch.get_num_threads(),
        "prepare_seconds": round(prepare_seconds, 2),
        "epoch_seconds": round(len(train) / record["rows_per_s"], 2),
        "fit_seconds": round(fit_seconds, 2),
        "rows_per_s": record["rows_per_s"],
        "data_wait": record["data_wait"],
        "train_loss": round(record["train_loss"], 4),
        "process_seconds": round(time.perf_counter() - start, 2),
        "rss_after_imports_mib": rss_start,
        "rss_after_prepare_mib": rss_prepared,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "vm_hwm_mib": rss_mib("VmHWM"),
        "worker_peak_rss_mib": round(
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1
        ),
        "rss_samples_during_fit": sampled,
    }
    Path(spec["result"]).write_text(json.dumps(report), encoding="utf-8")


def epoch_run(manifest: Path, work: Path, rows: int, env: dict[str, str]) -> dict[str, Any]:
    result = work / f"epoch-{rows}.json"
    result.unlink(missing_ok=True)
    spec = {"manifest": str(manifest), "run_dir": str(work / f"run-{rows}"), "result": str(result)}
    start = time.perf_counter()
    command = [sys.executable, __file__, "--child", json.dumps(spec)]
    subprocess.run(command, check=True, env={**os.environ, **env})
    report = json.loads(result.read_text(encoding="utf-8"))
    report["wall_seconds"] = round(time.perf_counter() - start, 2)  # with python + imports
    return report


def epochs(
    manifests: dict[int, Path], work: Path, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """One epoch per size, each in its own process (with ``env`` added to its environment);
    the growth of the run's peak memory."""
    runs = []
    if env:
        shown = " ".join(f"{k}={v}" for k, v in env.items())
        print(f"diagnostic, not the measure: the same epochs with {shown}")
    for rows, manifest in sorted(manifests.items()):
        run = epoch_run(manifest, work, rows, env or {})
        run["peak_rss_total_mib"] = round(run["peak_rss_mib"] + run["worker_peak_rss_mib"], 1)
        runs.append(run)
        sampled = run["rss_samples_during_fit"]
        print(
            f"epoch over {run['rows']:>7} rows: {run['epoch_seconds']:6.1f} s "
            f"({run['rows_per_s']:.0f} rows/s, data wait {run['data_wait']:.0%}), "
            f"prepare {run['prepare_seconds']:.1f} s, wall {run['wall_seconds']:.1f} s | "
            f"peak RSS trainer {run['peak_rss_mib']:.0f} + worker "
            f"{run['worker_peak_rss_mib']:.0f} = {run['peak_rss_total_mib']:.0f} MiB "
            f"(sampled: peak {sampled['sampled_peak_total_mib']:.0f}, "
            f"2nd-half median {sampled['second_half_median_total_mib']:.0f})"
        )
    small, large = runs[0], runs[-1]

    def growth(key: str) -> float:
        return round(large[key] / small[key] - 1, 4)

    growths = {
        "trainer_process": growth("peak_rss_mib"),
        "worker": growth("worker_peak_rss_mib"),
        "total": growth("peak_rss_total_mib"),
    }
    print(
        f"peak RSS growth {small['rows']} -> {large['rows']} rows: "
        + ", ".join(f"{k} {v:+.1%}" for k, v in growths.items())
        + f" (target: total <= +{RSS_GROWTH_TARGET:.0%})"
    )
    return {
        "environment": env or {},
        "cache": "none",
        "batch_size": BATCH_SIZE,
        "workers": WORKERS,
        "model": "statement classifier: cnn channels [8] dim 16, text transformer dim 16 x 1"
        " layer, concat fusion dim 16, classify hidden 16",
        "runs": runs,
        "peak_rss_growth": growths,
        "target_peak_rss_growth": RSS_GROWTH_TARGET,
        "target_on": "total: the trainer process's peak plus its worker's peak",
        "met": growths["total"] <= RSS_GROWTH_TARGET,
    }


# --- (b) reading batches alone -------------------------------------------------------------


def read_passes(dataset: Any, collate: Any, workers: int, repeats: int) -> dict[str, Any]:
    """An untimed first pass, then ``repeats`` timed passes over the loader, in the
    trainer's order (the shuffled ``ResumableSampler``, a new order each pass)."""
    sampler = ResumableSampler(len(dataset), shuffle=True, seed=SEED)
    batches = loader(dataset, collate, BATCH_SIZE, workers, sampler)
    seconds = []
    for epoch in range(1 + repeats):
        sampler.set_epoch(epoch)
        start = time.perf_counter()
        rows = sum(len(batch) for batch in batches)
        seconds.append(time.perf_counter() - start)
        assert rows == len(dataset), (rows, len(dataset))
    median = statistics.median(seconds[1:])
    del batches
    gc.collect()
    return {
        "first_pass_seconds": round(seconds[0], 3),
        "pass_seconds": [round(s, 3) for s in seconds[1:]],
        "median_seconds": round(median, 3),
        "rows_per_s": round(len(dataset) / median, 1),
    }


def read_splits(dataset: Any, collate: Any) -> dict[str, float]:
    """One pass in this process, timed in parts: ``dataset[i]`` for every row, and the
    collation of each batch (with 1 worker both run in the worker; the rest of a pass is
    moving the batches to this process)."""
    sampler = ResumableSampler(len(dataset), shuffle=True, seed=SEED)
    order = list(sampler)
    getitem = collating = 0.0
    for start in range(0, len(order), BATCH_SIZE):
        begin = time.perf_counter()
        items = [dataset[i] for i in order[start : start + BATCH_SIZE]]
        middle = time.perf_counter()
        collate(items)
        getitem, collating = getitem + middle - begin, collating + time.perf_counter() - middle
    return {"getitem_seconds": round(getitem, 3), "collate_seconds": round(collating, 3)}


def reading(manifest: Path, rows: int, work: Path, repeats: int, workers: list[int]) -> dict:
    # One torch thread in this (the main) process: with 0 workers the collate's float ops run
    # here, and two threads on a 2-CPU machine that others load make them 10-80x slower.
    torch.set_num_threads(READ_THREADS)
    out_dir = work / "read"
    shutil.rmtree(out_dir, ignore_errors=True)
    cold_config = tiny_config(manifest, out_dir, "none", WORKERS)
    cold = prepare_data(cold_config.data, SEED, splits=("train",))
    warm_config = tiny_config(manifest, out_dir, "disk", WORKERS)
    start = time.perf_counter()
    warm = prepare_data(warm_config.data, SEED, splits=("train",))  # builds the store
    build_seconds = time.perf_counter() - start
    store = warm.splits["train"].store
    assert store is not None and store.folder is not None
    store_bytes = sum(f.stat().st_size for f in store.folder.iterdir())
    splits = {
        name: read_splits(data.splits["train"], data.preprocessor.collate)
        for name, data in (("cold", cold), ("warm", warm))
    }
    for name, split in splits.items():
        print(
            f"in-process parts of one pass over {rows} rows, {name}: dataset[i] "
            f"{split['getitem_seconds']:.2f} s, collate {split['collate_seconds']:.2f} s"
        )
    results = []
    for n_workers in workers:
        timed = {
            name: read_passes(data.splits["train"], data.preprocessor.collate, n_workers, repeats)
            for name, data in (("cold", cold), ("warm", warm))
        }
        speedup = timed["warm"]["rows_per_s"] / timed["cold"]["rows_per_s"]
        results.append({"workers": n_workers, **timed, "speedup": round(speedup, 2)})
        print(
            f"reading {rows} rows, {n_workers} worker(s): cold {timed['cold']['rows_per_s']:.0f} "
            f"rows/s, warm disk store {timed['warm']['rows_per_s']:.0f} rows/s, "
            f"{speedup:.1f}x (medians of {repeats}; target >= {WARM_SPEEDUP_TARGET:g}x "
            f"with {WORKERS} worker)"
        )
    # The target compares what a run gets by default: the cold read decodes in worker
    # processes, while the warm store is read in the main process (workers only copy it).
    defaults = {
        name: workers_for(config.data.model_copy(update={"workers": None}))
        for name, config in (("cold", cold_config), ("warm", warm_config))
    }
    by_workers = {r["workers"]: r for r in results}
    primary = None
    if all(n in by_workers for n in defaults.values()):
        cold_rate = by_workers[defaults["cold"]]["cold"]["rows_per_s"]
        warm_rate = by_workers[defaults["warm"]]["warm"]["rows_per_s"]
        primary = {"default_workers": defaults, "speedup": round(warm_rate / cold_rate, 2)}
        print(
            f"with each one's default workers (cold {defaults['cold']}, warm {defaults['warm']}): "
            f"{primary['speedup']:.1f}x (target >= {WARM_SPEEDUP_TARGET:g}x)"
        )
    return {
        "rows": rows,
        "batch_size": BATCH_SIZE,
        "main_process_torch_threads": READ_THREADS,
        "repeats": repeats,
        "store_build_seconds": round(build_seconds, 2),
        "store_mib": round(store_bytes / 2**20, 1),
        "in_process_parts": splits,
        "results": results,
        "defaults": primary,
        "target_speedup": WARM_SPEEDUP_TARGET,
        "target_on": "each read with its default DataLoader workers",
        "met": None if primary is None else primary["speedup"] >= WARM_SPEEDUP_TARGET,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke check")
    parser.add_argument("--rows", type=int, nargs=2, help="small and large epoch sizes")
    parser.add_argument("--read-rows", type=int, help="rows of the reading comparison")
    parser.add_argument("--repeats", type=int, help="timed reading passes")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, WORKERS])
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "polymodal-bench"))
    parser.add_argument("--out", help="default: benchmarks/results/data_scale.json (full mode)")
    parser.add_argument(
        "--no-diagnostic",
        action="store_true",
        help="skip the epochs rerun with a fixed mmap threshold",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        epoch_child(json.loads(args.child))
        return
    set_quiet(True)
    sizes = args.rows or ([2_000, 20_000] if args.quick else [10_000, 100_000])
    read_rows = args.read_rows or (2_000 if args.quick else 10_000)
    repeats = args.repeats or (2 if args.quick else 3)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "benchmark": "data_scale",
        "mode": "quick" if args.quick else "full",
        "machine": machine(),
        "load_average_start": load_average(),
    }
    start = time.perf_counter()
    manifests, report["data"] = shapeworld(work, [*sizes, read_rows])
    made = report["data"]["generation_seconds"]
    print(
        f"{max(sizes)} distinct ShapeWorld scenes (all train) "
        + ("reused" if made is None else f"generated in {made:.0f} s")
        + f"; the smaller manifests are their first rows; machine: {report['machine']['cpu_model']}"
        f", {report['machine']['available_cpus']} CPUs, load {report['load_average_start']}"
    )
    report["epoch"] = epochs({size: manifests[size] for size in sizes}, work)
    if not args.no_diagnostic:
        report["epoch_fixed_mmap_threshold"] = {
            "note": "diagnostic, not the measure: glibc's mmap threshold fixed at 128 KiB (it "
            "otherwise rises after the first multi-MB batch tensor is freed, and the heap then "
            "keeps the freed batches' memory), to tell retained allocator memory from data "
            "that grows with the rows",
            **epochs({size: manifests[size] for size in sizes}, work, MALLOC_DIAGNOSTIC),
        }
    report["read"] = reading(manifests[read_rows], read_rows, work, repeats, args.workers)
    report["targets"] = {
        "peak_rss_growth_at_most": RSS_GROWTH_TARGET,
        "peak_rss_growth_met": report["epoch"]["met"],
        "warm_read_speedup_at_least": WARM_SPEEDUP_TARGET,
        "warm_read_speedup_met": report["read"]["met"],
    }
    out = Path(args.out or (work / "data_scale-quick.json" if args.quick else RESULTS))
    write_report(report, start, out)


if __name__ == "__main__":
    main()
