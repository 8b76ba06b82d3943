"""The service through its HTTP interface: every endpoint with JSON and multipart inputs, the
answers to each client mistake, the API key, micro-batching of concurrent requests, a full
queue, timeouts, readiness, metrics and the access log."""

from __future__ import annotations

import base64
import io
import logging
import os
import re
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from polymodal.index import VectorIndex
from polymodal.predictor import Predictor
from polymodal.serve.app import create_app
from polymodal.serve.schemas import ServeSettings
from polymodal.tasks import Caption

QUESTION = "what colour is the square?"


class GatedPredictor:
    """A predictor that records the size and the tasks of each ``predict`` call and, while its
    gate is closed, holds every call back."""

    def __init__(self, inner: Predictor) -> None:
        self.inner, self.model = inner, inner.model
        self.calls: list[int] = []
        self.tasks: list[set[str] | None] = []
        self.gate, self.entered = threading.Event(), threading.Event()
        self.gate.set()

    def predict(
        self, rows: list[dict[str, Any]], base_dir: str | Path = ".", tasks: Any = None
    ) -> list[dict]:
        self.entered.set()
        assert self.gate.wait(20), "the test never opened the gate"
        self.calls.append(len(rows))
        self.tasks.append(None if tasks is None else set(tasks))
        return self.inner.predict(rows, base_dir, tasks)


@pytest.fixture(scope="module")
def predictor(served_model) -> Predictor:
    return Predictor.from_pretrained(served_model.model_dir)


@pytest.fixture(scope="module")
def index(served_model) -> VectorIndex:
    return VectorIndex.load(served_model.index_dir)


@pytest.fixture(scope="module")
def png(served_model) -> bytes:
    return served_model.image.read_bytes()


@pytest.fixture(scope="module")
def b64(png: bytes) -> str:
    return base64.b64encode(png).decode()


def settings(served_model, **changes: Any) -> ServeSettings:
    folders = {
        "model_dir": str(served_model.model_dir),
        "index_dir": str(served_model.index_dir),
    }
    return ServeSettings(**{**folders, **changes})


def client_for(served_model, predictor, index=None, **changes: Any) -> TestClient:
    return TestClient(create_app(settings(served_model, **changes), predictor, index))


@pytest.fixture(scope="module")
def client(served_model, predictor, index) -> Iterator[TestClient]:
    with client_for(served_model, predictor, index) as client:
        yield client


# --- endpoints --------------------------------------------------------------------------------


def test_info_describes_inputs_tasks_index_and_limits(client: TestClient) -> None:
    info = client.get("/v1/info").json()
    assert {(i["name"], i["kind"]) for i in info["inputs"]} == {
        ("image", "image"),
        ("question", "text"),
        ("caption", "text"),
    }
    tasks = {task["name"]: task for task in info["tasks"]}
    assert tasks["retrieve_image_caption"]["query"] == "image"
    assert tasks["retrieve_image_caption"]["gallery"] == "caption"
    assert tasks["vqa_answers"]["inputs"] == ["image", "question"]
    assert tasks["caption_captions"]["type"] == "caption"
    assert info["index"]["size"] == 36 and info["index"]["field"] == "image"
    assert {c["name"] for c in info["index"]["query_inputs"]} == {"image", "caption"}
    assert info["limits"]["max_body_bytes"] == 16 * 2**20
    assert info["limits"]["max_image_pixels"] == 4096 * 4096


def test_predict_from_json_and_from_a_form_is_the_predictors_answer(
    client: TestClient, predictor: Predictor, png: bytes, b64: str
) -> None:
    expected = predictor.predict([{"image": png, "question": QUESTION}])[0]
    absent = expected.pop("absent_inputs")
    by_json = client.post("/v1/predict", json={"inputs": {"image": b64, "question": QUESTION}})
    by_form = client.post(
        "/v1/predict", files={"image": ("scene.png", png, "image/png")}, data={"question": QUESTION}
    )
    data_url = f"data:image/png;base64,{b64}"
    by_url = client.post("/v1/predict", json={"inputs": {"image": data_url, "question": QUESTION}})
    for answer in (by_json, by_form, by_url):
        assert answer.status_code == 200, answer.text
        assert answer.json()["absent_inputs"] == absent == ["caption"]
        assert answer.json()["outputs"] == expected  # floats survive JSON exactly


