"""The HTTP service (``polymodal serve``): a saved model's predictions, embeddings, captions,
answers and an index's search, behind FastAPI on uvicorn, with micro-batching, limits, an
optional API key, Prometheus metrics and a web page. The contract: docs/serve.md.

>>> app = create_app(ServeSettings(model_dir="runs/x/best"))  # doctest: +SKIP
>>> serve(ServeSettings(model_dir="runs/x/best"), port=8000, workers=2)  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import gc
import hmac
import io
import logging
import os
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Request, Security
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from swagger_ui_bundle import swagger_ui_path

from polymodal import __version__
from polymodal.errors import ConfigError, DataError
from polymodal.index import VectorIndex
from polymodal.predictor import Predictor
from polymodal.serve.batching import Batched, MicroBatcher, NotRunning, QueueFull
from polymodal.serve.inputs import BodyLimit, read_row, sample_row
from polymodal.serve.monitoring import SHARED_METRICS_ENV, AccessLog, Metrics
from polymodal.serve.schemas import (
    MAX_K,
    AnswerResponse,
    CaptionResponse,
    EmbedResponse,
    ErrorResponse,
    IndexSummary,
    InfoResponse,
    InputColumn,
    Limits,
    PredictResponse,
    RequestModels,
    SearchHit,
    SearchResponse,
    ServeSettings,
    StatusResponse,
    input_columns,
)
from polymodal.tasks import VQA, Caption, Retrieve

SETTINGS_ENV = "POLYMODAL_SERVE_SETTINGS"  # the settings' JSON, for the worker processes
STATIC_DIR = Path(__file__).parent / "static"
DOCS_ASSETS = "/docs-assets"  # Swagger UI's script, style and icon, served for an offline /docs
THUMBNAIL_SIDE = 256
RETRY_AFTER = {"Retry-After": "1"}
FIELD_KEYS = ("query", "gallery", "image", "target")  # task config keys that name fields
LIMITS = set(Limits.model_fields) - {"max_k"}  # the settings /v1/info reports

KEY_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False, description="the API key")
BEARER = HTTPBearer(auto_error=False, description="the API key as a bearer token")

log = logging.getLogger("polymodal.serve")


@dataclass(frozen=True)
class SearchQuery:
    kind: str
    value: Any
    k: int


@dataclass(frozen=True)
class RowRequest:
    """A row to predict and the tasks its endpoint needs (None: every task)."""

    row: dict[str, Any]
    tasks: frozenset[str] | None = None


class Service:
    """What the endpoints share: the predictor, the index, their batchers, the metrics and
    whether the service is ready (warmed up, not shutting down)."""

    def __init__(
        self, settings: ServeSettings, predictor: Predictor, index: VectorIndex | None
    ) -> None:
        self.settings, self.predictor, self.index = settings, predictor, index
        self.metrics = Metrics()
        self.ready = False
        model = predictor.model
        self.columns = input_columns(model.preprocessor, model.inputs)
        self.row_models = RequestModels("Row", self.columns)
        self.tasks = model.tasks
        self.embedded: dict[str, str] = {}  # field -> the first retrieval task embedding it
        for name, task in self.tasks.items():
            if isinstance(task, Retrieve):
                for side in (task.query, task.gallery):
                    self.embedded.setdefault(side, name)
        self.predictions = self._batcher("predict", self._predict)
        self.search_models: RequestModels | None = None
        self.searches: MicroBatcher[SearchQuery, list[dict[str, Any]]] | None = None
        if index is not None:
            self.search_models = RequestModels("Search", self.query_columns(index), search=True)
            self.searches = self._batcher("search", self._search)

    def _batcher(self, name: str, process: Callable[[list[Any]], list[Any]]) -> MicroBatcher:
        on_depth, on_batch = self.metrics.watch_queue(name)
        return MicroBatcher(
            process,
            self.settings.max_batch,
            self.settings.max_wait_ms,
            self.settings.max_queue,
            on_batch=on_batch,
            on_depth=on_depth,
            name=name,
        )

    @staticmethod
    def query_columns(index: VectorIndex) -> list[InputColumn]:
        """The columns a search may give: the sides of the index's retrieval task."""
        task = index.model.tasks[index.info.task]
        assert isinstance(task, Retrieve)
        return input_columns(index.model.preprocessor, [task.query, task.gallery])

    # --- processing, in the batchers' worker threads -----------------------------------------

    def _predict(self, requests: list[RowRequest]) -> list[dict[str, Any]]:
        """One prediction of the batch's rows, of every task some request needs."""
        tasks: set[str] | None = set()
        for request in requests:
            tasks = None if tasks is None or request.tasks is None else tasks | request.tasks
        return self.predictor.predict([request.row for request in requests], tasks=tasks)

    def _search(self, queries: list[SearchQuery]) -> list[list[dict[str, Any]]]:
        assert self.index is not None
        vectors = np.zeros((len(queries), self.index.info.dim), np.float32)
        for kind in {query.kind for query in queries}:
            at = [i for i, query in enumerate(queries) if query.kind == kind]
            values = [queries[i].value for i in at]
            vectors[at] = self.index.query_vectors(kind, values, Path.cwd())
        found = self.index.search(vectors, max(query.k for query in queries))
        return [hits[: query.k] for hits, query in zip(found, queries, strict=True)]

    # --- serving --------------------------------------------------------------------------------

    @asynccontextmanager
    async def lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        """Start the batchers and warm the model up; on shutdown, finish what is queued.

        After the warm-up, every object alive (the model, the app: some 200k objects) is moved
        out of the garbage collector's sight (``gc.freeze``): a full collection traversing them
        stalled every request in flight for 130-200 ms, the service's worst latencies. They are
        handed back on shutdown."""
        batchers = [b for b in (self.predictions, self.searches) if b is not None]
        for batcher in batchers:
            await batcher.start()
        await asyncio.to_thread(self.warm_up)
        gc.collect()
        gc.freeze()
        self.ready = True
        log.info("ready: %s", self.settings.model_dir)
        try:
            yield
        finally:
            self.ready = False
            for batcher in batchers:
                await batcher.stop()
            gc.unfreeze()  # what the service held may be collected once it is gone

    def warm_up(self) -> None:
        """One prediction (and search) of placeholder values, so the first request is not slow."""
        row = sample_row(self.columns)
        if row:
            self._predict([RowRequest(row)])
        if self.index is not None and self.search_models is not None:
            queries = sample_row(list(self.search_models.columns.values()))
            self._search([SearchQuery(self.query_kind(c), v, 1) for c, v in queries.items()])

    def query_kind(self, column: str) -> str:
        """The kind of the index model's field that search column ``column`` feeds."""
        assert self.index is not None and self.search_models is not None
        field = self.search_models.columns[column].field
        return self.index.model.preprocessor.schema.fields[field].kind

    async def run(self, request: Request, batcher: MicroBatcher, item: Any) -> Any:
        """``item``'s result from ``batcher``; 503 when not ready or full, 504 past the
        timeout, 422 for a row the model cannot read."""
        if not self.ready:
            raise HTTPException(503, "the service is starting or stopping; retry", RETRY_AFTER)
        try:
            done: Batched = await asyncio.wait_for(batcher.submit(item), self.settings.timeout_s)
        except (QueueFull, NotRunning) as err:
            raise HTTPException(503, f"{err}; retry shortly", RETRY_AFTER) from None
        except TimeoutError:
            raise HTTPException(
                504, f"no answer within {self.settings.timeout_s:g} s; the service is busy, retry"
            ) from None
        except DataError as err:  # the row alone was predicted: it is "row 0"
            raise HTTPException(422, str(err).removeprefix("row 0: ")) from None
        request.state.batch_size = done.batch_size
        return done.value

    async def predict(self, request: Request, *tasks: str) -> dict[str, Any]:
        """The prediction of the request's row by ``tasks`` (every task if none is named)."""
        row = await read_row(request, self.row_models, self.settings)
        return await self.predict_row(request, row.values, *tasks)

    async def predict_row(self, request: Request, row: dict[str, Any], *tasks: str) -> Any:
        item = RowRequest(row, frozenset(tasks) if tasks else None)
        return await self.run(request, self.predictions, item)

    def first_task(self, kind: type, what: str) -> str:
        """The name of the model's first task of ``kind``; 404 without one."""
        for name, task in self.tasks.items():
            if isinstance(task, kind):
                return name
        raise HTTPException(
            404,
            f"this model has no {what} task (GET /v1/info lists its tasks); serve a model "
            f"trained with one",
        )

    def task_summary(self, config: Any) -> dict[str, Any]:
        """A task's name, type, the fields its config names and the input fields it reads."""
        named = {k: v for k, v in config.model_dump().items() if k in FIELD_KEYS}
        sides = [v for k, v in named.items() if k != "target"]
        reads = self.predictor.model.fused_inputs.get(config.name) or sides
        return {"name": config.name, "type": config.type, **named, "inputs": list(reads)}

    def thumbnail_url(self, item: dict[str, Any], item_id: int) -> str | None:
        assert self.index is not None
        return None if image_value(self.index, item) is None else f"/v1/items/{item_id}/image"

    def info(self) -> InfoResponse:
        return InfoResponse(
            inputs=self.columns,
            tasks=[self.task_summary(task) for task in self.predictor.model.config.tasks],
            index=None
            if self.index is None or self.search_models is None
            else IndexSummary(
                size=len(self.index),
                field=self.index.info.field,
                kind=self.index.info.kind,
                query_inputs=list(self.search_models.columns.values()),
            ),
            limits=Limits(max_k=MAX_K, **self.settings.model_dump(include=LIMITS)),
        )

    def thumbnail(self, item_id: int) -> bytes:
        """A PNG of the indexed item's image, its longest side at most THUMBNAIL_SIDE."""
        assert self.index is not None
        item = self.index.items.get(item_id)
        if item is None:
            raise HTTPException(404, f"no item {item_id} in the index")
        value = image_value(self.index, item)
        if value is None:
            raise HTTPException(404, f"item {item_id} has no image")
        base = Path(self.settings.data_dir or self.index.data_dir(item_id) or Path.cwd())
        path = base / str(value)  # an absolute path stays itself
        try:
            with Image.open(path) as img:
                img.draft("RGB", (THUMBNAIL_SIDE, THUMBNAIL_SIDE))  # JPEG: decode reduced
                img.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
                out = io.BytesIO()
                img.convert("RGB").save(out, format="PNG")
        except (OSError, UnidentifiedImageError, ValueError):
            raise HTTPException(
                404, f"item {item_id}'s image {value} cannot be read under {base} (--data-dir)"
            ) from None
        return out.getvalue()


