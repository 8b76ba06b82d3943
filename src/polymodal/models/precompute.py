"""Precomputed features (``precompute: true``): a frozen encoder's output (a pretrained
encoder's: its backbone's) for every row of a run's splits, computed once before training, so
that each epoch runs only what follows (a pretrained encoder's projection, the fusion, the
heads).

``MultimodalModel.precomputed`` maps a field to its ``FeatureStore``; ``encode`` then looks the
batch's rows up (by manifest line) instead of running the backbone. A store holds each row's
valid tokens and its pooled vector: exactly what the encoder gives (padding zeroed), so the
outputs are those of the encoder run on the batch, up to float rounding. A saved model holds no
store: evaluation and prediction from it run the encoder.

Stores live in memory, or with ``data.cache: disk`` as ``.npy`` files under
``CACHE_DIR/features/KEY``, where KEY covers each split's data fingerprint (the fitted
preprocessing, the manifest's bytes, the split's rows) and the frozen weights: a later run
on the same data with the same encoder reads them back. Rows are read as evaluation reads: a
precomputed audio field trains without random crops.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from polymodal.config import DataConfig
from polymodal.data.cache import cache_root, fingerprint
from polymodal.data.dataset import RowDataset, loader
from polymodal.errors import ModelError
from polymodal.io import atomic_write_text
from polymodal.models.encoders import Encoded
from polymodal.models.encoders.pretrained import PretrainedEncoder
from polymodal.progress import progress_bar

if TYPE_CHECKING:
    from polymodal.models.model import MultimodalModel

FORMAT = 1  # bump when the layout changes: older stores are then recomputed
ARRAYS = ("lines", "offsets", "tokens", "pooled")
META_FILE = "features.json"


class FeatureStore:
    """Row ``k`` (manifest line ``lines[k]``) has tokens ``tokens[offsets[k]:offsets[k+1]]``
    and pooled vector ``pooled[k]``."""

    def __init__(
        self, lines: np.ndarray, offsets: np.ndarray, tokens: np.ndarray, pooled: np.ndarray
    ) -> None:
        self.offsets, self.tokens, self.pooled = offsets, tokens, pooled
        self.lines = lines
        self.row_of = {int(line): k for k, line in enumerate(lines)}

    def lookup(self, rows: Sequence[int], device: torch.device | str) -> Encoded:
        """The features of the manifest lines ``rows``, padded with zeros to the longest."""
        try:
            ks = np.asarray([self.row_of[row] for row in rows], dtype=np.int64)
        except KeyError as err:
            raise ModelError(
                f"manifest line {err} has no precomputed features: they cover the splits "
                "the run prepared"
            ) from None
        counts = self.offsets[ks + 1] - self.offsets[ks]
        steps = max(1, int(counts.max()))
        tokens = np.zeros((len(ks), steps, self.tokens.shape[1]), dtype=np.float32)
        for i, k in enumerate(ks):
            tokens[i, : counts[i]] = self.tokens[self.offsets[k] : self.offsets[k + 1]]
        mask = torch.arange(steps)[None, :] < torch.from_numpy(counts)[:, None]
        pooled = torch.from_numpy(self.pooled[ks])  # indexing by a list copies
        return Encoded(torch.from_numpy(tokens).to(device), mask.to(device), pooled.to(device))

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "lines": self.lines,
            "offsets": self.offsets,
            "tokens": self.tokens,
            "pooled": self.pooled,
        }


def frozen_part(encoder: nn.Module) -> nn.Module:
    """What is computed once: a pretrained encoder's backbone, else the whole encoder."""
    return encoder.backbone if isinstance(encoder, PretrainedEncoder) else encoder


def _features(encoder: nn.Module) -> Callable[..., Encoded]:
    return encoder.features if isinstance(encoder, PretrainedEncoder) else encoder


def after_features(encoder: nn.Module, features: Encoded) -> Encoded:
    """The encoder's output from its precomputed ``features``: a pretrained encoder's
    projection of them; the features themselves for any other encoder."""
    if isinstance(encoder, PretrainedEncoder):
        return encoder.project_features(features)
    return features


