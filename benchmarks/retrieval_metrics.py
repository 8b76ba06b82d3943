"""Retrieval metrics: polymodal's vectorised ranks against the usual per-query loop.

The baseline is what evaluation scripts commonly do: for each query, argsort its row of the
similarity matrix and find where the first relevant item lands (5 captions per image, as in
COCO/Flickr30k, so image->text has several relevant items per query). Both run in the same
process on the same matrices; the results must agree exactly before any time is reported.

    python benchmarks/retrieval_metrics.py [--sizes 1000 5000] [--repeats 5] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from polymodal.metrics.retrieval import retrieval_scores

CAPTIONS_PER_IMAGE = 5
KS = (1, 5, 10)


def loop_scores(similarity: np.ndarray, owner: np.ndarray) -> dict[str, dict[str, float]]:
    """Per-query loop; ``owner[j]`` is the image of caption j. Ties broken by gallery order."""
    i2t = []
    for i, row in enumerate(similarity):
        order = np.argsort(-row, kind="stable")
        i2t.append(1 + int(np.where(owner[order] == i)[0].min()))
    t2i = []
    for j, column in enumerate(similarity.T):
        order = np.argsort(-column, kind="stable")
        t2i.append(1 + int(np.where(order == owner[j])[0][0]))
    return {"image_to_text": _summary(i2t), "text_to_image": _summary(t2i)}


def _summary(ranks: list[int]) -> dict[str, float]:
    array = np.asarray(ranks)
    scores = {f"R@{k}": float((array <= k).mean()) for k in KS}
    scores["median_rank"] = float(np.median(array))
    return scores


def _median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(sizes: list[int], repeats: int) -> dict:
    results = []
    for n_images in sizes:
        rng = np.random.default_rng(n_images)
        owner = np.repeat(np.arange(n_images), CAPTIONS_PER_IMAGE)
        # Embeddings that are related but noisy, rounded so that ties occur as in real scores.
        images = rng.normal(size=(n_images, 64)).astype(np.float32)
        texts = images[owner] + rng.normal(scale=1.5, size=(len(owner), 64)).astype(np.float32)
        similarity = np.round(images @ texts.T, 1)
        relevance = owner[None, :] == np.arange(n_images)[:, None]

        expected = loop_scores(similarity, owner)
        got = retrieval_scores(similarity, relevance, ks=KS)
        for direction in ("image_to_text", "text_to_image"):
            for key, value in expected[direction].items():
                assert got[direction][key] == value, (n_images, direction, key)

        tensor = torch.from_numpy(similarity)
        relevance_t = torch.from_numpy(relevance)
        loop = _median_seconds(lambda s=similarity, o=owner: loop_scores(s, o), repeats)
        ours = _median_seconds(
            lambda s=tensor, r=relevance_t: retrieval_scores(s, r, ks=KS), repeats
        )
        results.append(
            {
                "images": n_images,
                "captions": len(owner),
                "loop_seconds": round(loop, 4),
                "polymodal_seconds": round(ours, 4),
                "speedup": round(loop / ours, 1),
            }
        )
        print(
            f"{n_images} images x {len(owner)} captions: loop {loop:.3f} s, "
            f"polymodal {ours:.3f} s, {loop / ours:.1f}x faster (medians of {repeats})"
        )
    return {
        "benchmark": "retrieval_metrics",
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "numpy": np.__version__,
        },
        "repeats": repeats,
        "results": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/results/retrieval_metrics.json")
    args = parser.parse_args()
    report = run(args.sizes, args.repeats)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