def image_value(index: VectorIndex, item: dict[str, Any]) -> Any:
    """The item's image cell: the indexed field's when it is an image, else the first image
    field's, else None."""
    fields = index.model.preprocessor.schema.fields
    images = sorted(name for name, spec in fields.items() if spec.kind == "image")
    for name in ([index.info.field] if index.info.field in images else []) + images:
        if item.get(name):
            return item[name]
    return None


# --- the app ------------------------------------------------------------------------------------


def create_app(
    settings: ServeSettings,
    predictor: Predictor | None = None,
    index: VectorIndex | None = None,
) -> FastAPI:
    """The service for ``settings``. The model (and index) are loaded from its folders unless
    given; the service is ready once its lifespan has started and warmed the model up."""
    if predictor is None:
        predictor = Predictor.from_pretrained(
            settings.model_dir, backend=settings.backend, threads=settings.threads
        )
    if index is None and settings.index_dir:
        index = VectorIndex.load(settings.index_dir)
        if Path(index.info.model_dir).resolve() == Path(settings.model_dir).resolve():
            index.model = predictor.model  # one copy of the weights, not two
    service = Service(settings, predictor, index)
    app = FastAPI(
        title="polymodal serve",
        version=__version__,
        description="Predictions, embeddings, captions, answers and search from a polymodal "
        "model. Images and audio: base64 (or a data URL) in JSON, or file parts of a "
        "multipart/form-data form.",
        lifespan=service.lifespan,
        docs_url=None,  # served by _add_open_routes from the bundled Swagger UI
        redoc_url=None,
    )
    app.state.service = service
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(AccessLog, metrics=service.metrics, routes=app.routes)
    app.add_exception_handler(RequestValidationError, _validation_error)
    _add_open_routes(app, service)
    _add_v1_routes(app, service, _key_check(settings.api_key))
    app.openapi = lambda: _openapi(app, service)  # type: ignore[method-assign]
    return app


