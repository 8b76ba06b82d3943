"""Prometheus metrics of one app (its own registry) and the access log: method, path, status,
latency and batch size of each request, never its payload or its API key.

With several worker processes, the folder in the environment variable SHARED_METRICS_ENV
(prometheus_client's multiprocess mode: set before the workers import prometheus_client, as
``serve`` does) holds each process's values, and every worker's /metrics sums them all."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

access_log = logging.getLogger("polymodal.serve.access")

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
SHARED_METRICS_ENV = "PROMETHEUS_MULTIPROC_DIR"


class Metrics:
    """Requests by endpoint and status, latency, batch sizes and queue depths: in the app's own
    registry; or, when SHARED_METRICS_ENV names a folder, in that folder's files, which
    ``render`` sums over the processes that wrote them."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.shared_dir = os.environ.get(SHARED_METRICS_ENV)
        self.registry = CollectorRegistry()
        own: CollectorRegistry | None = self.registry
        if self.shared_dir:  # the registry renders the files; the metrics go in them only
            multiprocess.MultiProcessCollector(self.registry, self.shared_dir)
            own = None
        self.requests = Counter(
            "polymodal_requests",
            "HTTP requests answered, by endpoint and status",
            ["endpoint", "status"],
            registry=own,
        )
        self.latency = Histogram(
            "polymodal_request_seconds",
            "time to answer a request, by endpoint",
            ["endpoint"],
            registry=own,
        )
        self.batch_size = Histogram(
            "polymodal_batch_size",
            "rows per batch processed, by queue",
            ["queue"],
            buckets=BATCH_BUCKETS,
            registry=own,
        )
        self.queue_depth = Gauge(
            "polymodal_queue_depth",
            "rows waiting for a batch, by queue",
            ["queue"],
            multiprocess_mode="livesum",
            registry=own,
        )

    def watch_queue(self, name: str) -> tuple[Callable[[int], None], Callable[[int], None]]:
        """The callbacks that record queue ``name``'s depth and its batch sizes. With several
        workers the depth is the sum of the live workers' depths ("livesum")."""
        return self.queue_depth.labels(name).set, self.batch_size.labels(name).observe

    def render(self) -> bytes:
        if self.shared_dir:
            forget_ended_processes(self.shared_dir)
        return generate_latest(self.registry)


def forget_ended_processes(folder: str) -> None:
    """Remove the queue depths of the processes that wrote them to ``folder`` and no longer run
    (a worker that crashed or was replaced); their counts and histograms stay in the sums."""
    for path in Path(folder).glob("gauge_live*_*.db"):
        pid = int(path.stem.rsplit("_", 1)[1])
        if not running(pid):
            with contextlib.suppress(FileNotFoundError):  # another worker's render removed it
                multiprocess.mark_process_dead(pid, folder)


def running(pid: int) -> bool:
    """Whether process ``pid`` exists; True where that cannot be asked (not POSIX)."""
    if os.name != "posix":
        return True  # os.kill would end the process there
    try:
        os.kill(pid, 0)  # signal 0: only checks the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        pass
    return True


class AccessLog:
    """ASGI middleware: counts and times each request by its route (among ``routes``, for a
    request answered before routing), and logs it with the batch size an endpoint put in
    ``request.state.batch_size``."""

    def __init__(self, app: ASGIApp, metrics: Metrics, routes: list[BaseRoute]) -> None:
        self.app, self.metrics, self.routes = app, metrics, routes

    def endpoint(self, scope: Scope) -> str:
        """The path template of the request's route; "unmatched" for no route."""
        route = scope.get("route") or next(
            (r for r in self.routes if r.matches(scope)[0] == Match.FULL), None
        )
        return getattr(route, "path", None) or "unmatched"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            seconds = time.perf_counter() - start
            endpoint = self.endpoint(scope)
            self.metrics.requests.labels(endpoint, str(status)).inc()
            self.metrics.latency.labels(endpoint).observe(seconds)
            batch = scope.get("state", {}).get("batch_size")
            access_log.info(
                "%s %s %d %.1f ms%s",
                scope["method"],
                scope["path"],
                status,
                seconds * 1000,
                "" if batch is None else f" batch={batch}",
            )
