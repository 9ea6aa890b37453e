"""Extract features for many tracks: in parallel, cached by content hash."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from functools import cache, partial
from pathlib import Path

import numpy as np
from tqdm import tqdm

from bgmfit.audio import load_audio
from bgmfit.config import FeaturesParams
from bgmfit.errors import AudioDecodeError, BgmfitError
from bgmfit.features.augment import augmented_copies
from bgmfit.features.fusion import analyse
from bgmfit.features.windows import TrackWindows, analyse_windows

#: Bump when a feature's definition changes, so that cached results are not reused.
FEATURES_VERSION = 8


@dataclass(frozen=True)
class Extraction:
    """The outcome for one file: the features of its windows, or the reason it could not be read.

    ``cached`` says whether the features came from the cache. ``copies`` holds, when asked
    for, the first window of each augmented copy (:mod:`bgmfit.features.augment`), one per
    row; ``copies_computed`` says whether they had to be made now.
    """

    path: str
    features: TrackWindows | None
    error: str | None
    cached: bool
    copies: TrackWindows | None = None
    copies_computed: bool = False


@cache
def params_digest(params: FeaturesParams) -> str:
    """Hash of what changes a track's features (not how it is run, the cache folder or augmentation)."""
    relevant = params.model_dump(exclude={"workers", "executor", "cache_dir", "augment"})
    blob = json.dumps({"version": FEATURES_VERSION, **relevant}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


@cache
def augment_digest(params: FeaturesParams) -> str:
    """Hash of everything that changes a track's augmented copies."""
    blob = json.dumps({"features": params_digest(params), **params.augment.model_dump()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cache_key(content: bytes, digest: str) -> str:
    """Content hash of a file's bytes, combined with the params digest."""
    return f"{hashlib.sha256(content).hexdigest()[:32]}-{digest}"


def _read_cached(cache_file: Path) -> TrackWindows | None:
    if not cache_file.is_file():
        return None
    try:
        with np.load(cache_file) as stored:
            return TrackWindows(
                stored["fused"], stored["mfcc_frames"], stored["offsets"], float(stored["duration"])
            )
    except (OSError, ValueError, KeyError):
        return None  # a torn cache entry is recomputed and overwritten


def _write_cached(cache_file: Path, windows: TrackWindows) -> None:
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    partial = cache_file.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(
        partial,
        fused=windows.fused,
        mfcc_frames=windows.mfcc_frames,
        offsets=windows.offsets,
        duration=np.float64(windows.duration),
    )
    partial.replace(cache_file)  # atomic, so a killed run never leaves half a cache entry


def extract_file(path: str, params: FeaturesParams, augment: bool = False) -> Extraction:
    """Features of every window of one audio file, read from the cache when its content was seen before.

    With ``augment``, also the first window of each of ``params.augment.copies`` augmented
    copies, cached apart (a change of the augmentation leaves the originals cached). The file
    is read once: the same bytes give the cache keys and, on a miss, the audio.
    """
    try:
        content = Path(path).read_bytes()
    except OSError as exc:
        return Extraction(path, None, f"cannot read file ({exc.strerror})", False)
    key = cache_key(content, params_digest(params))
    cache_file = Path(params.cache_dir) / key[:2] / f"{key}.npz"
    copies_file = None
    if augment and params.augment.copies > 0:
        copies_key = cache_key(content, augment_digest(params))
        copies_file = Path(params.cache_dir) / copies_key[:2] / f"{copies_key}.copies.npz"
    features = _read_cached(cache_file)
    copies = _read_cached(copies_file) if copies_file else None
    cached, copies_computed = features is not None, copies_file is not None and copies is None
    if not cached or copies_computed:
        try:
            y = load_audio(content, params.sample_rate, name=path)
        except AudioDecodeError as exc:
            return Extraction(path, None, exc.reason, False)
        if features is None:
            features = analyse_windows(y, params)
            _write_cached(cache_file, features)
        if copies_file is not None and copies is None:
            versions = augmented_copies(y, params.sample_rate, params.augment, key)
            first = [
                analyse(v[: int(round(params.clip_seconds * params.sample_rate))], params) for v in versions
            ]
            copies = TrackWindows(
                np.stack([f.fused for f in first]),
                np.stack([f.mfcc_frames for f in first]),
                np.zeros(len(first), np.float32),
                features.duration,
            )
            _write_cached(copies_file, copies)
    return Extraction(path, features, None, cached, copies, copies_computed)


def _init_worker() -> None:
    # One single-threaded process per core: BLAS threads only spin here.
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


def _extract_job(job: tuple[str, FeaturesParams, bool]) -> Extraction:
    return extract_file(*job)


def extract_many(
    paths: list[str],
    params: FeaturesParams,
    workers: int,
    desc: str = "features",
    augment: list[bool] | None = None,
) -> Iterator[Extraction]:
    """Extract every file, in input order, with a progress bar on stderr.

    ``params.executor`` says where: ``local`` in ``workers`` processes of this machine,
    ``ray`` as a Ray Data job (:func:`_extract_on_ray`). Either way each file goes through
    :func:`extract_file`, so the cache, the results and the errors are the same.

    Parameters
    ----------
    paths:
        Audio files.
    params:
        The ``features`` params.
    workers:
        Local processes to use; 1 runs in this process. Ray uses the CPUs of its cluster.
    augment:
        Per path, whether to make its augmented copies too (the training tracks); none by default.
    """
    jobs = [(p, params, a) for p, a in zip(paths, augment or [False] * len(paths), strict=True)]
    bar = tqdm(total=len(jobs), desc=desc, unit="track", file=sys.stderr, disable=None)
    if params.executor == "ray":
        results = _extract_on_ray(jobs)
    elif workers <= 1:
        _init_worker()
        results = map(_extract_job, jobs)
    else:
        pool = ProcessPoolExecutor(max_workers=workers, initializer=_init_worker)
        results = pool.map(_extract_job, jobs, chunksize=8)
    try:
        for result in results:
            yield result
            bar.update()
    finally:
        if params.executor == "local" and workers > 1:
            pool.shutdown(cancel_futures=True)
        bar.close()


def _ray_row(row: dict, params: FeaturesParams) -> dict:
    _init_worker()
    return {"extraction": extract_file(row["path"], params, row["augment"])}


def _extract_on_ray(jobs: list[tuple[str, FeaturesParams, bool]]) -> Iterator[Extraction]:
    """:func:`extract_file` over ``jobs`` as a Ray Data ``map``, one CPU per file, in order.

    Connects to the cluster that ``ray.init`` finds (``RAY_ADDRESS``, or a ``ray start``
    on this machine) or starts a local Ray instance, which it stops when done. The files and
    ``features.cache_dir`` are sent as absolute paths: on a cluster, each node must see them
    at the same place (shared storage).
    """
    try:
        import ray
        import ray.data
    except ImportError:
        raise BgmfitError(
            "features.executor is 'ray' but Ray is not installed; pip install 'bgmfit[ray]'"
        ) from None
    if not jobs:
        return
    params = jobs[0][1]
    params = params.model_copy(update={"cache_dir": str(Path(params.cache_dir).resolve())})
    started = not ray.is_initialized()
    if started:
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True
        context.enable_progress_bars = False  # ours counts tracks, as the local executor's does
        rows = [{"path": str(Path(p).resolve()), "augment": a} for p, _, a in jobs]
        dataset = ray.data.from_items(rows).map(partial(_ray_row, params=params), num_cpus=1)
        for (path, _, _), row in zip(jobs, dataset.iter_rows(), strict=True):
            yield replace(row["extraction"], path=path)
    finally:
        if started:
            ray.shutdown()