def app_from_env() -> FastAPI:
    """The app factory each worker process of ``--workers N`` calls: settings from the
    environment variable SETTINGS_ENV."""
    return create_app(ServeSettings.model_validate_json(os.environ[SETTINGS_ENV]))


async def _validation_error(request: Request, err: Exception) -> JSONResponse:
    """FastAPI's own 422s (a path parameter) as one sentence, like every other error."""
    assert isinstance(err, RequestValidationError)
    detail = "; ".join(f"field '{e['loc'][-1]}': {e['msg']}" for e in err.errors())
    return JSONResponse({"detail": detail}, 422)


def _key_check(api_key: str | None) -> list[Any]:
    """The dependency that refuses a request without the API key (none without a key)."""
    if api_key is None:
        return []
    expected = api_key.encode()

    async def check(
        key: Annotated[str | None, Security(KEY_HEADER)],
        token: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)],
    ) -> None:
        given = key if key is not None else (token.credentials if token else None)
        if given is None or not hmac.compare_digest(given.encode(), expected):
            raise HTTPException(
                401,
                "missing or wrong API key: send it as X-API-Key: KEY or Authorization: Bearer KEY",
                {"WWW-Authenticate": "Bearer"},
            )

    return [Depends(check)]


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    meanings = {
        401: "missing or wrong API key",
        404: "the model or service lacks this capability, or no such item",
        413: "the body is over the size limit",
        422: "a malformed, wrong-typed, unknown or over-limit field (named in detail)",
        503: "the queue is full, or the service is not ready: retry after Retry-After seconds",
        504: "no answer within the timeout",
    }
    return {code: {"model": ErrorResponse, "description": meanings[code]} for code in codes}


