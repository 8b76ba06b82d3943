"""Killed processes leave an index that loads and answers: a ``polymodal serve`` SIGKILLed
under load, and a process changing the index (add, remove) SIGKILLed between or amid saves."""

from __future__ import annotations

import base64
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from polymodal.index import INFO_FILE, VectorIndex
from polymodal.serve.process import ServiceProcess

pytest.importorskip("faiss")

TEXTS = ["a red circle", "a blue square above a green triangle"]
K = 5
# Changes the index at argv[1] until killed: every fourth change adds the rows of the manifest
# at argv[2], the others remove the smallest id. Before each save it prints the version and
# ids the save will write, after it "saved".
WRITER = """
import json, sys
from polymodal.index import VectorIndex
index = VectorIndex.load(sys.argv[1])
for step in range(1000):
    ids, version = set(index.items), index.info.version + 1
    if step % 4 == 3:
        ids |= {index.info.next_id, index.info.next_id + 1}
        change = lambda: index.add(sys.argv[2])
    else:
        target = min(ids)
        ids.discard(target)
        change = lambda: index.remove([target])
    print(json.dumps({"version": version, "ids": sorted(ids)}), flush=True)
    change()
    print("saved", flush=True)
"""


def copied_index(served_model, folder: Path) -> Path:
    """A copy of the fixture's index (the tests change or kill what works on it)."""
    shutil.copytree(served_model.index_dir, folder)
    return folder


def queries(served_model) -> list[dict[str, str]]:
    """Search bodies' inputs: two captions and one image (base64)."""
    image = base64.b64encode(served_model.image.read_bytes()).decode()
    return [*({"caption": text} for text in TEXTS), {"image": image}]


def loaded_search(directory: Path, served_model) -> list[list[dict[str, Any]]]:
    """The answers of ``VectorIndex.load(directory)`` to ``queries``, in this process."""
    index = VectorIndex.load(directory)
    texts = index.query_vectors("text", TEXTS, served_model.data_dir)
    image = index.query_vectors("image", [served_model.image.name], served_model.image.parent)
    return index.search(texts, K) + index.search(image, K)


def served_search(server: ServiceProcess, served_model) -> list[list[dict[str, Any]]]:
    bodies = [{"inputs": inputs, "k": K} for inputs in queries(served_model)]
    answers = [httpx.post(f"{server.url}/v1/search", json=body, timeout=30) for body in bodies]
    assert [a.status_code for a in answers] == [200] * len(bodies), [a.text for a in answers]
    return [a.json()["results"] for a in answers]


def assert_same_answers(served: list[list[dict]], loaded: list[list[dict]]) -> None:
    """The same ids, items and scores (to float32 rounding: the service embeds on its own)."""
    for got, expected in zip(served, loaded, strict=True):
        assert [(h["id"], h["item"]) for h in got] == [(h["id"], h["item"]) for h in expected]
        assert [h["score"] for h in got] == pytest.approx([h["score"] for h in expected], abs=1e-5)


def hammer(
    server: ServiceProcess, served_model, stop: threading.Event, answered: list[str]
) -> None:
    """Search and predict requests back to back until ``stop``, noting each 200's endpoint."""
    bodies = [("search", {"inputs": q, "k": K}) for q in queries(served_model)]
    bodies.append(("predict", {"inputs": {"image": bodies[-1][1]["inputs"]["image"]}}))
    with httpx.Client(base_url=server.url, timeout=30) as client:
        while not stop.is_set():
            endpoint, body = random.choice(bodies)
            try:
                if client.post(f"/v1/{endpoint}", json=body).status_code == 200:
                    answered.append(endpoint)
            except httpx.TransportError:  # the server was killed
                return


def test_a_server_killed_under_load_restarts_on_the_same_index(served_model, tmp_path):
    index_dir = copied_index(served_model, tmp_path / "index")
    before = loaded_search(index_dir, served_model)
    options = ("--index", str(index_dir))
    server = ServiceProcess.start(served_model.model_dir, tmp_path / "serve.log", *options)
    try:
        assert_same_answers(served_search(server, served_model), before)
        stop, answered = threading.Event(), []
        with ThreadPoolExecutor(8) as pool:
            clients = [pool.submit(hammer, server, served_model, stop, answered) for _ in range(8)]
            while len(answered) < 40 and not any(c.done() for c in clients):
                stop.wait(0.05)
            os.kill(server.process.pid, signal.SIGKILL)  # amid 8 clients' requests
            stop.set()
            for client in clients:
                client.result()
        assert server.process.wait(10) == -signal.SIGKILL
        assert {"search", "predict"} <= set(answered)
    finally:
        server.stop()
    assert loaded_search(index_dir, served_model) == before
    restarted = ServiceProcess.start(served_model.model_dir, tmp_path / "serve.log", *options)
    try:
        assert httpx.get(f"{restarted.url}/readyz").status_code == 200
        assert_same_answers(served_search(restarted, served_model), before)
    finally:
        restarted.stop()


def kill_writer(index_dir: Path, manifest: Path, saves: int) -> tuple[dict[int, list[int]], int]:
    """Run WRITER on ``index_dir``, SIGKILL it soon after its ``saves``-th save; the ids of
    each version it began to save, and the last version it finished saving."""
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(index_dir), str(manifest)],
        stdout=subprocess.PIPE,
        text=True,
    )
    intended: dict[int, list[int]] = {}
    saved = [VectorIndex.load(index_dir).info.version]
    assert writer.stdout is not None
    for line in writer.stdout:  # to the end: what it printed before it died counts
        if not line.startswith("saved"):
            change = json.loads(line)
            intended[change["version"]] = change["ids"]
        elif len(saved) == saves:
            saved.append(max(intended))
            threading.Event().wait(random.uniform(0, 0.02))  # amid the next change
            writer.send_signal(signal.SIGKILL)
        else:
            saved.append(max(intended))
    assert writer.wait(10) == -signal.SIGKILL, "the writer ended before it was killed"
    return intended, saved[-1]


def test_an_index_writer_killed_midway_leaves_the_last_complete_version(served_model, tmp_path):
    index_dir = copied_index(served_model, tmp_path / "index")
    extra = tmp_path / "extra"
    extra.mkdir()
    rows = []
    for i, image in enumerate(sorted(served_model.data_dir.glob("images/*.png"))[:2]):
        shutil.copy(image, extra / f"{i}.png")
        rows.append(json.dumps({"image": f"{i}.png", "caption": f"added {i}"}) + "\n")
    (extra / "rows.jsonl").write_text("".join(rows), encoding="utf-8")
    random.seed(0)
    for saves in (2, 5, 3):  # three writers killed one after another on the same index
        intended, last_saved = kill_writer(index_dir, extra / "rows.jsonl", saves)
        on_disk = VectorIndex.load(index_dir)
        assert on_disk.info.version in (last_saved, last_saved + 1)  # killed amid a save or not
        assert sorted(on_disk.items) == intended[on_disk.info.version]
        assert json.loads((index_dir / INFO_FILE).read_text())["version"] == on_disk.info.version
    loaded = loaded_search(index_dir, served_model)
    server = ServiceProcess.start(
        served_model.model_dir, tmp_path / "serve.log", "--index", str(index_dir)
    )
    try:
        assert_same_answers(served_search(server, served_model), loaded)
    finally:
        server.stop()
