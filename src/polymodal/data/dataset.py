"""The map-style Dataset of one split: a row read and preprocessed when a DataLoader asks.

Without a store, ``dataset[i]`` reads row i from the manifest and decodes it (in a DataLoader
worker process); a bad row comes back as its ``QuarantinedRow``, which collation leaves out
of the batch. With a store (``data.cache: memory | disk``) the tensors come ready-made and
the rows found bad while the store was built are gone from the dataset, quarantined.

Rows are read as evaluation reads (centre crops) unless the dataset is ``for_training()``,
which the trainer makes of its train split: then audio and video take random crops, drawn
from torch's RNG (which torch seeds in each DataLoader worker). A store holds evaluation
reads, so a cached train split is read without random crops.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, overload

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from polymodal.config import DataConfig
from polymodal.data.quarantine import Quarantine, QuarantinedRow
from polymodal.data.schema import is_absent
from polymodal.data.sources import ManifestIndex

if TYPE_CHECKING:
    from polymodal.data.cache import TensorStore
    from polymodal.data.pipeline import Example, Preprocessor


class RowDataset(Dataset):
    """Rows ``positions`` of ``index`` (one split, in file order) through ``preprocessor``."""

    def __init__(
        self,
        index: ManifestIndex,
        positions: np.ndarray,
        preprocessor: Preprocessor,
        store: TensorStore | None = None,
        keep: np.ndarray | None = None,
        training: bool = False,
    ) -> None:
        self.index = index
        self.positions = np.asarray(positions, dtype=np.int64)
        self.preprocessor = preprocessor
        self.store = store
        self.keep = np.arange(len(self.positions)) if keep is None else keep
        self.training = training

    def __len__(self) -> int:
        return len(self.keep)

    @overload
    def __getitem__(self, i: int) -> Example | QuarantinedRow: ...

    @overload
    def __getitem__(self, i: slice) -> list[Example | QuarantinedRow]: ...

    def __getitem__(self, i: int | slice) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if not -len(self.keep) <= i < len(self.keep):
            raise IndexError(f"row {i} of a split of {len(self.keep)}")
        k = int(self.keep[i])
        if self.store is not None:
            return self.store.example(k)
        row = self.index.read(int(self.positions[k]))
        source = str(self.index.path)
        return self.preprocessor.read(row, self.index.base_dir, source, self.training)

    def groups(self, column: str) -> np.ndarray:
        """Per row, a group id shared by the rows with one value in ``column``; a row without
        a value is a group of its own."""
        ids: dict[str, int] = {}
        groups = np.empty(len(self.keep), np.int64)
        for i, row in enumerate(self.index.rows(self.positions[self.keep])):
            value = row.get(column)
            key = f"\0{i}" if is_absent(value) else json.dumps(value, sort_keys=True)
            groups[i] = ids.setdefault(key, len(ids))
        return groups

    def for_training(self) -> RowDataset:
        """The same rows, read as training reads (random crops where a field takes them)."""
        return RowDataset(
            self.index, self.positions, self.preprocessor, self.store, self.keep, True
        )

    def with_store(self, store: TensorStore, quarantine: Quarantine) -> RowDataset:
        """The same rows read from ``store``, less those it found bad (quarantined here)."""
        for row in store.bad:
            quarantine.add(row)
        good = np.setdiff1d(np.arange(len(self.positions)), store.bad_rows)
        return RowDataset(self.index, self.positions, self.preprocessor, store, good, self.training)

    def subset(self, keep: Callable[[int], bool]) -> RowDataset:
        """The rows whose manifest line passes ``keep``."""
        lines = self.index.lines[self.positions[self.keep]]
        chosen = self.keep[[keep(int(line)) for line in lines]] if len(lines) else self.keep
        return RowDataset(
            self.index, self.positions, self.preprocessor, self.store, chosen, self.training
        )


def available_cpus() -> int:
    """The CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def decoding_workers(data: DataConfig) -> int:
    """Processes that decode rows: ``data.workers``, else about half the CPUs (the other half
    runs the model), at most 4."""
    if data.workers is not None:
        return data.workers
    return min(4, max(1, available_cpus() // 2))


def workers_for(data: DataConfig) -> int:
    """DataLoader workers of a run: as ``decoding_workers``, but none by default when a store
    holds the rows decoded (handing batches over from a worker would cost more than it saves)."""
    return 0 if data.cache != "none" and data.workers is None else decoding_workers(data)


def loader(
    dataset: Sequence[Any],
    collate: Callable[[list[Any]], Any],
    batch_size: int,
    workers: int = 0,
    sampler: Iterable[int] | None = None,
    device: torch.device | None = None,
) -> DataLoader:
    """A DataLoader over ``dataset``: persistent workers, pinned memory on CUDA, and a
    generator of its own, so that making it draws nothing from torch's global RNG (which
    dropout uses: a resumed run must see the same numbers)."""
    return DataLoader(
        dataset,  # type: ignore[arg-type]
        batch_size=batch_size,
        sampler=sampler,  # type: ignore[arg-type]
        collate_fn=collate,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=device is not None and device.type == "cuda",
        generator=torch.Generator().manual_seed(0),
    )


def read_all(
    dataset: Sequence[Example | QuarantinedRow], quarantine: Quarantine, workers: int = 0
) -> list[Example]:
    """Every good example of ``dataset`` in order (read by ``workers`` processes); the bad
    rows go to ``quarantine``. For what needs a split as a list (a report, robustness)."""
    examples: list[Example] = []
    for chunk in loader(dataset, list, 64, workers):
        for item in chunk:
            if isinstance(item, QuarantinedRow):
                quarantine.add(item)
            else:
                examples.append(item)
    return examples