def _add_open_routes(app: FastAPI, service: Service) -> None:
    """The page, its files, the probes and the docs: open without the API key."""

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR, check_dir=False), name="static")
    app.mount(DOCS_ASSETS, StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=f"{app.title} - API",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon-32x32.png",
        )

    @app.get("/healthz", response_model=StatusResponse, summary="the process is up")
    async def healthz() -> StatusResponse:
        return StatusResponse(status="ok")

    @app.get(
        "/readyz",
        response_model=StatusResponse,
        responses=_errors(503),
        summary="ready: the model is loaded and warm, the service is not shutting down",
    )
    async def readyz() -> StatusResponse:
        if not service.ready:
            raise HTTPException(503, "not ready: starting or shutting down", RETRY_AFTER)
        return StatusResponse(status="ready")


def _add_v1_routes(app: FastAPI, service: Service, auth: list[Any]) -> None:
    """The API: each route needs the API key when one is set."""
    locked = _errors(401) if auth else {}
    rows = {**locked, **_errors(404, 413, 422, 503, 504)}
    row_body = _request_body(service.row_models)

    @app.get(
        "/metrics",
        dependencies=auth,
        responses={**locked, 200: {"content": {"text/plain": {}}}},
        response_class=Response,
        summary="Prometheus metrics",
    )
    async def metrics() -> Response:
        return Response(service.metrics.render(), media_type=service.metrics.content_type)

    def row_endpoint(path: str, response_model: type[BaseModel]) -> Callable[..., Any]:
        """A POST endpoint reading one row (JSON or multipart) behind the API key."""
        return app.post(
            path,
            dependencies=auth,
            response_model=response_model,
            responses=rows,
            openapi_extra=row_body,
        )

    @app.get("/v1/info", dependencies=auth, response_model=InfoResponse, responses=locked)
    async def info() -> InfoResponse:
        """The inputs the model reads, its tasks, the index and the limits."""
        return service.info()

    @row_endpoint("/v1/predict", response_model=PredictResponse)
    async def predict(request: Request) -> PredictResponse:
        """Every task's prediction for one row."""
        result = await service.predict(request)
        absent = result.pop("absent_inputs")
        return PredictResponse(outputs=result, absent_inputs=absent)

    @row_endpoint("/v1/embed", response_model=EmbedResponse)
    async def embed(request: Request) -> EmbedResponse:
        """The embedding of each given field that a retrieval task embeds."""
        service.first_task(Retrieve, "retrieve")  # 404 without one
        row = await read_row(request, service.row_models, service.settings)
        fields = {service.row_models.columns[c].field for c in row.values} & set(service.embedded)
        if fields:
            tasks = {service.embedded[field] for field in fields}
            result = await service.predict_row(request, row.values, *tasks)
            fields -= set(result["absent_inputs"])  # given empty
        if not fields:
            names = ", ".join(service.embedded)
            raise HTTPException(422, f"give a value to a field a retrieval task embeds: {names}")
        return EmbedResponse(
            embeddings={f: result[service.embedded[f]][f"{f}_embedding"] for f in sorted(fields)}
        )

    @row_endpoint("/v1/caption", response_model=CaptionResponse)
    async def caption(request: Request) -> CaptionResponse:
        """The caption the model's caption task writes for the row's image."""
        name = service.first_task(Caption, "caption")
        return CaptionResponse(**(await service.predict(request, name))[name])

    @row_endpoint("/v1/answer", response_model=AnswerResponse)
    async def answer(request: Request) -> AnswerResponse:
        """The answer of the model's VQA task to the row's question about its image."""
        name = service.first_task(VQA, "vqa")
        result = (await service.predict(request, name))[name]
        top = result["top_answers"]
        return AnswerResponse(answer=result["answer"], score=top[0]["score"], top=top)

    search_body = _request_body(service.search_models) if service.search_models else {}

    @app.post(
        "/v1/search",
        dependencies=auth,
        response_model=SearchResponse,
        responses=rows,
        openapi_extra=search_body,
    )
    async def search(request: Request) -> SearchResponse:
        """The k indexed items nearest to one query field's value."""
        if service.searches is None or service.search_models is None:
            raise HTTPException(404, "no index is served; start the service with --index INDEX_DIR")
        row = await read_row(request, service.search_models, service.settings)
        if len(row.values) != 1:
            fields = ", ".join(service.search_models.columns)
            raise HTTPException(422, f"give exactly one query field, one of: {fields}")
        ((column, value),) = row.values.items()
        query = SearchQuery(service.query_kind(column), value, row.k or 10)
        hits = await service.run(request, service.searches, query)
        return SearchResponse(
            results=[
                SearchHit(**hit, thumbnail=service.thumbnail_url(hit["item"], hit["id"]))
                for hit in hits
            ]
        )

    @app.get(
        "/v1/items/{item_id}/image",
        dependencies=auth,
        responses={**locked, **_errors(404, 422), 200: {"content": {"image/png": {}}}},
        response_class=Response,
    )
    async def item_image(item_id: int) -> Response:
        """A PNG thumbnail (longest side 256) of an indexed item's image."""
        if service.index is None:
            raise HTTPException(404, "no index is served; start the service with --index")
        png = await run_in_threadpool(service.thumbnail, item_id)
        return Response(png, media_type="image/png", headers={"Cache-Control": "max-age=3600"})


