"""A FAISS index of a collection embedded by a retrieval model (``polymodal index``).

``VectorIndex.build`` embeds one input field of a manifest's rows with the model's retrieval
task, a part of PART_ROWS rows at a time, each part written as it finishes so that a killed
build resumes after the last one; then indexes the unit-length vectors by inner product
(cosine): exactly up to EXACT_MAX vectors, with an HNSW graph above, unless ``kind`` says.
Rows that cannot be read (a missing or broken file) are left out and listed in skipped.jsonl.

On disk: ``index.json`` (the model, the field, the kind, the version) names a folder
``v{version}/`` holding ``vectors.faiss`` and ``items.jsonl`` (each id's manifest row). A save
writes a new version's folder, then replaces index.json in one rename: a process killed at any
moment leaves an index that loads and answers as before.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np

from polymodal.data.modalities.base import Row
from polymodal.data.quarantine import Quarantine, QuarantinedRow
from polymodal.data.sources import LINE_KEY, ManifestIndex, index_manifest
from polymodal.errors import ConfigError, DataError, RowError
from polymodal.inference import eval_mode
from polymodal.io import atomic_write, atomic_write_text, read_json, write_json
from polymodal.models.model import MultimodalModel
from polymodal.progress import progress_bar
from polymodal.tasks import Retrieve

Kind = Literal["auto", "exact", "hnsw"]
INFO_FILE = "index.json"
VECTORS_FILE = "vectors.faiss"
ITEMS_FILE = "items.jsonl"
PARTS_DIR = "build"  # the parts of an unfinished build
SKIPPED_FILE = "skipped.jsonl"
PART_ROWS = 2048
EXACT_MAX = 100_000  # vectors searched exactly (by "auto"); an HNSW graph above
HNSW_NEIGHBOURS = 32  # graph edges per vector
HNSW_EF_BUILD = 80  # candidates kept while inserting (FAISS: 40)
HNSW_EF_SEARCH = 128  # candidates kept while searching (FAISS: 16): recall@10 >= 0.95 at 1M
BATCH = 64


def _faiss() -> Any:
    try:
        import faiss
    except ImportError:
        raise ConfigError("polymodal index needs FAISS: pip install polymodal[index]") from None
    return faiss


@dataclass
class IndexInfo:
    """What index.json holds."""

    model_dir: str
    field: str
    task: str
    kind: str
    dim: int
    version: int = 0
    next_id: int = 0
    removed: list[int] = field(default_factory=list)  # HNSW cannot delete: ids left out
    # (first id, the folder its rows' paths are relative to), one per build or add
    data_dirs: list[tuple[int, str]] = field(default_factory=list)


class Embedder:
    """A saved model's retrieval embeddings of one input field, from rows given as dicts."""

    def __init__(self, model: MultimodalModel, field: str, task: str | None = None) -> None:
        """``field`` embedded by retrieval task ``task`` (default: the first that embeds it)."""
        retrieving = {n: t for n, t in model.tasks.items() if isinstance(t, Retrieve)}
        tasks = [
            (name, retrieve)
            for name, retrieve in retrieving.items()
            if field in (retrieve.query, retrieve.gallery) and task in (None, name)
        ]
        if not tasks:
            sides = sorted({side for t in retrieving.values() for side in (t.query, t.gallery)})
            raise ConfigError(
                f"--field {field}: the model embeds no such field in a retrieval task "
                f"(fields it embeds: {', '.join(sides) or 'none: it has no retrieve task'})"
            )
        self.model, self.field = model, field
        self.task_name, self.task = tasks[0]
        self.column = model.preprocessor.schema.columns(field)[0]

    def embed(self, examples: list[dict[str, Any]]) -> np.ndarray:
        """(N, dim) float32 unit vectors of examples read by the model's preprocessor."""
        out = []
        with eval_mode(self.model):
            for start in range(0, len(examples), BATCH):
                batch = self.model.preprocessor.collate(examples[start : start + BATCH])
                encoded = self.model.encode(batch, only=[self.field])[self.field]
                out.append(self.task.embed(self.field, encoded).float().numpy())
        dim = self.task.query_proj.out_features
        return np.concatenate(out) if out else np.zeros((0, dim), np.float32)

    def read(self, value: Any, base_dir: Path) -> dict[str, Any]:
        """The example of a field value (a path, bytes, text...); RowError when unreadable."""
        row = {self.column: value}
        example = self.model.preprocessor.example(row, base_dir)
        if example[self.field] is None:
            raise RowError(f"no {self.field}", f"the row has no value in '{self.column}'")
        return example


