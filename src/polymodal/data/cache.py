"""A store of preprocessed tensors, so epochs after it is built do no decoding.

``data.cache: memory`` keeps the arrays in RAM; ``disk`` writes them once as memory-mapped
``.npy`` files under ``CACHE_DIR/FINGERPRINT/``, where the fingerprint covers the fitted
preprocessor, the manifest's bytes and the split's rows: a change to any of them builds a new
store, and a later run (or ``polymodal eval``) with the same ones finds it ready.

Building reads each row once in the main process (text, tabular, label, sequence and
feature values) and decodes each distinct image, audio or video file once, in DataLoader
workers: rows that share a file (questions about one picture) share its tensor. A row that
fails is kept out of the store with its reason; the dataset leaves it out, quarantined, as a
row found bad up front. The store holds evaluation reads (the centre crop of a long clip or
video), also for the train split: a cached train split is read without random crops.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Hashable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from polymodal.config import DataConfig
from polymodal.data.modalities.base import FileField
from polymodal.data.quarantine import QuarantinedRow
from polymodal.data.sources import LINE_KEY
from polymodal.errors import ConfigError, RowError
from polymodal.io import atomic_write_text
from polymodal.progress import progress_bar

if TYPE_CHECKING:
    from polymodal.data.dataset import RowDataset
    from polymodal.data.pipeline import Example

META_FILE = "store.json"
FORMAT = 2  # bump when the layout changes: older stores are then rebuilt


def cache_root(data: DataConfig, default: Path | None) -> Path:
    """Where disk stores live: ``data.cache_dir``, else ``default`` (beside the runs)."""
    root = data.cache_dir or default
    if root is None:
        raise ConfigError("data.cache: disk needs data.cache_dir (where the store is written)")
    return Path(root)


def fingerprint(dataset: RowDataset) -> str:
    """SHA-256 of the fitted preprocessor's state, the manifest's bytes and the split's rows."""
    digest = hashlib.sha256(f"polymodal store {FORMAT}".encode())
    digest.update(json.dumps(dataset.preprocessor.state(), sort_keys=True).encode())
    digest.update(dataset.index.digest.encode())
    digest.update(np.ascontiguousarray(dataset.positions).tobytes())
    return digest.hexdigest()


class TensorStore:
    """One split's preprocessed fields as arrays, row ``k`` being the split's k-th row.

    ``{field}.slot`` maps each row to its item (-1: absent, or a bad row); a file-decoded field
    (image, audio, video) has an item per distinct file, shared by the rows that name it, the
    others an item per row. Items of one shape lie in ``{field}.values``; items of different
    lengths (first dimension: text ids, audio frames, sequence steps, video frames) are
    concatenated in ``{field}.data``, item i being ``data[offsets[i]:offsets[i + 1]]``.
    ``bad`` are the rows that failed (the k of each in ``bad_rows``), ``lines`` each row's
    manifest line; ``folder`` is where a disk store lies (None in memory).
    """

    def __init__(
        self,
        arrays: dict[str, np.ndarray],
        bad: dict[int, QuarantinedRow],
        lines: np.ndarray,
        folder: Path | None = None,
    ) -> None:
        self.arrays, self.lines, self.folder = arrays, lines, folder
        self.bad = list(bad.values())
        self.bad_rows = np.asarray(sorted(bad), dtype=np.int64)
        self.fields = sorted({key.rsplit(".", 1)[0] for key in arrays})

    def example(self, k: int) -> Example:
        """Row ``k``'s tensors, as ``Preprocessor.example`` makes them (an evaluation read)."""
        out: Example = {LINE_KEY: int(self.lines[k])}
        for name in self.fields:
            slot = int(self.arrays[f"{name}.slot"][k])
            if slot < 0:
                out[name] = None
            elif (values := self.arrays.get(f"{name}.values")) is not None:
                out[name] = torch.from_numpy(np.array(values[slot]))
            else:
                start, end = self.arrays[f"{name}.offsets"][slot : slot + 2]
                out[name] = torch.from_numpy(np.array(self.arrays[f"{name}.data"][start:end]))
        return out


