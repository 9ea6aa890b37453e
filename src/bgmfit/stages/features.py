"""``features`` stage: fused matrices (method A) and MFCC frames (method B) for every track.

Every file is analysed in windows (``features.window_hop_seconds``, ``max_windows``; see
:mod:`bgmfit.features.windows`). Outputs under ``data/features/``:

- ``fused.npy``: (windows, n_segments, columns) float32, normalised;
- ``mfcc_frames.npy``: (windows, frames_n, frames_n_mfcc) float32, normalised;
- ``window_track.npy``, ``window_offset.npy``: each window's track (its row in ``tracks.csv``)
  and start, seconds; ``duration.npy``: each track's length, seconds;
- ``copies_fused.npy``, ``copies_mfcc_frames.npy``, ``copies_track.npy``: the first window of
  each augmented copy of a training track (``features.augment``), and whose copy it is;
- ``tracks.csv``: the manifest rows, in track order;
- ``norm_stats.json``: the training-split statistics, for serving new audio.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from bgmfit.config import FeaturesParams, FetchParams, load_params
from bgmfit.data.manifest import read_manifest, write_manifest
from bgmfit.errors import BgmfitError
from bgmfit.features.extract import extract_many
from bgmfit.features.fusion import NormStats
from bgmfit.files import FEATURES, METRICS, RAW, fresh_dir, write_json
from bgmfit.stages import worker_count


def main(params_path: Path) -> None:
    """``bgmfit features``: reads ``params.yaml: features`` and ``fetch.on_bad_input``."""
    on_bad_input = load_params("fetch", FetchParams, params_path).on_bad_input
    run(load_params("features", FeaturesParams, params_path), on_bad_input)


def run(
    params: FeaturesParams,
    on_bad_input: str,
    raw_dir: Path = RAW,
    out_dir: Path = FEATURES,
    metrics_path: Path = METRICS / "features.json",
) -> dict:
    """Run the stage; return the summary also written to ``metrics_path``.

    Parameters
    ----------
    on_bad_input:
        ``fetch.on_bad_input``: ``fail`` stops on an undecodable file after
        listing them all; ``skip`` leaves them out and lists them in the metrics.
    """
    rows = read_manifest(raw_dir / "manifest.csv")
    started = time.perf_counter()
    workers = worker_count(params.workers)
    augment = [r.split == "train" for r in rows]
    results = list(extract_many([str(raw_dir / r.path) for r in rows], params, workers, augment=augment))
    failed = [(row, result.error) for row, result in zip(rows, results, strict=True) if result.error]
    if failed:
        listing = "\n".join(f"{raw_dir / row.path}: {error}" for row, error in failed[:50])
        if on_bad_input == "fail":
            raise BgmfitError(
                f"{len(failed)} file(s) could not be decoded "
                f"(set fetch.on_bad_input: skip to leave them out):\n{listing}"
            )
        print(f"features: skipping {len(failed)} undecodable file(s):\n{listing}", file=sys.stderr)
    kept_results = [(row, result) for row, result in zip(rows, results, strict=True) if result.features]
    kept = [(row, result.features) for row, result in kept_results]
    if not kept:
        raise BgmfitError("features: no track could be decoded")
    fused = np.concatenate([f.fused for _, f in kept])
    frames = np.concatenate([f.mfcc_frames for _, f in kept])
    track = np.concatenate([np.full(len(f.offsets), i, dtype=np.int32) for i, (_, f) in enumerate(kept)])
    train = np.array([kept[i][0].split == "train" for i in track])
    if not train.any():
        raise BgmfitError("features: no track is in the train split; normalisation needs training data")
    stats = NormStats.fit(params, fused[train], frames[train])

    fresh_dir(out_dir)
    np.save(out_dir / "fused.npy", stats.normalise_fused(fused))
    np.save(out_dir / "mfcc_frames.npy", stats.normalise_frames(frames))
    np.save(out_dir / "window_track.npy", track)
    np.save(out_dir / "window_offset.npy", np.concatenate([f.offsets for _, f in kept]).astype(np.float32))
    np.save(out_dir / "duration.npy", np.array([f.duration for _, f in kept], dtype=np.float32))
    # Augmented copies of training tracks (training only): their first windows, and whose copies they are.
    copies = [(i, r.copies) for i, (_, r) in enumerate(kept_results) if r.copies is not None]
    empty = (0, *fused.shape[1:]), (0, *frames.shape[1:])
    copies_fused = np.concatenate([c.fused for _, c in copies]) if copies else np.zeros(empty[0], np.float32)
    copies_frames = (
        np.concatenate([c.mfcc_frames for _, c in copies]) if copies else np.zeros(empty[1], np.float32)
    )
    np.save(out_dir / "copies_fused.npy", stats.normalise_fused(copies_fused))
    np.save(out_dir / "copies_mfcc_frames.npy", stats.normalise_frames(copies_frames))
    np.save(
        out_dir / "copies_track.npy",
        np.concatenate([np.full(len(c.fused), i, np.int32) for i, c in copies])
        if copies
        else np.zeros(0, np.int32),
    )
    write_manifest([row for row, _ in kept], out_dir / "tracks.csv")
    stats.save(out_dir / "norm_stats.json")
    cached = sum(1 for r in results if r.cached)
    summary = {
        "tracks": len(kept),
        "windows": int(track.size),
        "augmented_copies": int(copies_fused.shape[0]),
        "copies_computed": sum(1 for r in results if r.copies_computed),
        "computed": len(results) - cached - len(failed),
        "cached": cached,
        "skipped_files": len(failed),
        "skipped": [{"path": str(raw_dir / row.path), "reason": error} for row, error in failed],
        "fused_shape": list(fused.shape[1:]),
        "mfcc_frames_shape": list(frames.shape[1:]),
        "dimensions": {name: end - start for name, start, end in stats.dimensions},
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_json(metrics_path, summary)
    print(
        f"features: {summary['tracks']} tracks ({summary['computed']} computed, {cached} from cache, "
        f"{len(failed)} skipped), {summary['augmented_copies']} augmented copies of training tracks "
        f"({summary['copies_computed']} tracks' made now) in {summary['seconds']} s",
        file=sys.stderr,
    )
    return summary