class VectorIndex:
    """Vectors by id, searched by inner product, with each id's item (its manifest row)."""

    def __init__(self, directory: Path, info: IndexInfo, vectors: Any, items: dict[int, Row]):
        self.directory, self.info, self.vectors, self.items = directory, info, vectors, items

    # --- building and loading ------------------------------------------------------------

    @classmethod
    def build(
        cls,
        model_dir: str | Path,
        manifest: str | Path,
        field: str,
        out_dir: str | Path,
        kind: Kind = "auto",
    ) -> VectorIndex:
        """Embed ``field`` of every row of ``manifest`` and index it in ``out_dir``."""
        out = Path(out_dir)
        if (out / INFO_FILE).is_file():
            raise ConfigError(
                f"{out} already holds an index; use 'polymodal index add' or another --out"
            )
        embedder = Embedder(MultimodalModel.from_pretrained(model_dir), field)
        rows, vectors, skipped = _embed_manifest(embedder, Path(manifest), out)
        info = IndexInfo(
            str(Path(model_dir).resolve()), field, embedder.task_name, "", vectors.shape[1]
        )
        info.kind = _resolve_kind(kind, len(vectors))
        index = cls(out, info, new_vectors(info.kind, info.dim), {})
        index._append(rows, vectors, Path(manifest))
        index.save()
        if len(skipped):
            skipped.write(out / SKIPPED_FILE)
        shutil.rmtree(out / PARTS_DIR, ignore_errors=True)
        return index

    @classmethod
    def load(cls, directory: str | Path) -> VectorIndex:
        directory = Path(directory)
        raw = read_json(directory / INFO_FILE, "the index description")
        info = IndexInfo(**raw)
        folder = directory / f"v{info.version}"
        vectors = _faiss().read_index(str(folder / VECTORS_FILE))
        items = {}
        with (folder / ITEMS_FILE).open(encoding="utf-8") as lines:
            for line in lines:
                entry = json.loads(line)
                items[int(entry["id"])] = entry["item"]
        return cls(directory, info, vectors, items)

    def save(self) -> None:
        """Write a new version's folder, then point index.json at it; drop older versions."""
        version = self.info.version + 1
        folder = self.directory / f"v{version}"
        shutil.rmtree(folder, ignore_errors=True)  # a save killed earlier
        folder.mkdir(parents=True)
        atomic_write(folder / VECTORS_FILE, lambda p: _faiss().write_index(self.vectors, str(p)))
        lines = (json.dumps({"id": i, "item": item}) + "\n" for i, item in self.items.items())
        atomic_write_text(folder / ITEMS_FILE, "".join(lines))
        self.info.version = version
        write_json(self.directory / INFO_FILE, asdict(self.info))
        for old in self.directory.glob("v*"):
            if old.is_dir() and old != folder and old.name[1:].isdigit():
                shutil.rmtree(old, ignore_errors=True)

    # --- changing ---------------------------------------------------------------------------

    def _append(self, rows: list[Row], vectors: np.ndarray, manifest: Path) -> list[int]:
        ids = np.arange(self.info.next_id, self.info.next_id + len(rows), dtype=np.int64)
        if len(rows):
            self.vectors.add_with_ids(np.ascontiguousarray(vectors, np.float32), ids)
            self.info.data_dirs.append((self.info.next_id, str(manifest.resolve().parent)))
        self.items.update(zip(ids.tolist(), rows, strict=True))
        self.info.next_id += len(rows)
        return ids.tolist()

    def add(self, manifest: str | Path) -> list[int]:
        """Embed and add the rows of ``manifest``; their new ids."""
        model = MultimodalModel.from_pretrained(self.info.model_dir)
        embedder = Embedder(model, self.info.field, self.info.task)
        rows, vectors, _ = _embed_manifest(embedder, Path(manifest), self.directory)
        shutil.rmtree(self.directory / PARTS_DIR, ignore_errors=True)
        ids = self._append(rows, vectors, Path(manifest))
        self.save()
        return ids

    def remove(self, ids: Sequence[int]) -> int:
        """Remove the items ``ids``; how many there were."""
        present = [i for i in dict.fromkeys(int(i) for i in ids) if i in self.items]
        if present:
            if self.info.kind == "hnsw":  # a graph cannot drop nodes: its ids are skipped
                self.info.removed = sorted({*self.info.removed, *present})
            else:
                self.vectors.remove_ids(np.array(present, dtype=np.int64))
            for i in present:
                del self.items[i]
            self.save()
        return len(present)

    # --- searching --------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.items)

    def data_dir(self, item_id: int) -> Path | None:
        """The folder item ``item_id``'s paths are relative to: its manifest's (None for an
        index that did not record it)."""
        folders = [folder for first, folder in self.info.data_dirs if first <= item_id]
        return Path(folders[-1]) if folders else None

    @cached_property
    def model(self) -> MultimodalModel:
        """The model that built the index, loaded once (by the first query)."""
        return MultimodalModel.from_pretrained(self.info.model_dir)

    def search(self, queries: np.ndarray, k: int = 10) -> list[list[dict[str, Any]]]:
        """The ``k`` nearest items of each query vector: id, score (cosine) and item."""
        if k < 1:
            raise ConfigError(f"k must be at least 1, got {k}")
        asked = min(k + len(self.info.removed), max(1, self.vectors.ntotal))
        scores, ids = self.vectors.search(np.ascontiguousarray(queries, np.float32), asked)
        return [
            [
                {"id": int(i), "score": float(s), "item": self.items[int(i)]}
                for s, i in zip(row_scores, row_ids, strict=True)
                if i >= 0 and int(i) in self.items
            ][:k]
            for row_scores, row_ids in zip(scores, ids, strict=True)
        ]

    def query_vectors(self, kind: str, values: list[Any], base_dir: Path) -> np.ndarray:
        """Embeddings of query ``values`` of ``kind`` (text, image, audio): read as the field
        of that kind among the sides of the index's retrieval task, by the model that built
        the index."""
        field = query_field(self.model, self.info.task, kind)
        embedder = Embedder(self.model, field, self.info.task)
        examples = []
        for value in values:
            try:
                examples.append(embedder.read(value, base_dir))
            except RowError as err:
                raise DataError(f"the {field} query: {err}") from None
        return embedder.embed(examples)