def _request_body(models: RequestModels) -> dict[str, Any]:
    """The OpenAPI request body of a route reading ``models``: JSON or a multipart form."""
    ref = "#/components/schemas/{}"
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": ref.format(models.json.__name__)}},
                "multipart/form-data": {"schema": {"$ref": ref.format(models.form.__name__)}},
            },
        }
    }


def _openapi(app: FastAPI, service: Service) -> dict[str, Any]:
    """FastAPI's schema, with the request models the routes read themselves."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for models in (service.row_models, service.search_models):
            for model in (models.json, models.form) if models else ():
                components.update(_component(model))
        app.openapi_schema = schema
    return app.openapi_schema


def _component(model: type[BaseModel]) -> dict[str, Any]:
    """``model``'s JSON schema and those of the models it holds, keyed by name."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    return {**schema.pop("$defs", {}), model.__name__: jsonable_encoder(schema)}


def log_config() -> dict[str, Any]:
    """uvicorn's logging, with the service's own loggers (the access log among them)."""
    from uvicorn.config import LOGGING_CONFIG

    config = {**LOGGING_CONFIG, "loggers": dict(LOGGING_CONFIG["loggers"])}
    config["loggers"]["polymodal.serve"] = {
        "handlers": ["default"],
        "level": "INFO",
        "propagate": False,
    }
    return config


def serve(
    settings: ServeSettings, host: str = "127.0.0.1", port: int = 8000, workers: int = 1
) -> None:
    """Run the service until SIGINT or SIGTERM (in-flight requests are finished). With
    several ``workers``, each process loads the model itself, and their metrics go to a fresh
    temporary folder (removed at exit), so that each one's /metrics covers them all."""
    import uvicorn

    if workers < 1:
        raise ConfigError(f"--workers {workers}: give 1 or more processes")
    if settings.threads is None and workers > 1:  # not every worker on every core
        settings = settings.model_copy(update={"threads": max(1, (os.cpu_count() or 1) // workers)})
    app = create_app(settings)  # a missing or broken model fails here, before any worker starts
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "access_log": False,  # AccessLog logs each request, with its latency and batch size
        "log_config": log_config(),
        "timeout_graceful_shutdown": int(settings.timeout_s) + 5,
    }
    if workers == 1:
        uvicorn.run(app, **options)
        return
    del app
    os.environ[SETTINGS_ENV] = settings.model_dump_json()
    with tempfile.TemporaryDirectory(prefix="polymodal-metrics-") as shared_metrics:
        os.environ[SHARED_METRICS_ENV] = shared_metrics  # the spawned workers inherit it
        try:
            uvicorn.run(f"{__name__}:app_from_env", factory=True, workers=workers, **options)
        finally:
            del os.environ[SHARED_METRICS_ENV]