def test_caption_and_answer(client: TestClient, predictor: Predictor, png: bytes, b64: str):
    expected = predictor.predict([{"image": png, "question": QUESTION}])[0]
    caption = client.post("/v1/caption", json={"inputs": {"image": b64}}).json()
    assert caption == expected["caption_captions"]
    answer = client.post("/v1/answer", json={"inputs": {"image": b64, "question": QUESTION}})
    top = expected["vqa_answers"]["top_answers"]
    assert answer.json() == {"answer": top[0]["answer"], "score": top[0]["score"], "top": top}


def test_embed_gives_each_embedded_field_a_unit_vector(client: TestClient, b64: str) -> None:
    answer = client.post("/v1/embed", json={"inputs": {"image": b64, "caption": "a red square"}})
    embeddings = answer.json()["embeddings"]
    assert set(embeddings) == {"image", "caption"}
    for vector in embeddings.values():
        assert len(vector) == 16 and np.linalg.norm(vector) == pytest.approx(1, abs=1e-4)
    for inputs in ({"question": QUESTION}, {"question": QUESTION, "caption": ""}):
        unembedded = client.post("/v1/embed", json={"inputs": inputs})
        assert unembedded.status_code == 422 and "image, caption" in unembedded.json()["detail"]


def test_search_finds_what_the_index_finds(
    client: TestClient, index: VectorIndex, served_model, png: bytes
) -> None:
    vectors = index.query_vectors("text", ["a red circle"], served_model.data_dir)
    expected = index.search(vectors, 3)[0]
    by_json = client.post("/v1/search", json={"inputs": {"caption": "a red circle"}, "k": 3})
    by_form = client.post("/v1/search", files={"caption": (None, "a red circle"), "k": (None, "3")})
    for answer in (by_json, by_form):
        results = answer.json()["results"]
        assert [r["id"] for r in results] == [e["id"] for e in expected]
        assert [r["score"] for r in results] == pytest.approx([e["score"] for e in expected])
        assert results[0]["item"] == expected[0]["item"]
    by_image = client.post("/v1/search", files={"image": ("s.png", png, "image/png")}).json()
    assert len(by_image["results"]) == 10 and by_image["results"][0]["id"] == 0  # itself


def test_a_search_result_links_a_png_thumbnail(client: TestClient) -> None:
    found = client.post("/v1/search", json={"inputs": {"caption": "a circle"}, "k": 1}).json()
    thumbnail = client.get(found["results"][0]["thumbnail"])
    assert thumbnail.status_code == 200 and thumbnail.headers["content-type"] == "image/png"
    assert max(Image.open(io.BytesIO(thumbnail.content)).size) <= 256
    assert client.get("/v1/items/9999/image").status_code == 404
    assert client.get("/v1/items/first/image").status_code == 422


def test_the_index_built_by_the_served_model_shares_its_weights(served_model) -> None:
    service = create_app(settings(served_model)).state.service
    assert service.index.model is service.predictor.model


def test_data_dir_overrides_the_folder_images_are_read_from(
    served_model, predictor, index, tmp_path: Path
) -> None:
    """By default an item's image is read from its manifest's folder (the client fixture)."""
    with client_for(served_model, predictor, index, data_dir=str(tmp_path)) as client:
        answer = client.get("/v1/items/0/image")
    assert answer.status_code == 404
    assert str(tmp_path) in answer.json()["detail"] and "--data-dir" in answer.json()["detail"]