class _Items:
    """One field's items as they come, in memory or streamed to a file in ``folder``;
    ``arrays`` lays them out as ``values`` or ``offsets`` + ``data`` (see TensorStore)."""

    def __init__(self, name: str, folder: Path | None) -> None:
        self.name, self.folder = name, folder
        self.shapes: list[tuple[int, ...]] = []
        self.dtype: np.dtype | None = None
        self.sink: BinaryIO = io.BytesIO() if folder is None else (folder / f".{name}").open("wb")

    def add(self, tensor: torch.Tensor) -> int:
        """Append an item; returns its number."""
        array = tensor.contiguous().numpy()
        self.dtype = array.dtype if self.dtype is None else self.dtype
        assert array.dtype == self.dtype, f"{self.name}: items of {array.dtype} and {self.dtype}"
        self.shapes.append(array.shape)
        self.sink.write(array.tobytes())
        return len(self.shapes) - 1

    def arrays(self) -> dict[str, np.ndarray]:
        if not self.shapes:  # no row holds the field
            self.sink.close()
            if self.folder is not None:
                (self.folder / f".{self.name}").unlink()
            return {}
        if len(set(self.shapes)) == 1:
            key, shape, out = "values", (len(self.shapes), *self.shapes[0]), {}
        else:
            (step,) = {shape[1:] for shape in self.shapes}  # items differ in length only
            offsets = np.cumsum([0] + [shape[0] for shape in self.shapes], dtype=np.int64)
            key, shape, out = "data", (int(offsets[-1]), *step), {f"{self.name}.offsets": offsets}
        assert self.dtype is not None
        if isinstance(self.sink, io.BytesIO):  # the buffer becomes the array, not copied
            buffer = np.frombuffer(self.sink.getbuffer(), self.dtype)
            out[f"{self.name}.{key}"] = buffer.reshape(shape)
            return out
        assert self.folder is not None
        self.sink.close()
        raw, path = self.folder / f".{self.name}", self.folder / f"{self.name}.{key}.npy"
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False}
        with path.open("wb") as npy, raw.open("rb") as items:
            np.lib.format.write_array_header_2_0(npy, {**header, "shape": shape})
            shutil.copyfileobj(items, npy, 1 << 20)
        raw.unlink()
        out[f"{self.name}.{key}"] = np.load(path, mmap_mode="r")
        return out


class _Decoding(Dataset):
    """Distinct sources of a file-decoded field, decoded in DataLoader workers; a failure comes
    back as its (reason, detail), which crosses from a worker where the exception would not."""

    def __init__(self, pre: FileField, sources: list[Hashable]) -> None:
        self.pre, self.sources = pre, sources

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, i: int) -> torch.Tensor | tuple[str, str]:
        try:
            return self.pre.decode(self.sources[i])
        except RowError as err:
            return err.reason, err.detail