def query_field(model: MultimodalModel, task: str, kind: str) -> str:
    """The field of ``kind`` (text, image, audio) among the sides of retrieval task ``task``."""
    retrieve = model.tasks[task]
    assert isinstance(retrieve, Retrieve)
    sides = (retrieve.query, retrieve.gallery)
    kinds = {side: model.preprocessor.fields[side].kind for side in sides}
    matching = [side for side in sides if kinds[side] == kind]
    if not matching:
        listed = ", ".join(f"{side} ({k})" for side, k in kinds.items())
        raise ConfigError(f"the index's model takes no {kind} query: its task embeds {listed}")
    return matching[0]


def _resolve_kind(kind: Kind, count: int) -> str:
    if kind == "auto":
        return "exact" if count <= EXACT_MAX else "hnsw"
    return kind


def new_vectors(kind: str, dim: int) -> Any:
    """An empty FAISS index of ``kind`` (exact or hnsw) by inner product, with ids."""
    faiss = _faiss()
    if kind == "exact":
        inner = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        inner = faiss.IndexHNSWFlat(dim, HNSW_NEIGHBOURS, faiss.METRIC_INNER_PRODUCT)
        inner.hnsw.efConstruction = HNSW_EF_BUILD
        inner.hnsw.efSearch = HNSW_EF_SEARCH
    else:
        raise ConfigError(f"index kind '{kind}': use auto, exact or hnsw")
    return faiss.IndexIDMap2(inner)


def _parts(count: int) -> Iterator[tuple[int, int]]:
    for start in range(0, count, PART_ROWS):
        yield start, min(count, start + PART_ROWS)


def _embed_part(embedder: Embedder, index: ManifestIndex, positions: range, path: Path) -> None:
    """Embed the rows at ``positions`` and save them (and the unreadable ones) to ``path``."""
    kept, examples, skipped = [], [], []
    for position in positions:
        row = index.read(position)
        try:
            examples.append(embedder.read(row.get(embedder.column), index.base_dir))
            kept.append(position)
        except RowError as err:
            bad = QuarantinedRow(str(index.path), int(row[LINE_KEY]), err.reason, err.detail)
            skipped.append(json.dumps(asdict(bad)))
    vectors = embedder.embed(examples)

    def write(target: Path) -> None:
        with target.open("wb") as handle:
            np.savez(
                handle,
                positions=np.array(kept, np.int64),
                vectors=vectors,
                skipped=np.array(skipped, dtype=str),
            )

    atomic_write(path, write)


def _embed_manifest(
    embedder: Embedder, manifest: Path, out: Path
) -> tuple[list[Row], np.ndarray, Quarantine]:
    """Every readable row of ``manifest`` and its embedding; unreadable rows quarantined.

    Each part is saved under OUT/build (positions and vectors, keyed by the manifest's
    digest), so a killed run's finished parts are read back, not embedded again.
    """
    skipped = Quarantine()
    index = index_manifest(manifest, skipped, split_column="")
    if embedder.column not in index.columns:
        raise DataError(
            f"{manifest} has no '{embedder.column}' column, the field '{embedder.field}' the "
            f"index embeds (its columns: {', '.join(index.columns)})"
        )
    parts = out / PARTS_DIR / index.digest[:16]
    parts.mkdir(parents=True, exist_ok=True)
    kept: list[np.ndarray] = []
    vectors: list[np.ndarray] = []
    for start, end in progress_bar(list(_parts(len(index))), "embedding"):
        done = parts / f"{start:010d}.npz"
        if not done.is_file():
            _embed_part(embedder, index, range(start, end), done)
        with np.load(done, allow_pickle=False) as saved:
            kept.append(saved["positions"])
            vectors.append(saved["vectors"])
            for record in saved["skipped"].tolist():
                skipped.add(QuarantinedRow(**json.loads(record)))
    positions = np.concatenate(kept) if kept else np.zeros(0, np.int64)
    rows = [{k: v for k, v in index.read(int(p)).items() if k != LINE_KEY} for p in positions]
    dim = embedder.task.query_proj.out_features
    return rows, np.concatenate(vectors) if vectors else np.zeros((0, dim), np.float32), skipped