def test_a_capability_the_service_lacks_is_a_404_saying_what_to_do(
    served_model, predictor, b64: str
) -> None:
    with client_for(served_model, predictor, index_dir=None) as client:
        search = client.post("/v1/search", json={"inputs": {"caption": "a circle"}})
        assert search.status_code == 404 and "--index" in search.json()["detail"]
        assert client.get("/v1/items/0/image").status_code == 404
        assert client.get("/v1/info").json()["index"] is None
        service = client.app.state.service  # type: ignore[attr-defined]
        service.tasks = {n: t for n, t in service.tasks.items() if not isinstance(t, Caption)}
        caption = client.post("/v1/caption", json={"inputs": {"image": b64}})
        assert caption.status_code == 404 and "no caption task" in caption.json()["detail"]


def test_the_page_its_files_the_probes_and_the_docs_are_served(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "<html" in page.text.lower()
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}
    assert "/v1/predict" in client.get("/openapi.json").json()["paths"]


def test_the_docs_page_and_its_swagger_ui_files_are_served_locally(client: TestClient) -> None:
    docs = client.get("/docs")
    assert docs.status_code == 200 and docs.headers["content-type"].startswith("text/html")
    assert "'/openapi.json'" in docs.text
    assert client.get("/redoc").status_code == 404
    urls = re.findall(r"""(?:src|href)=["']([^"']+)""", docs.text)
    assert len(urls) == 3 and all(url.startswith("/docs-assets/") for url in urls), urls
    assets = {url.rsplit(".", 1)[1]: client.get(url) for url in urls}  # by file extension
    assert all(asset.status_code == 200 for asset in assets.values())
    assert assets["js"].headers["content-type"].startswith("text/javascript")
    assert assets["css"].headers["content-type"].startswith("text/css")
    assert assets["png"].headers["content-type"] == "image/png"
    assert "SwaggerUIBundle" in assets["js"].text


# --- client mistakes --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"inputs": {"imgae": "x"}}, "unknown field 'imgae'; did you mean 'image'?"),
        ({"inputs": {"question": 3}}, "field 'question': Input should be a valid string"),
        ({"inputs": {"image": "not base64!"}}, "field 'image': not base64"),
        ({"inputs": {"image": "data:image/png,abc"}}, "a data URL must hold base64"),
        ({"inputs": {"image": base64.b64encode(b"GIF87a?").decode()}}, "not an image file"),
        ({"inputs": {}}, "none of the model's input fields is given"),
        ({"rows": []}, "unknown field 'rows'"),
        ([1, 2], "field 'body': Input should be an object"),
    ],
)
def test_a_malformed_or_wrong_typed_field_is_a_422_naming_it(client, body, detail) -> None:
    answer = client.post("/v1/predict", json=body)
    assert answer.status_code == 422 and detail in answer.json()["detail"]


def test_a_body_that_is_no_json_is_a_422(client: TestClient) -> None:
    answer = client.post("/v1/predict", content=b"{inputs", headers={"content-type": "text/plain"})
    assert answer.status_code == 422 and "not valid JSON" in answer.json()["detail"]


def test_a_client_string_is_never_read_as_a_server_path(client: TestClient, served_model) -> None:
    path = str(served_model.image)
    by_json = client.post("/v1/predict", json={"inputs": {"image": path}})
    by_form = client.post("/v1/predict", files={"image": (None, path)})  # a text part
    assert by_json.status_code == by_form.status_code == 422
    assert "not base64" in by_json.json()["detail"]
    assert "not an image file" in by_form.json()["detail"]


def test_form_mistakes_are_422s(client: TestClient, png: bytes) -> None:
    twice = [("image", ("a.png", png, "image/png")), ("image", ("b.png", png, "image/png"))]
    answer = client.post("/v1/predict", files=twice)
    assert answer.status_code == 422 and "given twice" in answer.json()["detail"]
    answer = client.post("/v1/search", files={"caption": (None, "a circle"), "k": (None, "x")})
    assert answer.status_code == 422 and "field 'k'" in answer.json()["detail"]
    answer = client.post(
        "/v1/predict",
        content=b"--x\r\nbroken",
        headers={"content-type": "multipart/form-data; boundary=x"},
    )
    assert answer.status_code == 422


