"""Vector search: polymodal's FAISS indexes against brute-force numpy, at 100k and 1M vectors.

The collection is clustered like real embeddings (unit vectors around 1,000 random centres,
64 dimensions); the queries are 1,000 more drawn the same way. The baseline is what one would
write with numpy: every score in one matrix product per chunk of queries, then the top 10 by
argpartition. polymodal's indexes (``polymodal.index.new_vectors``: "exact" and "hnsw", as
``polymodal index build`` makes them) answer the same queries in the same process. Reported per
size: queries/s (median of ``--repeats``), the speed-up over numpy, recall@10 against the exact
answer, and build seconds.

    python benchmarks/index_search.py [--sizes 100000 1000000] [--repeats 3] [--threads N]
        [--out benchmarks/results/index_search.json]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import faiss
import numpy as np
import torch
from machine import load_average, machine, write_report

from polymodal.index import HNSW_EF_SEARCH, new_vectors

DIM = 64
CENTRES = 1000
QUERIES = 1000
K = 10
CHUNK = 250  # numpy queries per matrix product: 250 x 1M scores in memory at once


def clustered(count: int, rng: np.random.Generator, centres: np.ndarray) -> np.ndarray:
    """Unit vectors scattered around randomly chosen centres."""
    picked = centres[rng.integers(0, len(centres), count)]
    vectors = picked + 0.35 * rng.standard_normal((count, DIM)).astype(np.float32) / np.sqrt(DIM)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def numpy_top_k(collection: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """The ids of each query's K best inner products, best first."""
    found = []
    for start in range(0, len(queries), CHUNK):
        scores = queries[start : start + CHUNK] @ collection.T
        top = np.argpartition(-scores, K, axis=1)[:, :K]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
        found.append(np.take_along_axis(top, order, axis=1))
    return np.concatenate(found)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / K for f, t in zip(found, truth, strict=True)]))


def timed(search, repeats: int) -> tuple[float, np.ndarray]:
    """Median seconds over ``repeats`` runs of ``search()``, and its last answer."""
    times, answer = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        answer = search()
        times.append(time.perf_counter() - start)
    return statistics.median(times), answer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="default: every CPU")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "index_search.json"
    )
    args = parser.parse_args()
    if args.threads:
        faiss.omp_set_num_threads(args.threads)
        torch.set_num_threads(args.threads)
    start, load_at_start = time.perf_counter(), load_average()
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((CENTRES, DIM)).astype(np.float32)
    queries = clustered(QUERIES, rng, centres)
    sizes = {}
    for size in args.sizes:
        collection = clustered(size, rng, centres)
        seconds, truth = timed(lambda c=collection: numpy_top_k(c, queries), args.repeats)
        result = {"numpy": {"queries_per_second": round(QUERIES / seconds, 1)}}
        for kind in ("exact", "hnsw"):
            built = time.perf_counter()
            index = new_vectors(kind, DIM)
            index.add_with_ids(collection, np.arange(size, dtype=np.int64))
            build_seconds = time.perf_counter() - built
            seconds, (_, found) = timed(lambda i=index: i.search(queries, K), args.repeats)
            qps = QUERIES / seconds
            result[kind] = {
                "queries_per_second": round(qps, 1),
                "speedup_over_numpy": round(qps / result["numpy"]["queries_per_second"], 2),
                "recall_at_10": round(recall(found, truth), 4),
                "build_seconds": round(build_seconds, 1),
            }
            print(f"{size:,} vectors, {kind}: {result[kind]}", flush=True)
        sizes[str(size)] = result
    largest = sizes[str(max(args.sizes))]["hnsw"]
    report = {
        "dimensions": DIM,
        "queries": QUERIES,
        "k": K,
        "hnsw_ef_search": HNSW_EF_SEARCH,
        "sizes": sizes,
        "goal": "hnsw >= 10x numpy at recall@10 >= 0.95 on the largest collection",
        "goal_met": largest["speedup_over_numpy"] >= 10 and largest["recall_at_10"] >= 0.95,
        "faiss_threads": faiss.omp_get_max_threads(),
        "machine": machine(),
        "load_average_start": load_at_start,
    }
    write_report(report, start, args.out)


if __name__ == "__main__":
    main()