def backbone_digest(encoder: nn.Module) -> str:
    """SHA-256 of the frozen part: its type, options and every weight and buffer."""
    frozen = frozen_part(encoder)
    digest = hashlib.sha256(type(frozen).__name__.encode())
    digest.update(json.dumps(getattr(frozen, "options", {}), sort_keys=True).encode())
    for name, tensor in sorted(frozen.state_dict().items()):
        digest.update(f"{name} {tensor.dtype} {tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def compute_features(
    model: MultimodalModel,
    name: str,
    datasets: Sequence[RowDataset],
    batch_size: int,
    device: torch.device | str = "cpu",
    workers: int = 0,
) -> FeatureStore:
    """Field ``name``'s features (``frozen_part``'s output) for every row of ``datasets``
    (rows found bad are left out, as training leaves them out)."""
    encoder = model.encoders[name]
    features = _features(encoder)
    field = model.preprocessor.fields[name]
    lines: list[np.ndarray] = []
    counts: list[np.ndarray] = []
    tokens: list[np.ndarray] = []
    pooled: list[np.ndarray] = []
    was_training = encoder.training
    encoder.to(device).eval()
    with torch.no_grad():
        for dataset in datasets:
            batches = loader(dataset, model.preprocessor.collate, batch_size, workers)
            for batch in progress_bar(batches, f"precomputing '{name}' features"):
                if not len(batch):
                    continue
                batch = batch.to(device)
                values = field.model_input(batch.values[name], batch.present[name])
                out = features(values, batch.lengths.get(name))
                lines.append(np.asarray(batch.rows, dtype=np.int64))
                counts.append(out.token_mask.sum(1).cpu().numpy())
                tokens.append(out.tokens[out.token_mask].float().cpu().numpy())
                pooled.append(out.pooled.float().cpu().numpy())
    encoder.train(was_training)
    if not lines:  # no row to compute
        empty = np.zeros((0, 0), dtype=np.float32)
        return FeatureStore(np.zeros(0, np.int64), np.zeros(1, np.int64), empty, empty)
    offsets = np.concatenate([[0], np.cumsum(np.concatenate(counts))]).astype(np.int64)
    return FeatureStore(
        np.concatenate(lines), offsets, np.concatenate(tokens), np.concatenate(pooled)
    )


def _key(name: str, encoder: nn.Module, datasets: Sequence[RowDataset]) -> str:
    """What names field ``name``'s store: its frozen weights and the data fingerprints."""
    digest = hashlib.sha256(f"polymodal features {FORMAT} {name}".encode())
    digest.update(backbone_digest(encoder).encode())
    for dataset in datasets:
        digest.update(fingerprint(dataset).encode())
    return digest.hexdigest()[:20]


def _load(folder: Path) -> FeatureStore | None:
    meta = folder / META_FILE
    if not meta.is_file() or json.loads(meta.read_text(encoding="utf-8")).get("format") != FORMAT:
        return None
    arrays = {key: np.load(folder / f"{key}.npy", mmap_mode="r") for key in ARRAYS}
    return FeatureStore(**arrays)


def _save(store: FeatureStore, folder: Path) -> FeatureStore:
    """Write ``store`` to ``folder`` (built beside it, then renamed into place); read back
    memory-mapped. A store another process wrote meanwhile is kept."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=".features.", suffix=".tmp", dir=folder.parent))
    try:
        for key, array in store.arrays().items():
            np.save(building / f"{key}.npy", array, allow_pickle=False)
        atomic_write_text(building / META_FILE, json.dumps({"format": FORMAT}))
        if _load(folder) is None:
            if folder.exists():  # an incomplete store
                shutil.rmtree(folder)
            os.replace(building, folder)
    finally:
        if building.exists():
            shutil.rmtree(building)
    loaded = _load(folder)
    assert loaded is not None
    return loaded


def precompute_features(
    model: MultimodalModel,
    splits: dict[str, RowDataset],
    data: DataConfig,
    cache_dir: Path | None,
    batch_size: int,
    device: torch.device | str = "cpu",
    workers: int = 0,
) -> list[str]:
    """Fill ``model.precomputed`` for each encoder with ``precompute``, over the rows of
    ``splits``: on disk (found or written under ``cache_dir``) with ``data.cache: disk``, else
    in memory. Returns the fields precomputed."""
    datasets = [splits[name] for name in sorted(splits)]
    done = []
    for name, encoder in model.encoders.items():
        options = model.config.encoders.get(name)
        if options is None or not options.precompute:
            continue
        folder = None
        if data.cache == "disk":
            folder = cache_root(data, cache_dir) / "features" / _key(name, encoder, datasets)
        store = _load(folder) if folder is not None else None
        if store is None:
            store = compute_features(model, name, datasets, batch_size, device, workers)
            if folder is not None:
                store = _save(store, folder)
        model.precomputed[name] = store
        done.append(name)
    return done
