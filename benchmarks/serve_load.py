"""Serving under load: ``polymodal serve`` with micro-batching against batch-1 serving.

The model is the packaged ShapeWorld statement classifier (image CNN + statement transformer,
concat fusion, a true/false head) trained briefly on generated scenes, or the one ``--model``
names. Two real ``polymodal serve`` processes run it, one micro-batching (``--max-batch 32
--max-wait-ms 0``, the defaults), one serving each request alone (``--max-batch 1``); both stay
up for the whole run, and only one is under load at a time. Clients in this process (asyncio,
one httpx client and keep-alive connection each) send ``POST /v1/predict`` back to back: JSON
bodies holding a scene's PNG in base64 and its statement (64 distinct rows, encoded once). At
each number of clients, every round loads both servers for ``--duration`` seconds each (which
goes first alternates); requests that start in the first ``--warmup`` seconds are left out.
Reported per server and number of clients, medians over the rounds: requests/s, p50 and p99
latency, the mean batch size (the server's batch-size histogram), the CPUs the server and the
clients used, the server's CPU milliseconds per request, errors (summed); and the micro-
batching / batch-1 throughput ratio.

Where the time goes is measured too: in this process, with the server's torch threads, one
row's base64 + PNG decoding and preprocessing, the forward pass at batch 1 and per row at
``--max-batch``, postprocessing, and the CPU milliseconds per row of a whole prediction at
both; and the server's CPU milliseconds per bare ``GET /healthz`` (HTTP alone).

    python benchmarks/serve_load.py [--model DIR] [--rows 2000] [--epochs 2]
        [--clients 1 8 32 64] [--duration 10] [--warmup 2] [--rounds 3] [--threads N]
        [--max-batch 32] [--max-wait-ms 0] [--work DIR] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch
from machine import load_average, machine, write_report
from study import markdown

from polymodal.data.shapeworld import generate
from polymodal.demo import packaged_config
from polymodal.predictor import Predictor
from polymodal.progress import set_quiet
from polymodal.serve.process import ServiceProcess
from polymodal.train.run import run_training

RESULTS = Path(__file__).parent / "results" / "serve_load.json"
TABLE = Path(__file__).parent.parent / "docs" / "serve_load.md"
REQUEST_ROWS = 64
GOAL_CLIENTS = 32
GOAL_RATIO = 3.0  # micro-batching's throughput over batch-1's at GOAL_CLIENTS
GOAL_TAIL = 2.0  # micro-batching's p99 over its p50 at GOAL_CLIENTS, at most
TIMED_REPEATS = 30


# --- the model and the requests --------------------------------------------------------------


def trained_model(work: Path, rows: int, epochs: int, threads: int | None) -> Path:
    """The statement classifier trained for ``epochs`` on ``rows`` scenes, once per ``work``."""
    out = work / f"statement-{rows}-{epochs}"
    if (out / "shapeworld_statement" / "best" / "config.json").is_file():
        return out / "shapeworld_statement" / "best"
    manifest = generate(work / f"shapeworld-{rows}", n=rows, seed=0)
    config = packaged_config("shapeworld_statement", manifest, out)
    config.train.epochs = epochs
    config.train.threads = threads
    return run_training(config, log=print).model_dir


def request_bodies(model_dir: Path, work: Path) -> list[bytes]:
    """JSON bodies for /v1/predict: REQUEST_ROWS scenes' PNG (base64) and statement."""
    manifest = generate(work / "requests", n=REQUEST_ROWS, seed=1)
    predictor = Predictor.from_pretrained(model_dir)
    columns = predictor.model.preprocessor.input_columns(predictor.model.inputs)
    bodies = []
    for line in manifest.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        inputs = {c: row[c] for c in columns}
        inputs["image"] = base64.b64encode((manifest.parent / row["image"]).read_bytes()).decode()
        bodies.append(json.dumps({"inputs": inputs}).encode())
    return bodies


# --- the servers -------------------------------------------------------------------------------


@dataclass
class Server:
    """A ``polymodal serve`` process under one name (its settings)."""

    name: str
    service: ServiceProcess

    @classmethod
    def start(
        cls, name: str, model_dir: Path, log: Path, threads: int | None, *options: str
    ) -> Server:
        """``polymodal serve model_dir *options``, once ready."""
        flags = ["--threads", str(threads)] if threads else []
        options = ("--max-queue", "1024", *flags, *options)
        return cls(name, ServiceProcess.start(model_dir, log, *options))

    @property
    def url(self) -> str:
        return self.service.url

    def cpu_seconds(self) -> float:
        return self.service.cpu_seconds()

    def batches(self) -> tuple[float, float]:
        """The sum and count of the predictions' batch-size histogram in /metrics."""
        from prometheus_client.parser import text_string_to_metric_families

        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        found = {"sum": 0.0, "count": 0.0}
        for family in text_string_to_metric_families(text):
            if family.type == "histogram" and "batch" in family.name:
                for sample in family.samples:
                    kind = sample.name.rsplit("_", 1)[-1]
                    if kind in found and sample.labels.get("queue") == "predict":
                        found[kind] += sample.value
        return found["sum"], found["count"]

    def stop(self) -> None:
        self.service.stop()


