"""Fused-feature throughput: bgmfit's shared-STFT extractor against a naive librosa one.

Both sides decode the same audio files and compute the same six dimensions plus
method B's MFCC frames. The naive side calls librosa on the waveform once per
feature, so every call computes its own STFT; bgmfit decodes with soundfile +
soxr and computes one STFT that every dimension shares.

Throughput is audio-seconds per CPU-second (1 worker) and per wall-second
(1 and 2 workers). Parallel efficiency is the 2-worker rate over twice the
1-worker rate. Each figure is the median of --repeats runs after a warm-up.

Usage (after `make run` has rendered the demo corpus):

    .venv/bin/python -m benchmarks.features --files 192 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from benchmarks.machine import describe
from bgmfit.config import FeaturesParams, load_params


def ours(path: str, params: FeaturesParams) -> float:
    """Decode + all features the bgmfit way; returns CPU seconds spent."""
    from bgmfit.audio import load_audio
    from bgmfit.features.fusion import analyse

    start = time.process_time()
    analyse(load_audio(path, params.sample_rate, max_seconds=params.clip_seconds), params)
    return time.process_time() - start


def naive(path: str, params: FeaturesParams) -> float:
    """Decode + the same features, each a separate librosa call on the waveform; returns CPU seconds."""
    import librosa

    start = time.process_time()
    sr, n_fft, hop = params.sample_rate, params.n_fft, params.hop_length
    y, _ = librosa.load(path, sr=sr, duration=params.clip_seconds)
    y = np.pad(y, (0, max(0, int(params.clip_seconds * sr) - y.size)))
    stft = {"n_fft": n_fft, "hop_length": hop}
    mfcc = librosa.feature.mfcc(y=y, sr=sr, n_mfcc=params.n_mfcc, n_mels=params.n_mels, **stft)
    per_frame = [
        mfcc,
        librosa.feature.delta(mfcc),
        librosa.feature.spectral_centroid(y=y, sr=sr, **stft),
        librosa.feature.spectral_bandwidth(y=y, sr=sr, **stft),
        librosa.feature.spectral_rolloff(y=y, sr=sr, **stft),
        librosa.feature.spectral_flatness(y=y, **stft),
        librosa.feature.spectral_contrast(y=y, sr=sr, **stft),
        librosa.feature.chroma_stft(y=y, sr=sr, **stft),
        librosa.feature.rms(y=y, frame_length=n_fft, hop_length=hop),
    ]
    onset = librosa.onset.onset_strength(y=y, sr=sr, hop_length=hop, n_fft=n_fft)
    librosa.feature.tempo(onset_envelope=onset, sr=sr, hop_length=hop)
    f0 = librosa.yin(y, fmin=60, fmax=400, sr=sr, frame_length=n_fft, hop_length=hop)
    librosa.feature.chroma_cqt(y=y, sr=sr, hop_length=4 * hop).mean(axis=1)  # the clip's key profile
    frames = librosa.feature.mfcc(y=y, sr=sr, n_mfcc=params.frames_n_mfcc, n_mels=params.n_mels, **stft)
    frames[:, : params.frames_n].T.copy()
    width = int(params.segment_seconds * sr / hop)
    for matrix in [*per_frame, onset[None], f0[None]]:
        n = min(matrix.shape[1] // width, params.n_segments) * width
        matrix[:, :n].reshape(matrix.shape[0], -1, width).mean(axis=2)
    return time.process_time() - start


def _init() -> None:
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


def _job(args: tuple[str, str, FeaturesParams]) -> float:
    kind, path, params = args
    return (ours if kind == "ours" else naive)(path, params)


def run(
    pool: ProcessPoolExecutor, kind: str, files: list[str], params: FeaturesParams
) -> tuple[float, float]:
    """One pass over ``files``; returns (wall seconds, summed CPU seconds)."""
    start = time.perf_counter()
    cpu = sum(pool.map(_job, [(kind, f, params) for f in files], chunksize=4))
    return time.perf_counter() - start, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--manifest",
        type=Path,
        default=Path("data/raw/manifest.csv"),
        help="tracks to read (default: the demo corpus, %(default)s)",
    )
    parser.add_argument("--files", type=int, default=192, help="files per run (default: %(default)s)")
    parser.add_argument(
        "--repeats", type=int, default=5, help="runs per configuration (default: %(default)s)"
    )
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args()
    if not args.manifest.is_file():
        sys.exit(f"error: {args.manifest} not found; run `make run` first to render the demo corpus")
    params = load_params("features", FeaturesParams, args.params)
    from bgmfit.data.manifest import read_manifest

    rows = read_manifest(args.manifest)
    step = max(1, len(rows) // args.files)
    files = [str(args.manifest.parent / r.path) for r in rows[::step][: args.files]]
    audio_seconds = len(files) * params.clip_seconds

    print(f"machine: {describe()}")
    print(
        f"input: {len(files)} files x {params.clip_seconds:.0f} s from {args.manifest}; "
        f"median of {args.repeats} runs after a warm-up"
    )
    results: dict[tuple[str, int], tuple[float, float]] = {}
    for workers in (1, 2):
        for kind in ("naive", "ours"):
            # A pool of its own per kind: ours builds the constant-Q filters once per process
            # (features.tonality), which would speed up the naive chroma_cqt in the same process.
            with ProcessPoolExecutor(max_workers=workers, initializer=_init) as pool:
                run(pool, kind, files[: 2 * workers], params)  # warm-up: imports, numba JIT
                walls, cpus = zip(*(run(pool, kind, files, params) for _ in range(args.repeats)), strict=True)
                results[(kind, workers)] = (statistics.median(walls), statistics.median(cpus))
                wall, cpu = results[(kind, workers)]
                print(
                    f"{kind:>5}, {workers} worker(s): {audio_seconds / cpu:7.0f} audio-s per CPU-s, "
                    f"{audio_seconds / wall:7.0f} audio-s per wall-s  "
                    f"(runs: {', '.join(f'{w:.2f}' for w in walls)} s)"
                )
    per_cpu = {k: audio_seconds / results[(k, 1)][1] for k in ("ours", "naive")}
    speedup = per_cpu["ours"] / per_cpu["naive"]
    efficiency = {k: results[(k, 1)][0] / (2 * results[(k, 2)][0]) for k in ("ours", "naive")}
    print(f"ours / naive, audio-s per CPU-s: {speedup:.2f}x")
    print(f"parallel efficiency on 2 workers: ours {efficiency['ours']:.0%}, naive {efficiency['naive']:.0%}")


if __name__ == "__main__":
    main()
