"""The served index at 10k, 100k and 1M tracks: build time, memory, size on disk, latency and recall.

The embeddings come from the ``@champion`` networks (``models/champions.json``, loaded from
the registry as the ``index`` stage loads them). Their inputs are synthetic, drawn from the
demo corpus's real feature windows (``data/features``): each new track is a random mix of two
real windows plus noise, in the networks' normalised input space, so the embeddings cluster
as the champions cluster real music. One window per track, a library of 10 s excerpts; a
library of 3-minute tracks has about 36 windows per track (``features.window_hop_seconds``).

For each size, in a fresh process (so its peak memory is its own):

- method B's style embeddings are indexed as the ``index`` stage indexes them past
  ``index.ann_threshold`` (FAISS HNSW, ``index.hnsw_m`` and ``ef_construction``): build time,
  peak resident memory, index size on disk (``triplet.npy`` + ``triplet.faiss``);
- ``--queries`` held-out synthetic tracks (not in the index) are searched one at a time, top
  10, exactly (the numpy search below the threshold) and with HNSW at several ``efSearch``:
  median per-query latency over ``--repeats`` and recall@10 against the exact answers;
- method A, which scores every BGM window through its head (no ANN), is timed per query too.

Usage (after `make run`, which registers the champions):

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.index --sizes 10000 100000 1000000
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.machine import describe

BATCH = 4096


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _synthetic(source: np.ndarray, n: int, rng: np.random.Generator):
    """Batches of ``n`` synthetic inputs: a random mix of two real windows, plus noise."""
    for start in range(0, n, BATCH):
        size = min(BATCH, n - start)
        i, j = rng.integers(len(source), size=(2, size))
        w = rng.uniform(0.2, 0.8, size=(size,) + (1,) * (source.ndim - 1)).astype(np.float32)
        noise = 0.1 * rng.standard_normal((size, *source.shape[1:]), dtype=np.float32)
        yield w * source[i] + (1 - w) * source[j] + noise


@torch.no_grad()
def _embed(network, source: np.ndarray, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([network(torch.from_numpy(x)).numpy() for x in _synthetic(source, n, rng)])


def _per_query(search, queries: np.ndarray, repeats: int) -> tuple[float, list]:
    """Median over ``repeats`` of the mean seconds per single-query search, and the last answers."""
    times, answers = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        answers = [search(q) for q in queries]
        times.append((time.perf_counter() - start) / len(queries))
    return statistics.median(times), answers


def measure(size: int, queries: int, repeats: int, efs: list[int]) -> dict:
    """Everything for one library size, in this process."""
    import faiss

    from bgmfit.config import IndexParams, load_params
    from bgmfit.data.store import FeatureStore
    from bgmfit.files import CHAMPIONS, FEATURES, read_json
    from bgmfit.index import CosineIndex
    from bgmfit.networks import MATCH, TRIPLET
    from bgmfit.tracking.logged import load_version

    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)  # serving answers one query at a time; the build below gets 2
    champions = read_json(CHAMPIONS, "run `make run` first")
    triplet = load_version(TRIPLET.name, str(champions[TRIPLET.name]["version"]))
    match = load_version(MATCH.name, str(champions[MATCH.name]["version"]))
    store = FeatureStore.load(FEATURES)
    triplet_input = store.window_frames if triplet.input_kind == "mfcc_frames" else store.window_fused
    params = load_params("index", IndexParams).model_copy(update=dict(ann_threshold=2))

    start = time.perf_counter()
    vectors = _embed(triplet, triplet_input, size, seed=1)
    embed_seconds = time.perf_counter() - start
    query_vectors = _embed(triplet, triplet_input, queries, seed=2)  # held out: not in the index
    rss_before = _rss_mib()
    faiss.omp_set_num_threads(2)
    start = time.perf_counter()
    hnsw = CosineIndex.build(vectors, params)
    build_seconds = time.perf_counter() - start
    faiss.omp_set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "triplet.npy", vectors)
        faiss.write_index(hnsw.hnsw, str(Path(tmp) / "triplet.faiss"))
        disk = {name: (Path(tmp) / name).stat().st_size for name in ("triplet.npy", "triplet.faiss")}

    exact = CosineIndex(vectors)
    exact_seconds, truth = _per_query(lambda q: exact.search(q, 10)[0][0], query_vectors, repeats)
    ann = []
    for ef in efs:
        hnsw.ef_search = ef
        seconds, found = _per_query(lambda q: hnsw.search(q, 10)[0][0], query_vectors, repeats)
        recall = np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth, strict=True)])
        ann.append({"ef_search": ef, "ms": 1000 * seconds, "recall_at_10": float(recall)})

    match_seconds = None
    if size <= 1_000_000:
        bgm = _embed(lambda x: match.embed(x, "bgm"), store.window_fused, size, seed=3)
        foreground = _embed(lambda x: match.embed(x, "foreground"), store.window_fused, 5, seed=4)
        candidates = torch.from_numpy(bgm)
        with torch.no_grad():
            match_seconds, _ = _per_query(
                lambda q: torch.topk(match.query_fit(torch.from_numpy(q[None]), candidates), 10),
                foreground,
                max(1, repeats // 2),
            )
    return {
        "size": size,
        "dim": int(vectors.shape[1]),
        "embed_s": embed_seconds,
        "build_s": build_seconds,
        "rss_before_build_mib": rss_before,
        "peak_rss_mib": _rss_mib(),
        "disk_mib": {k: v / 2**20 for k, v in disk.items()},
        "exact_ms": 1000 * exact_seconds,
        "ann": ann,
        "match_ms": None if match_seconds is None else 1000 * match_seconds,
        "ef_search_param": load_params("index", IndexParams).ef_search,
        "hnsw": {"m": params.hnsw_m, "ef_construction": params.ef_construction},
    }


def report(result: dict) -> None:
    disk = result["disk_mib"]
    print(
        f"{result['size']:>9,} tracks x {result['dim']}: embedded in {result['embed_s']:.0f} s; "
        f"HNSW M={result['hnsw']['m']} efConstruction={result['hnsw']['ef_construction']} built in "
        f"{result['build_s']:.1f} s (2 threads); peak RSS {result['peak_rss_mib']:,.0f} MiB "
        f"({result['rss_before_build_mib']:,.0f} before the build); on disk "
        f"{disk['triplet.npy']:,.1f} MiB vectors + {disk['triplet.faiss']:,.1f} MiB HNSW"
    )
    print(f"    exact top-10:     {result['exact_ms']:8.3f} ms per query")
    for row in result["ann"]:
        mark = "  <- index.ef_search" if row["ef_search"] == result["ef_search_param"] else ""
        print(
            f"    HNSW efSearch {row['ef_search']:>3}: {row['ms']:8.3f} ms per query, recall@10 "
            f"{row['recall_at_10']:.3f}, {result['exact_ms'] / row['ms']:5.0f}x exact{mark}"
        )
    if result["match_ms"] is not None:
        print(f"    method A (head over every BGM window, exact): {result['match_ms']:.1f} ms per query")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=200, help="held-out queries per size")
    parser.add_argument("--repeats", type=int, default=3, help="runs of the queries; the median is printed")
    parser.add_argument("--ef", type=int, nargs="+", default=[16, 32, 64, 128, 256], help="efSearch tried")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a single size, in this process
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.one, args.queries, args.repeats, args.ef)))
        return
    print(f"machine: {describe()}")
    print(f"{args.queries} held-out queries per size, median of {args.repeats} runs, 1 search thread")
    for size in args.sizes:
        command = [sys.executable, "-m", "benchmarks.index", "--one", str(size)]
        command += [
            "--queries",
            str(args.queries),
            "--repeats",
            str(args.repeats),
            "--ef",
            *map(str, args.ef),
        ]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"size {size}: failed\n{done.stderr[-2000:]}")
        report(json.loads(done.stdout.strip().splitlines()[-1]))


if __name__ == "__main__":
    main()
