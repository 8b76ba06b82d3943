"""Prometheus metrics of one app (its own registry) and the access log: method, path, status,
latency and batch size of each request, never its payload or its API key."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

access_log = logging.getLogger("polymodal.serve.access")

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    """Requests by endpoint and status, latency, batch sizes and queue depths."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "polymodal_requests",
            "HTTP requests answered, by endpoint and status",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "polymodal_request_seconds",
            "time to answer a request, by endpoint",
            ["endpoint"],
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "polymodal_batch_size",
            "rows per batch processed, by queue",
            ["queue"],
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "polymodal_queue_depth",
            "rows waiting for a batch, by queue",
            ["queue"],
            registry=self.registry,
        )

    def watch_queue(self, name: str, depth: Callable[[], int]) -> Callable[[int], None]:
        """Report queue ``name``'s depth; the callback that records its batch sizes."""
        self.queue_depth.labels(name).set_function(depth)
        return self.batch_size.labels(name).observe

    def render(self) -> bytes:
        return generate_latest(self.registry)


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