def test_an_image_over_the_pixel_limit_is_refused_from_its_header(client: TestClient) -> None:
    big = io.BytesIO()
    Image.new("1", (5000, 4000)).save(big, format="PNG")
    header = big.getvalue()[:100]  # the size alone: nothing decodable
    answer = client.post("/v1/caption", files={"image": ("big.png", header, "image/png")})
    assert answer.status_code == 422
    assert "20,000,000 pixels (5000x4000), over the limit of 16,777,216" in answer.json()["detail"]


def test_a_search_gives_exactly_one_query_field(client: TestClient, b64: str) -> None:
    both = {"inputs": {"caption": "a circle", "image": b64}}
    assert "exactly one query field" in client.post("/v1/search", json=both).json()["detail"]
    answer = client.post("/v1/search", json={"inputs": {"question": QUESTION}})
    assert answer.status_code == 422 and "unknown field 'question'" in answer.json()["detail"]
    for k in (0, "3", 2.5):
        answer = client.post("/v1/search", json={"inputs": {"caption": "a"}, "k": k})
        assert answer.status_code == 422 and "field 'k'" in answer.json()["detail"]


def test_a_body_over_the_limit_is_a_413(served_model, predictor, png: bytes) -> None:
    with client_for(served_model, predictor, max_body_bytes=1000) as client:
        declared = client.post("/v1/predict", json={"inputs": {"question": "x" * 2000}})
        assert declared.status_code == 413 and "1,000 bytes" in declared.json()["detail"]
        metrics = client.get("/metrics").text
        assert 'polymodal_requests_total{endpoint="/v1/predict",status="413"} 1.0' in metrics
        streamed = client.post(  # no Content-Length: counted while read
            "/v1/predict",
            content=iter([b'{"inputs": {"question": "', b"x" * 600, b"x" * 600, b'"}}']),
        )
        assert streamed.status_code == 413
        form = client.post("/v1/predict", files={"image": ("a.png", png * 10, "image/png")})
        assert form.status_code == 413


def test_the_api_key_guards_the_api_but_not_the_page_and_probes(
    served_model, predictor, b64: str
) -> None:
    body = {"inputs": {"image": b64}}
    with client_for(served_model, predictor, api_key="s3cret") as client:
        for headers in ({}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"}):
            answer = client.post("/v1/caption", json=body, headers=headers)
            assert answer.status_code == 401 and "X-API-Key" in answer.json()["detail"]
        assert client.get("/metrics").status_code == 401
        assert client.get("/v1/info").status_code == 401
        for headers in ({"X-API-Key": "s3cret"}, {"Authorization": "Bearer s3cret"}):
            assert client.post("/v1/caption", json=body, headers=headers).status_code == 200
            assert client.get("/metrics", headers=headers).status_code == 200
        for path in (
            "/",
            "/healthz",
            "/readyz",
            "/static/index.html",
            "/docs",
            "/docs-assets/swagger-ui.css",
            "/openapi.json",
        ):
            assert client.get(path).status_code == 200, path
        schema = client.get("/openapi.json").json()  # what /docs' "Authorize" offers
    schemes = schema["components"]["securitySchemes"]
    key = next(name for name, scheme in schemes.items() if scheme.get("name") == "X-API-Key")
    assert schemes[key]["type"] == "apiKey" and schemes[key]["in"] == "header"
    assert {key: []} in schema["paths"]["/v1/predict"]["post"]["security"]


# --- batching, load and lifecycle -------------------------------------------------------------


def test_concurrent_requests_share_one_predict_call(served_model, predictor, b64: str) -> None:
    gated = GatedPredictor(predictor)
    bodies = [
        {"inputs": {"image": b64, "question": f"what colour is shape {i}?"}} for i in range(6)
    ]
    with client_for(served_model, gated, max_batch=6, max_wait_ms=5000) as client:
        gated.calls.clear()  # the warm-up's
        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(lambda b: client.post("/v1/answer", json=b), bodies))
        metrics = client.get("/metrics").text
    assert [a.status_code for a in answers] == [200] * 6
    assert gated.calls == [6]  # a full batch does not wait the 5 s
    assert 'polymodal_batch_size_sum{queue="predict"} 6.0' in metrics


