"""A store of preprocessed tensors, so epochs after it is built do no image or text decoding.

``data.cache: memory`` keeps the arrays in RAM; ``disk`` writes them once as memory-mapped
``.npy`` files under ``CACHE_DIR/FINGERPRINT/``, where the fingerprint covers the fitted
preprocessor, the manifest's bytes and the split's rows: a change to any of them builds a new
store, and a later run (or ``polymodal eval``) with the same ones finds it ready.

Building reads each row once in the main process (text, tabular and label values are cheap)
and decodes each distinct image file once, in DataLoader workers: rows that share a file
(questions about one picture) share its pixels. A row that fails is kept out of the store
with its reason; the dataset leaves it out, quarantined, as a row found bad up front.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from array import array
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from polymodal.config import DataConfig
from polymodal.data.modalities.image import ImagePreprocessor
from polymodal.data.modalities.text import TextPreprocessor
from polymodal.data.quarantine import QuarantinedRow
from polymodal.data.sources import LINE_KEY
from polymodal.errors import ConfigError, RowError
from polymodal.io import atomic_write_text
from polymodal.progress import progress_bar

if TYPE_CHECKING:
    from polymodal.data.dataset import RowDataset
    from polymodal.data.pipeline import Example

META_FILE = "store.json"
FORMAT = 1  # bump when the layout changes: older stores are then rebuilt


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

    ``{field}.present`` marks the rows that have the field; an image field keeps ``.slot``
    (row -> distinct file) and ``.pixels`` (one per file); a text field ``.offsets`` into
    ``.ids``; tabular and label fields ``.values``. ``bad`` are the rows that failed (the
    k of each in ``bad_rows``), ``lines`` each row's manifest line; ``folder`` is where a disk
    store lies (None in memory).
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
        """Row ``k``'s tensors, as ``Preprocessor.example`` makes them."""
        out: Example = {LINE_KEY: int(self.lines[k])}
        for name in self.fields:
            get = self.arrays.get
            if not self.arrays[f"{name}.present"][k]:
                out[name] = None
            elif (pixels := get(f"{name}.pixels")) is not None:
                out[name] = torch.from_numpy(np.array(pixels[self.arrays[f"{name}.slot"][k]]))
            elif (ids := get(f"{name}.ids")) is not None:
                start, end = self.arrays[f"{name}.offsets"][k : k + 2]
                out[name] = torch.from_numpy(ids[start:end].astype(np.int64))
            else:
                out[name] = torch.from_numpy(np.array(self.arrays[f"{name}.values"][k]))
        return out


class _Images(Dataset):
    """Distinct image files, decoded in DataLoader workers; a failure comes back as its
    (reason, detail), which crosses from a worker where the exception would not."""

    def __init__(self, pre: ImagePreprocessor, paths: list[Path]) -> None:
        self.pre, self.paths = pre, paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor | tuple[str, str]:
        try:
            return self.pre.decode(self.paths[i])
        except RowError as err:
            return err.reason, err.detail


def build_store(
    dataset: RowDataset, folder: Path | None, label: str, workers: int = 0
) -> TensorStore:
    """Read every row of ``dataset`` once into arrays (memory-mapped files in ``folder``)."""
    pre, index = dataset.preprocessor, dataset.index
    n, source = len(dataset.positions), str(index.path)
    lines = index.lines[dataset.positions]
    arrays: dict[str, np.ndarray] = {f"{f}.present": np.zeros(n, dtype=bool) for f in pre.fields}
    files: dict[str, dict[Path, int]] = {}
    texts: dict[str, tuple[array, array]] = {}
    for name, field in pre.fields.items():
        if isinstance(field, ImagePreprocessor):
            arrays[f"{name}.slot"] = np.full(n, -1, dtype=np.int64)
            files[name] = {}
        elif isinstance(field, TextPreprocessor):
            texts[name] = (array("q", [0]), array("i"))
    bad: dict[int, QuarantinedRow] = {}
    rows = progress_bar(index.rows(dataset.positions), f"reading {label}", total=n)
    for k, row in enumerate(rows):
        for name, field in pre.fields.items():
            value = pre.value(name, row)
            if value is None or k in bad:
                continue
            try:
                if name in files:
                    path = ImagePreprocessor.resolve(value, index.base_dir)
                    arrays[f"{name}.slot"][k] = files[name].setdefault(path, len(files[name]))
                else:
                    tensor = field.read(value, index.base_dir)
                    if name in texts:
                        texts[name][1].extend(tensor.tolist())
                    else:
                        values = arrays.get(f"{name}.values")
                        if values is None:
                            shape, dtype = (n, *tensor.shape), tensor.numpy().dtype
                            values = arrays[f"{name}.values"] = np.zeros(shape, dtype=dtype)
                        values[k] = tensor.numpy()
                arrays[f"{name}.present"][k] = True
            except RowError as err:
                bad[k] = QuarantinedRow(source, int(lines[k]), err.reason, err.detail, name)
        for offsets, ids in texts.values():
            offsets.append(len(ids))
    for name, (offsets, ids) in texts.items():
        arrays[f"{name}.offsets"] = np.frombuffer(offsets, dtype=np.int64).copy()
        arrays[f"{name}.ids"] = np.frombuffer(ids, dtype=np.int32).copy()
    for name, paths in files.items():
        field = pre.fields[name]
        assert isinstance(field, ImagePreprocessor)
        shape = (len(paths), 3, field.size, field.size)
        pixels = (
            np.zeros(shape, dtype=np.uint8)
            if folder is None
            else np.lib.format.open_memmap(folder / f"{name}.pixels.npy", "w+", np.uint8, shape)
        )
        images = DataLoader(
            _Images(field, list(paths)), batch_size=64, num_workers=workers, collate_fn=list
        )
        failed: dict[int, tuple[str, str]] = {}
        decoded = (image for chunk in images for image in chunk)
        for slot, image in enumerate(progress_bar(decoded, f"decoding {label} images", len(paths))):
            if isinstance(image, tuple):
                failed[slot] = image
            else:
                pixels[slot] = image.numpy()
        arrays[f"{name}.pixels"] = pixels
        slots = arrays[f"{name}.slot"]
        for k in np.flatnonzero(np.isin(slots, list(failed))):
            if int(k) not in bad:
                reason, detail = failed[int(slots[k])]
                bad[int(k)] = QuarantinedRow(source, int(lines[k]), reason, detail, name)
    for k in bad:  # a bad row has no fields
        for name in pre.fields:
            arrays[f"{name}.present"][k] = False
    return TensorStore(arrays, bad, lines)


def _save(store: TensorStore, folder: Path) -> None:
    """Write the arrays not yet on disk, then the metadata that marks the store complete."""
    for key, value in store.arrays.items():
        if not isinstance(value, np.memmap):
            np.save(folder / f"{key}.npy", value, allow_pickle=False)
        else:
            value.flush()
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