def build_store(
    dataset: RowDataset, folder: Path | None, label: str, workers: int = 0
) -> TensorStore:
    """Read every row of ``dataset`` once into arrays (memory-mapped files in ``folder``)."""
    pre, index = dataset.preprocessor, dataset.index
    n, source = len(dataset.positions), str(index.path)
    lines = index.lines[dataset.positions]
    slots = {name: np.full(n, -1, dtype=np.int64) for name in pre.fields}
    items = {name: _Items(name, folder) for name in pre.fields}
    # file-decoded fields: each distinct source -> its number, the row's slot until decoded
    sources: dict[str, dict[Hashable, int]] = {
        name: {} for name, f in pre.fields.items() if isinstance(f, FileField)
    }
    bad: dict[int, QuarantinedRow] = {}
    rows = progress_bar(index.rows(dataset.positions), f"reading {label}", total=n)
    for k, row in enumerate(rows):
        for name, field in pre.fields.items():
            value = pre.value(name, row)
            if value is None or k in bad:
                continue
            try:
                if isinstance(field, FileField):
                    known = sources[name]
                    origin = field.resolve(value, index.base_dir)
                    slots[name][k] = known.setdefault(origin, len(known))
                else:
                    slots[name][k] = items[name].add(field.read(value, index.base_dir))
            except RowError as err:
                bad[k] = QuarantinedRow(source, int(lines[k]), err.reason, err.detail, name)
    for name, known in sources.items():
        if not known:
            continue
        field = pre.fields[name]
        assert isinstance(field, FileField)
        decoding = DataLoader(
            _Decoding(field, list(known)), batch_size=32, num_workers=workers, collate_fn=list
        )
        decoded = (item for chunk in decoding for item in chunk)
        item_of = np.full(len(known), -1, dtype=np.int64)
        failed: dict[int, tuple[str, str]] = {}
        shown = progress_bar(decoded, f"decoding {label} {name}", len(known))
        for number, item in enumerate(shown):
            if isinstance(item, tuple):
                failed[number] = item
            else:
                item_of[number] = items[name].add(item)
        numbers = slots[name]
        for k in np.flatnonzero(np.isin(numbers, list(failed))):
            if int(k) not in bad:
                reason, detail = failed[int(numbers[k])]
                bad[int(k)] = QuarantinedRow(source, int(lines[k]), reason, detail, name)
        slots[name] = np.where(numbers >= 0, item_of[np.maximum(numbers, 0)], -1)
    arrays: dict[str, np.ndarray] = {}
    for name in pre.fields:
        slots[name][list(bad)] = -1  # a bad row has no fields
        arrays[f"{name}.slot"] = slots[name]
        arrays.update(items[name].arrays())
    return TensorStore(arrays, bad, lines)


def _save(store: TensorStore, folder: Path) -> None:
    """Write the arrays not yet on disk, then the metadata that marks the store complete."""
    for key, value in store.arrays.items():
        if not isinstance(value, np.memmap):  # a memmap was written where it lies
            np.save(folder / f"{key}.npy", value, allow_pickle=False)
    meta = {
        "format": FORMAT,
        "arrays": sorted(store.arrays),
        "bad": {str(k): asdict(row) for k, row in zip(store.bad_rows, store.bad, strict=True)},
    }
    atomic_write_text(folder / META_FILE, json.dumps(meta, indent=1, ensure_ascii=False))


def _load(folder: Path, lines: np.ndarray) -> TensorStore | None:
    """A complete store in ``folder``, memory-mapped; None when there is none."""
    meta_path = folder / META_FILE
    if not meta_path.is_file():
        return None
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if meta.get("format") != FORMAT:
        return None
    arrays = {key: np.load(folder / f"{key}.npy", mmap_mode="r") for key in meta["arrays"]}
    bad = {int(k): QuarantinedRow(**row) for k, row in meta["bad"].items()}
    return TensorStore(arrays, bad, lines, folder)


def open_store(dataset: RowDataset, root: Path | None, label: str, workers: int = 0) -> TensorStore:
    """The store of ``dataset``: built in memory (``root`` None), or found in or built into
    ``root/FINGERPRINT`` on disk."""
    if root is None:
        return build_store(dataset, None, label, workers)
    folder = root / fingerprint(dataset)[:20] / label
    lines = dataset.index.lines[dataset.positions]
    store = _load(folder, lines)
    if store is not None:
        return store
    folder.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{label}.", suffix=".tmp", dir=folder.parent))
    try:
        _save(build_store(dataset, building, label, workers), building)
        if folder.exists():  # a store written meanwhile, or an incomplete one
            shutil.rmtree(folder)
        os.replace(building, folder)
    finally:
        if building.exists():
            shutil.rmtree(building)
    store = _load(folder, lines)
    assert store is not None
    return store