# --- the load ----------------------------------------------------------------------------------


async def drive(
    url: str, path: str, bodies: list[bytes], clients: int, duration: float, warmup: float
) -> dict[str, Any]:
    """``clients`` clients sending requests (``bodies`` in turn; a GET without) back to back
    for ``duration`` seconds; what the requests that started after ``warmup`` measured."""
    latencies: list[float] = []
    errors, sent = 0, 0
    headers = {"Content-Type": "application/json"}
    start = time.perf_counter()
    measured, end = start + warmup, start + duration

    async def one_client(offset: int) -> None:
        """Its own client: one shared pool of many connections costs the client far more CPU
        per request as they grow (httpx#3215), which would starve the server of CPU."""
        nonlocal errors, sent
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            for turn in itertools.count(offset):
                if (began := time.perf_counter()) >= end:
                    return
                try:
                    if bodies:
                        body = bodies[turn % len(bodies)]
                        answer = await client.post(path, content=body, headers=headers)
                    else:
                        answer = await client.get(path)
                    ok = answer.status_code == 200
                except httpx.HTTPError:
                    ok = False
                sent += 1
                if began >= measured:
                    latencies.append(time.perf_counter() - began)
                    errors += not ok

    cpu = time.process_time()
    await asyncio.gather(*(one_client(i * 7) for i in range(clients)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - measured
    p50, p99 = np.percentile(latencies, [50, 99]) * 1000
    return {
        "requests_per_second": len(latencies) / wall,
        "p50_ms": float(p50),
        "p99_ms": float(p99),
        "errors": errors,
        "requests": len(latencies),
        "sent": sent,
        "client_cores": cpu / (wall + warmup),
    }


def measured_run(
    server: Server, path: str, bodies: list[bytes], clients: int, args: argparse.Namespace
) -> dict[str, Any]:
    """One load run on ``server``, with the CPU it used and its mean batch size."""
    sums, cpu, start = server.batches(), server.cpu_seconds(), time.perf_counter()
    result = asyncio.run(drive(server.url, path, bodies, clients, args.duration, args.warmup))
    cpu = server.cpu_seconds() - cpu
    result["server_cores"] = cpu / (time.perf_counter() - start)
    result["server_cpu_ms_per_request"] = 1000 * cpu / result.pop("sent")
    rows, batches = (a - b for a, b in zip(server.batches(), sums, strict=True))
    if batches:
        result["mean_batch"] = rows / batches
    return result


def medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each number's median over the rounds; errors and requests summed."""
    out = {k: round(statistics.median(r[k] for r in runs), 2) for k in runs[0]}
    out.update(errors=sum(r["errors"] for r in runs), requests=sum(r["requests"] for r in runs))
    return out


def load(
    model_dir: Path, bodies: list[bytes], settings: dict[str, str], args: argparse.Namespace
) -> dict[str, Any]:
    """Both servers up, each loaded in turn at each number of clients, ``args.rounds`` times;
    the medians per server and number of clients, and the bare ``GET /healthz`` run."""
    log = args.work / "serve_load.log"
    servers = [
        Server.start(name, model_dir, log, args.threads, *options.split())
        for name, options in settings.items()
    ]
    runs: dict[str, dict[int, list[dict[str, Any]]]] = {s.name: {} for s in servers}
    try:
        for clients in args.clients:
            for round_ in range(args.rounds):
                for server in servers[:: 1 if round_ % 2 == 0 else -1]:
                    result = measured_run(server, "/v1/predict", bodies, clients, args)
                    runs[server.name].setdefault(clients, []).append(result)
                    print(f"{server.name}, {clients} clients: {result}", flush=True)
        healthz = measured_run(servers[0], "/healthz", [], max(args.clients), args)
    finally:
        for server in servers:
            server.stop()
    medians_by_server = {
        name: {str(c): medians(r) for c, r in by_clients.items()}
        for name, by_clients in runs.items()
    }
    return {**medians_by_server, "healthz": {k: round(v, 2) for k, v in healthz.items()}}


# --- where the time goes -------------------------------------------------------------------------


def timed_ms(work: Callable[[], Any], clock: Callable[[], float] = time.perf_counter) -> float:
    """Median milliseconds by ``clock`` of ``work()`` over TIMED_REPEATS calls, after one."""
    work()
    times = []
    for _ in range(TIMED_REPEATS):
        start = clock()
        work()
        times.append(clock() - start)
    return 1000 * statistics.median(times)


def breakdown(model_dir: Path, bodies: list[bytes], max_batch: int) -> dict[str, float]:
    """Milliseconds per row of each stage of a prediction in this process (wall clock), and
    the CPU milliseconds per row of a whole prediction (all threads) at batch 1 and batched."""
    predictor = Predictor.from_pretrained(model_dir)
    here = Path(".")

    def row(body: bytes) -> dict[str, Any]:
        inputs = json.loads(body)["inputs"]
        return {**inputs, "image": base64.b64decode(inputs["image"])}

    rows = [row(body) for body in bodies[:max_batch]]
    one, full = predictor.preprocess(rows[:1], here), predictor.preprocess(rows, here)
    outputs = predictor.forward(full[0])
    n = len(rows)
    return {
        "batched_rows": n,
        "json_base64_preprocess_ms_per_row": timed_ms(
            lambda: predictor.preprocess([row(bodies[0])], here)
        ),
        "forward_ms_batch_1": timed_ms(lambda: predictor.forward(one[0])),
        "forward_ms_per_row_batched": timed_ms(lambda: predictor.forward(full[0])) / n,
        "postprocess_ms_per_row": timed_ms(lambda: predictor.postprocess(outputs, full[1])) / n,
        "predict_cpu_ms_batch_1": timed_ms(lambda: predictor.predict(rows[:1]), time.process_time),
        "predict_cpu_ms_per_row_batched": timed_ms(
            lambda: predictor.predict(rows), time.process_time
        )
        / n,
    }


# --- the report -------------------------------------------------------------------------------


def table(report: dict[str, Any]) -> str:
    columns = ("requests_per_second", "p50_ms", "p99_ms", "server_cpu_ms_per_request")
    rows = []
    for clients, ratio in report["throughput_ratio"].items():
        batched, single = report["batched"][clients], report["batch_1"][clients]
        rows.append(
            [
                clients,
                *(f"{batched[c]:.1f}" for c in columns),
                f"{batched['mean_batch']:.1f}",
                batched["errors"],
                *(f"{single[c]:.1f}" for c in columns),
                single["errors"],
                f"{ratio:.2f}",
            ]
        )
    named = ["req/s", "p50 ms", "p99 ms", "CPU ms/req"]
    header = ["clients", *(f"batched {n}" for n in named), "mean batch", "errors"]
    header += [*(f"batch-1 {n}" for n in named), "errors", "ratio"]
    return markdown(header, rows)


def goals(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The issue's two goals at GOAL_CLIENTS clients: what was measured and whether met."""
    ratio = report["throughput_ratio"][str(GOAL_CLIENTS)]
    batched = report["batched"][str(GOAL_CLIENTS)]
    tail = round(batched["p99_ms"] / batched["p50_ms"], 2)
    return {
        f"throughput_ratio_at_{GOAL_CLIENTS}_clients": {
            "value": ratio,
            "goal": f">= {GOAL_RATIO:g}",
            "met": ratio >= GOAL_RATIO,
        },
        f"batched_p99_over_p50_at_{GOAL_CLIENTS}_clients": {
            "value": tail,
            "goal": f"<= {GOAL_TAIL:g}",
            "met": tail <= GOAL_TAIL,
        },
    }


def cpu_bound(at: dict[str, dict[str, Any]]) -> float:
    """Batch-1's server CPU per request over micro-batching's: the throughput ratio's bound
    when the machine's CPUs are the limit."""
    single, batched = (at[n].get("server_cpu_ms_per_request") for n in ("batch_1", "batched"))
    return single / batched if single and batched else float("nan")


def docs_page(report: dict[str, Any], text: str) -> str:
    """docs/serve_load.md: the table, the goals, where the time goes, how to reproduce."""
    threads = report["threads"]
    cpu = report["breakdown_ms"]
    at = {name: report[name].get(str(GOAL_CLIENTS), {}) for name in ("batched", "batch_1")}
    lines = [
        "# Serving under load\n",
        f"`polymodal serve` micro-batching (`{report['settings']['batched']}`) against batch-1 "
        f"serving (`{report['settings']['batch_1']}`): `POST /v1/predict` with the ShapeWorld "
        "statement classifier (a 64 px PNG in base64 and a statement per request), clients in "
        f"one process on the same machine; medians of {report['rounds']} rounds of "
        f"{report['duration_seconds']:g} s ({report['warmup_seconds']:g} s of warm-up left out), "
        f"inference threads: {threads or 'every CPU'}, {report['machine']['available_cpus']} CPUs "
        f"({report['machine']['cpu_model']}), load average at the start "
        f"{report['load_average_start'][0]}. Every number: benchmarks/results/serve_load.json. "
        "Reproduce: `python benchmarks/serve_load.py"
        + (f" --threads {threads}`.\n" if threads else "`.\n"),
        text + "\n",
        *(
            f"- {name}: {goal['value']} (goal {goal['goal']}): "
            + ("met" if goal["met"] else "not met")
            for name, goal in report.get("goals", {}).items()
        ),
        "",
        f"Where the time goes. In one process, a whole prediction costs "
        f"{cpu['predict_cpu_ms_batch_1']:.2f} CPU ms at batch 1 and "
        f"{cpu['predict_cpu_ms_per_row_batched']:.2f} per row at batch {cpu['batched_rows']} "
        f"(the forward pass {cpu['forward_ms_batch_1']:.2f} ms, then "
        f"{cpu['forward_ms_per_row_batched']:.2f} per row; decoding and preprocessing "
        f"{cpu['json_base64_preprocess_ms_per_row']:.2f} and postprocessing "
        f"{cpu['postprocess_ms_per_row']:.2f} per row either way). The servers spend "
        f"{at['batch_1'].get('server_cpu_ms_per_request', float('nan')):.2f} (batch-1) and "
        f"{at['batched'].get('server_cpu_ms_per_request', float('nan')):.2f} (micro-batching) "
        f"CPU ms per request at {GOAL_CLIENTS} clients, and "
        f"{report['healthz']['server_cpu_ms_per_request']:.2f} on a bare `GET /healthz`; the "
        f"clients took {at['batched'].get('client_cores', float('nan')):.2f} CPUs at "
        f"{GOAL_CLIENTS} clients. With every CPU busy (servers and clients share them), "
        "throughput follows CPU time per request: their quotient, "
        f"{cpu_bound(at):.2f}, bounds the throughput ratio at {GOAL_CLIENTS} clients. What "
        "batching cannot share stays per request: decoding and preprocessing its row, and "
        "its HTTP and JSON work.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="a saved model (default: train one)")
    parser.add_argument("--rows", type=int, default=2000, help="scenes to train on")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per run")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds left out of each")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--threads", type=int, default=None, help="inference threads (default: all)"
    )
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=0.0)
    parser.add_argument(
        "--work", type=Path, default=Path(tempfile.gettempdir()) / "polymodal-bench"
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run: 300 rows, 1 round")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.epochs, args.duration, args.warmup, args.rounds = 300, 1, 3.0, 1.0, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    set_quiet(True)
    start, load_at_start = time.perf_counter(), load_average()
    args.work.mkdir(parents=True, exist_ok=True)
    model_dir = args.model or trained_model(args.work, args.rows, args.epochs, args.threads)
    bodies = request_bodies(model_dir, args.work)
    settings = {
        "batched": f"--max-batch {args.max_batch} --max-wait-ms {args.max_wait_ms:g}",
        "batch_1": "--max-batch 1 --max-wait-ms 0",
    }
    report: dict[str, Any] = {
        "model": str(model_dir),
        "settings": settings,
        "duration_seconds": args.duration,
        "warmup_seconds": args.warmup,
        "rounds": args.rounds,
        "threads": args.threads,
        **load(model_dir, bodies, settings, args),
    }
    report["throughput_ratio"] = {
        str(c): round(
            report["batched"][str(c)]["requests_per_second"]
            / report["batch_1"][str(c)]["requests_per_second"],
            2,
        )
        for c in args.clients
    }
    report["breakdown_ms"] = {
        k: round(v, 3) for k, v in breakdown(model_dir, bodies, args.max_batch).items()
    }
    if GOAL_CLIENTS in args.clients:
        report["goals"] = goals(report)
    report.update(machine=machine(), load_average_start=load_at_start)
    text = table(report)
    print(text)
    print(json.dumps({k: report[k] for k in ("breakdown_ms", "goals") if k in report}, indent=1))
    if args.quick:  # a smoke run: its numbers stay in the work folder
        write_report(report, start, args.work / "serve_load-quick.json")
        return
    TABLE.write_text(docs_page(report, text), encoding="utf-8")
    write_report(report, start, RESULTS)


if __name__ == "__main__":
    main()
