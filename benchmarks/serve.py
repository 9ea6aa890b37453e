"""Serving latency and throughput, against the same work in-process; ANN recall and latency at 1M.

Part 1 starts a real ``bentoml serve`` on 127.0.0.1 (from the project's
``models/serving.json``) and sends a bounded loopback load to ``/recommend``:
a 30 s FLAC upload (three rendered demo clips end to end) and a fused-array
input. Only successful (200) responses count. The baseline is the same work
called in-process on the same models and index (decode + features + rank), in
the same run; the ratio says what HTTP, multipart parsing and BentoML cost.

With ``--batching``, it then compares ``/embed`` with adaptive batching (the project's
``package.max_batch_size``) against the same server with batching off (``max_batch_size``
1), alternately, at ``--batch-clients`` concurrent clients each sending one window.

Part 2 builds a synthetic catalogue of unit vectors (the triplet embedding's
size) and compares FAISS HNSW, as the index stage builds it past
``index.ann_threshold``, with exact search: top-10 latency per query and
recall@10.

    .venv/bin/python -m benchmarks.serve --requests 200 --concurrency 8 --repeats 3 --catalogue 1000000
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf

from benchmarks.machine import describe
from bgmfit.config import IndexParams, load_params
from bgmfit.index import CosineIndex


def thirty_second_upload(manifest: Path = Path("data/raw/manifest.csv")) -> bytes:
    """Three rendered 10 s demo clips end to end, as FLAC bytes."""
    import csv

    with open(manifest, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["role"] == "bgm"][:3]
    audio = [sf.read(manifest.parent / r["path"], dtype="float32")[0] for r in rows]
    buffer = io.BytesIO()
    sf.write(buffer, np.concatenate(audio), int(rows[0]["sample_rate"]), format="FLAC")
    return buffer.getvalue()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(bare: bool = False, serving: Path | None = None) -> tuple[subprocess.Popen, str]:
    """``bentoml serve`` (or, ``bare``, the FastAPI app of ``benchmarks/bare_app.py``) on a free
    loopback port, configured by ``serving`` (default ``models/serving.json``); returns once
    /readyz answers 200."""
    port = _free_port()
    if bare:
        command = ["uvicorn", "benchmarks.bare_app:app", "--workers", "1", "--log-level", "warning"]
    else:
        command = ["bentoml", "serve", "bgmfit.serving.service:BGMFit"]
    env = dict(os.environ) | ({"BGMFIT_SERVING": str(serving)} if serving else {})
    log = tempfile.NamedTemporaryFile(prefix="bgmfit-bench-serve-", suffix=".log", delete=False)
    server = subprocess.Popen(
        [sys.executable, "-m", *command, "--host", "127.0.0.1", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                os.unlink(log.name)  # kept only to explain a server that does not start
                return server, base
        except httpx.TransportError:
            time.sleep(0.5)
        if server.poll() is not None:
            break
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
    tail = Path(log.name).read_text()[-2000:]
    raise SystemExit(f"{' '.join(command)} did not become ready in 120 s (after `make run`?):\n{tail}")


def load(base: str, send, requests: int, concurrency: int) -> dict[str, float]:
    """``requests`` calls of ``send(client)`` from ``concurrency`` threads, each with its own
    keep-alive connection; latency of the 200s only."""
    latencies: list[float] = []
    failures = 0

    def worker(count: int) -> None:
        nonlocal failures
        with httpx.Client(base_url=base, timeout=120) as client:
            for _ in range(count):
                start = time.perf_counter()
                status = send(client).status_code
                if status == 200:
                    latencies.append(time.perf_counter() - start)
                else:
                    failures += 1

    shares = [requests // concurrency + (i < requests % concurrency) for i in range(concurrency)]
    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(worker, shares))
    wall = time.perf_counter() - start
    return {
        "rps": len(latencies) / wall,
        "p50_ms": 1000 * float(np.percentile(latencies, 50)) if latencies else float("nan"),
        "p95_ms": 1000 * float(np.percentile(latencies, 95)) if latencies else float("nan"),
        "p99_ms": 1000 * float(np.percentile(latencies, 99)) if latencies else float("nan"),
        "failed": failures,
    }


def in_process(work, calls: int) -> dict[str, float]:
    """The same work called ``calls`` times in this process, one after another."""
    latencies = []
    for _ in range(calls):
        start = time.perf_counter()
        work()
        latencies.append(time.perf_counter() - start)
    return {
        "rps": len(latencies) / sum(latencies),
        "p50_ms": 1000 * float(np.percentile(latencies, 50)),
        "p95_ms": 1000 * float(np.percentile(latencies, 95)),
    }


def serving(requests: int, concurrency: int, repeats: int) -> None:
    from bgmfit.config import PackageParams, load_params
    from bgmfit.serving.recommender import Limits, from_registry

    upload = thirty_second_upload()
    config = json.loads(Path("models/serving.json").read_text())
    fused = np.random.default_rng(0).standard_normal(config["fused_shape"]).astype(np.float32)
    recommender = from_registry(
        Path("models/index"), Limits.from_params(load_params("package", PackageParams))
    )
    cases = {
        "30 s FLAC upload": (
            lambda c: c.post(
                "/recommend", files={"audio": ("a.flac", upload, "audio/flac")}, data={"top_k": "10"}
            ),
            lambda: recommender.recommend(recommender.query_from_audio(upload), "match", 10),
        ),
        "fused array": (
            lambda c: c.post("/recommend", json={"features": fused.tolist(), "top_k": 10}),
            lambda: recommender.recommend(recommender.query_from_fused(fused.tolist()), "match", 10),
        ),
    }
    server, base = start_server()
    try:
        # The first request once /readyz answers, against the steady state (the service warms up in __init__).
        with httpx.Client(base_url=base, timeout=120) as client:
            send = cases["30 s FLAC upload"][0]
            start = time.perf_counter()
            assert send(client).status_code == 200
            first = time.perf_counter() - start
            steady = []
            for _ in range(20):
                start = time.perf_counter()
                send(client)
                steady.append(time.perf_counter() - start)
        usual = statistics.median(steady)
        print(
            f"/recommend, 30 s FLAC upload: first request {first * 1000:.0f} ms, steady median "
            f"{usual * 1000:.0f} ms (20 after it): {first / usual:.2f}x"
        )
        for name, (send, work) in cases.items():
            load(base, send, max(8, requests // 10), concurrency)  # warm-up
            in_process(work, 5)
            served = [load(base, send, requests, concurrency) for _ in range(repeats)]
            local = [in_process(work, max(20, requests // 4)) for _ in range(repeats)]
            median = {k: statistics.median(r[k] for r in served) for k in served[0]}
            base_median = {k: statistics.median(r[k] for r in local) for k in local[0]}
            print(
                f"/recommend, {name}: served {median['rps']:.1f} req/s, p50 {median['p50_ms']:.1f} ms, "
                f"p95 {median['p95_ms']:.1f} ms, p99 {median['p99_ms']:.1f} ms, "
                f"failed {median['failed']:.0f} "
                f"({requests} requests x {concurrency} clients, median of {repeats})"
            )
            print(
                f"  in-process baseline: {base_median['rps']:.1f} calls/s, "
                f"p50 {base_median['p50_ms']:.1f} ms, p95 {base_median['p95_ms']:.1f} ms; "
                "served / in-process throughput "
                f"{median['rps'] / base_median['rps']:.2f}x"
            )
        # The fused case at one client, against the same call in a bare FastAPI app, side by side.
        bare, bare_base = start_server(bare=True)
        try:
            send = cases["fused array"][0]
            load(bare_base, send, 20, 1)  # warm-up
            ours, theirs = [], []
            for _ in range(repeats):
                ours.append(load(base, send, requests, 1)["rps"])
                theirs.append(load(bare_base, send, requests, 1)["rps"])
            ours_rps, bare_rps = statistics.median(ours), statistics.median(theirs)
            print(
                f"/recommend, fused array, 1 client: BentoML {ours_rps:.1f} req/s, bare FastAPI "
                f"{bare_rps:.1f} req/s: {ours_rps / bare_rps:.2f}x (median of {repeats}, alternating)"
            )
        finally:
            os.killpg(bare.pid, signal.SIGTERM)
            bare.wait(timeout=30)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def batching(requests: int, clients: int, repeats: int) -> None:
    """``/embed`` at ``clients`` concurrent clients (one window each), batching on against off."""
    config = json.loads(Path("models/serving.json").read_text())
    unbatched = Path("models/serving-unbatched.json")
    unbatched.write_text(json.dumps({**config, "batching": {**config["batching"], "max_batch_size": 1}}))
    window = np.random.default_rng(0).standard_normal((1, *config["fused_shape"])).astype(np.float32)
    body = json.dumps({"features": window.tolist()})

    def send(client: httpx.Client) -> httpx.Response:
        return client.post("/embed", content=body, headers={"content-type": "application/json"})

    servers: dict[str, tuple[subprocess.Popen, str]] = {}
    try:
        servers["batched"] = start_server()
        servers["unbatched"] = start_server(serving=unbatched)
        for _, base in servers.values():
            load(base, send, 2 * clients, clients)  # warm-up
        runs: dict[str, list[dict]] = {name: [] for name in servers}
        for _ in range(repeats):
            for name, (_, base) in servers.items():
                runs[name].append(load(base, send, requests, clients))
        median = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in runs.items()}
        for name, m in median.items():
            print(
                f"/embed, {clients} clients, {name} (max_batch_size "
                f"{config['batching']['max_batch_size'] if name == 'batched' else 1}): "
                f"{m['rps']:.1f} req/s, p50 {m['p50_ms']:.1f} ms, p99 {m['p99_ms']:.1f} ms, "
                f"rejected {m['failed']:.0f} ({requests} requests, median of {repeats}, alternating)"
            )
        print(f"  batched / unbatched: {median['batched']['rps'] / median['unbatched']['rps']:.2f}x")
    finally:
        for server, _ in servers.values():
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
        unbatched.unlink()


def clustered_catalogue(size: int, dim: int, rng: np.random.Generator, clusters: int = 1000) -> np.ndarray:
    """Unit vectors in ``clusters`` tight groups, as trained style embeddings lie (uniform random
    points in 64 dimensions are all nearly equidistant, which no real catalogue is)."""
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    vectors = centres[rng.integers(clusters, size=size)] + 0.35 * rng.standard_normal((size, dim)).astype(
        np.float32
    )
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def ann(size: int, dim: int, queries: int, repeats: int, ef_values: tuple[int, ...] = (64, 128, 256)) -> None:
    import faiss

    params = load_params("index", IndexParams)
    rng = np.random.default_rng(0)
    vectors = clustered_catalogue(size, dim, rng)
    probes = vectors[rng.choice(size, queries, replace=False)] + 0.05 * rng.standard_normal((queries, dim))
    probes = (probes / np.linalg.norm(probes, axis=1, keepdims=True)).astype(np.float32)
    start = time.perf_counter()
    hnsw = CosineIndex.build(vectors, params.model_copy(update=dict(ann_threshold=2)))  # HNSW at any size
    build = time.perf_counter() - start
    faiss.omp_set_num_threads(1)  # single-query serving: two threads are slower per query here

    def per_query(index: CosineIndex) -> tuple[float, np.ndarray]:
        runs, rows = [], None
        for _ in range(repeats):
            found, start = [], time.perf_counter()
            for q in probes:
                found.append(index.search(q, 10)[0][0])
            runs.append((time.perf_counter() - start) / queries)
            rows = np.array(found)
        return statistics.median(runs), rows

    exact_time, truth = per_query(CosineIndex(vectors))
    print(f"index: {size:,} x {dim} clustered unit vectors, {queries} queries, median of {repeats}")
    print(f"  exact (numpy):  {1000 * exact_time:.2f} ms per top-10 query")
    print(f"  FAISS HNSW M={params.hnsw_m} efConstruction={params.ef_construction}: built in {build:.0f} s")
    for ef in ef_values:
        hnsw.ef_search = ef
        hnsw_time, approx = per_query(hnsw)
        recall = np.mean([len(set(a) & set(t)) / 10 for a, t in zip(approx, truth, strict=True)])
        print(
            f"    efSearch {ef:>3}: {1000 * hnsw_time:.3f} ms per query, recall@10 {recall:.3f}, "
            f"speed-up {exact_time / hnsw_time:.0f}x"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200, help="requests per load run")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent loopback clients")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--catalogue", type=int, default=1_000_000, help="synthetic ANN catalogue size")
    parser.add_argument("--dim", type=int, default=64, help="embedding size (train_triplet.embed_dim)")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--skip-serving", action="store_true")
    parser.add_argument("--batching", action="store_true", help="/embed with batching on and off")
    parser.add_argument("--batch-clients", type=int, default=32, help="concurrent clients for --batching")
    parser.add_argument("--skip-index", action="store_true")
    args = parser.parse_args()
    print(f"machine: {describe()}")
    if not args.skip_serving:
        serving(args.requests, args.concurrency, args.repeats)
    if args.batching:
        batching(args.requests, args.batch_clients, args.repeats)
    if not args.skip_index:
        ann(args.catalogue, args.dim, args.queries, args.repeats)


if __name__ == "__main__":
    main()