def test_each_endpoint_runs_only_the_tasks_it_answers(
    served_model, predictor: Predictor, png: bytes, b64: str
) -> None:
    gated = GatedPredictor(predictor)
    image = {"inputs": {"image": b64}}
    question = {"inputs": {"image": b64, "question": QUESTION}}
    with client_for(served_model, gated, max_wait_ms=0) as client:
        gated.tasks.clear()
        for path, body in [
            ("/v1/caption", image),
            ("/v1/answer", question),
            ("/v1/embed", image),
            ("/v1/predict", question),
        ]:
            assert client.post(path, json=body).status_code == 200
    assert gated.tasks == [{"caption_captions"}, {"vqa_answers"}, {"retrieve_image_caption"}, None]
    alone = predictor.predict([{"image": png}], tasks=["caption_captions"])[0]
    assert alone == {
        "caption_captions": predictor.predict([{"image": png}])[0]["caption_captions"],
        "absent_inputs": ["caption", "question"],
    }


def test_a_batch_runs_the_tasks_its_requests_need_together(
    served_model, predictor, b64: str
) -> None:
    gated = GatedPredictor(predictor)
    with client_for(served_model, gated, max_batch=2, max_wait_ms=5000) as client:
        gated.calls.clear(), gated.tasks.clear()
        with ThreadPoolExecutor(2) as pool:
            caption, answer = pool.map(
                lambda path: client.post(
                    path, json={"inputs": {"image": b64, "question": QUESTION}}
                ),
                ["/v1/caption", "/v1/answer"],
            )
    assert caption.status_code == answer.status_code == 200
    assert set(caption.json()) == {"caption", "score"} and "answer" in answer.json()
    assert gated.calls == [2] and gated.tasks == [{"caption_captions", "vqa_answers"}]


