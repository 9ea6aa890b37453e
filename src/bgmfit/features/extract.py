"""Extract features for many tracks: in parallel, cached by content hash."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from tqdm import tqdm

from bgmfit.audio import load_audio
from bgmfit.config import FeaturesParams
from bgmfit.errors import AudioDecodeError
from bgmfit.features.windows import TrackWindows, analyse_windows

#: Bump when a feature's definition changes, so that cached results are not reused.
FEATURES_VERSION = 8


@dataclass(frozen=True)
class Extraction:
    """The outcome for one file: the features of its windows, or the reason it could not be read."""

    path: str
    features: TrackWindows | None
    error: str | None
    cached: bool


@cache
def params_digest(params: FeaturesParams) -> str:
    """Hash of everything that changes a track's features (not workers or the cache folder)."""
    relevant = params.model_dump(exclude={"workers", "cache_dir"})
    blob = json.dumps({"version": FEATURES_VERSION, **relevant}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def cache_key(content: bytes, digest: str) -> str:
    """Content hash of a file's bytes, combined with the params digest."""
    return f"{hashlib.sha256(content).hexdigest()[:32]}-{digest}"


def extract_file(path: str, params: FeaturesParams) -> Extraction:
    """Features of every window of one audio file, read from the cache when its content was seen before.

    The file is read once: the same bytes give the cache key and, on a miss, the audio.
    """
    try:
        content = Path(path).read_bytes()
    except OSError as exc:
        return Extraction(path, None, f"cannot read file ({exc.strerror})", False)
    key = cache_key(content, params_digest(params))
    cache_file = Path(params.cache_dir) / key[:2] / f"{key}.npz"
    if cache_file.is_file():
        try:
            with np.load(cache_file) as stored:
                windows = TrackWindows(
                    stored["fused"], stored["mfcc_frames"], stored["offsets"], float(stored["duration"])
                )
                return Extraction(path, windows, None, True)
        except (OSError, ValueError, KeyError):
            pass  # a torn cache entry is recomputed below and overwritten
    try:
        y = load_audio(content, params.sample_rate, name=path)
    except AudioDecodeError as exc:
        return Extraction(path, None, exc.reason, False)
    features = analyse_windows(y, params)
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    partial = cache_file.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(
        partial,
        fused=features.fused,
        mfcc_frames=features.mfcc_frames,
        offsets=features.offsets,
        duration=np.float64(features.duration),
    )
    partial.replace(cache_file)  # atomic, so a killed run never leaves half a cache entry
    return Extraction(path, features, None, False)


def _init_worker() -> None:
    # One single-threaded process per core: BLAS threads only spin here.
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


def _extract_job(job: tuple[str, FeaturesParams]) -> Extraction:
    return extract_file(*job)


def extract_many(
    paths: list[str], params: FeaturesParams, workers: int, desc: str = "features"
) -> Iterator[Extraction]:
    """Extract every file, in input order, with a progress bar on stderr.

    Parameters
    ----------
    paths:
        Audio files.
    params:
        The ``features`` params.
    workers:
        Processes to use; 1 runs in this process.
    """
    jobs = [(p, params) for p in paths]
    bar = tqdm(total=len(jobs), desc=desc, unit="track", file=sys.stderr, disable=None)
    if workers <= 1:
        _init_worker()
        for job in jobs:
            yield _extract_job(job)
            bar.update()
    else:
        with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker) as pool:
            for result in pool.map(_extract_job, jobs, chunksize=8):
                yield result
                bar.update()
    bar.close()