def test_one_bad_row_in_a_batch_fails_alone(served_model, predictor, png: bytes, b64: str) -> None:
    gated = GatedPredictor(predictor)
    broken = base64.b64encode(png[: len(png) // 2]).decode()  # its header reads, its pixels not
    images = [b64, broken, b64]
    with client_for(served_model, gated, max_batch=3, max_wait_ms=5000) as client:
        gated.calls.clear()
        with ThreadPoolExecutor(3) as pool:
            answers = list(
                pool.map(
                    lambda i: client.post("/v1/caption", json={"inputs": {"image": i}}), images
                )
            )
    assert [a.status_code for a in answers] == [200, 422, 200]
    assert "field 'image'" in answers[1].json()["detail"]
    assert gated.calls == [3, 1, 1, 1]


def test_a_full_queue_is_a_503_with_retry_after(served_model, predictor, b64: str) -> None:
    gated = GatedPredictor(predictor)
    body = {"inputs": {"image": b64}}
    with client_for(served_model, gated, max_batch=1, max_queue=1) as client:
        service = client.app.state.service  # type: ignore[attr-defined]
        gated.gate.clear()
        gated.entered.clear()
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(client.post, "/v1/caption", json=body)
            assert gated.entered.wait(10)  # being predicted
            second = pool.submit(client.post, "/v1/caption", json=body)
            while service.predictions.depth < 1:  # waiting in the queue
                threading.Event().wait(0.005)
            refused = client.post("/v1/caption", json=body)
            gated.gate.set()
            assert first.result().status_code == second.result().status_code == 200
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert "queue is full" in refused.json()["detail"]


def test_a_request_waiting_past_the_timeout_is_a_504(served_model, predictor, b64: str) -> None:
    gated = GatedPredictor(predictor)
    with client_for(served_model, gated, timeout_s=0.2) as client:
        gated.gate.clear()
        answer = client.post("/v1/caption", json={"inputs": {"image": b64}})
        gated.gate.set()
    assert answer.status_code == 504 and "0.2 s" in answer.json()["detail"]


def test_not_ready_before_startup_and_after_shutdown(served_model, predictor, b64: str) -> None:
    client = client_for(served_model, predictor)
    body = {"inputs": {"image": b64}}
    before = client.post("/v1/caption", json=body)  # no lifespan: not warmed up
    assert before.status_code == 503 and before.headers["retry-after"] == "1"
    assert client.get("/readyz").status_code == 503 and client.get("/healthz").status_code == 200
    with client:
        assert client.get("/readyz").status_code == 200
    assert client.get("/readyz").status_code == 503


def test_metrics_count_requests_by_endpoint_and_status(client: TestClient, b64: str) -> None:
    client.post("/v1/caption", json={"inputs": {"image": b64}})
    client.post("/v1/caption", json={"inputs": {"imgae": b64}})
    text = client.get("/metrics").text
    assert 'polymodal_requests_total{endpoint="/v1/caption",status="200"}' in text
    assert 'polymodal_requests_total{endpoint="/v1/caption",status="422"}' in text
    assert 'polymodal_request_seconds_bucket{endpoint="/v1/caption",le="0.005"}' in text
    assert 'polymodal_batch_size_count{queue="predict"}' in text
    assert 'polymodal_queue_depth{queue="predict"} 0.0' in text
    assert 'polymodal_queue_depth{queue="search"} 0.0' in text


def test_the_access_log_has_no_payload_nor_key(served_model, predictor, b64: str, caplog):
    with client_for(served_model, predictor, api_key="s3cret") as client:
        caplog.set_level(logging.INFO, logger="polymodal.serve.access")
        client.post("/v1/caption", json={"inputs": {"image": b64}}, headers={"X-API-Key": "s3cret"})
    lines = [r.getMessage() for r in caplog.records if r.name == "polymodal.serve.access"]
    assert len(lines) == 1 and lines[0].startswith("POST /v1/caption 200 ")
    assert lines[0].endswith(" ms batch=1")
    assert "s3cret" not in caplog.text and b64[:40] not in caplog.text


def test_workers_share_out_the_cores_and_their_metrics(served_model, monkeypatch) -> None:
    """``serve(workers=4)`` on 8 cores: 2 inference threads each, a fresh shared metrics
    folder while they run, none left after; uvicorn is stood in for."""
    import uvicorn

    from polymodal.serve import app as app_module
    from polymodal.serve.monitoring import SHARED_METRICS_ENV

    seen: dict[str, Any] = {}

    def run(target: Any, **options: Any) -> None:
        seen.update(options, target=target, folder=os.environ.get(SHARED_METRICS_ENV))
        seen["settings"] = ServeSettings.model_validate_json(os.environ[app_module.SETTINGS_ENV])
        assert Path(seen["folder"]).is_dir() and not any(Path(seen["folder"]).iterdir())

    monkeypatch.setattr(uvicorn, "run", run)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # this process's stay
    monkeypatch.setenv(app_module.SETTINGS_ENV, "")  # so that it is removed after the test
    monkeypatch.delenv(SHARED_METRICS_ENV, raising=False)
    app_module.serve(settings(served_model), workers=4)
    assert seen["workers"] == 4 and seen["settings"].threads == 2
    assert seen["target"] == f"{app_module.__name__}:app_from_env"
    assert SHARED_METRICS_ENV not in os.environ and not Path(seen["folder"]).exists()
    app_module.serve(settings(served_model, threads=3), workers=4)
    assert seen["settings"].threads == 3  # given: kept
