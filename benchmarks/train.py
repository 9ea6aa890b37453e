"""Training throughput of both networks, and what MLflow logging costs.

Each configuration trains for a fixed number of batches on synthetic arrays of
the real shapes (throughput does not depend on the values), once without a
logger and once with the MLflow logger the training stages use (epoch-level
metrics into a fresh SQLite store). Figures are the median of --repeats runs
after a warm-up; the MLflow overhead is a ratio taken in the same run.

    .venv/bin/python -m benchmarks.train --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import MLFlowLogger

from benchmarks.machine import describe
from bgmfit.config import FeaturesParams, TrainMatchParams, TrainTripletParams, load_params
from bgmfit.data.datamodules import PairDataModule, TripletDataModule
from bgmfit.data.manifest import ManifestRow
from bgmfit.data.store import FeatureStore
from bgmfit.features.fusion import dimensions
from bgmfit.models.match_module import MatchModule
from bgmfit.models.triplet_module import TripletModule

STYLES, WORKS = 8, 40


def synthetic_store(features: FeaturesParams) -> FeatureStore:
    """A store shaped like the demo corpus: 8 styles x 40 works, foreground + BGM + music each."""
    rng = np.random.default_rng(0)
    columns = [c for d in dimensions(features) for c in d.columns]
    tracks = []
    for s in range(STYLES):
        for w in range(WORKS):
            split = "train" if w < 30 else "val" if w < 35 else "test"
            for role in ("foreground", "bgm", "music"):
                tracks.append(
                    ManifestRow(
                        f"s{s}w{w}{role}",
                        "",
                        role,
                        f"s{s}",
                        f"s{s}w{w}",
                        split,
                        10.0,
                        features.sample_rate,
                        "",
                        "",
                        "",
                    )
                )
    n = len(tracks)
    fused = rng.standard_normal((n, features.n_segments, len(columns))).astype(np.float32)
    frames = rng.standard_normal((n, features.frames_n, features.frames_n_mfcc)).astype(np.float32)
    # One window per track (10 s clips) and no augmented copies.
    return FeatureStore(
        fused=fused,
        mfcc_frames=frames,
        tracks=tracks,
        columns=columns,
        window_fused=fused,
        window_frames=frames,
        window_track=np.arange(n),
        window_offset=np.zeros(n, np.float32),
        duration=np.full(n, 10.0, np.float32),
        copies_fused=fused[:0],
        copies_frames=frames[:0],
        copies_track=np.zeros(0, np.int64),
    )


def fit_seconds(make_module, datamodule, batches: int, accelerator: str, logger) -> float:
    """Wall seconds of ``batches`` training steps (over as many epochs as that takes; no validation)."""
    trainer = L.Trainer(
        max_steps=batches,
        max_epochs=-1,
        limit_val_batches=0,
        accelerator=accelerator,
        devices=1,
        logger=logger,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    start = time.perf_counter()
    trainer.fit(make_module(), datamodule=datamodule)
    if accelerator == "gpu":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def make_logger(label: str, network: str, scratch: str):
    """``False`` for no logger, else the MLflow logger the stages use, on a scratch SQLite store."""
    if label == "no logger":
        return False
    return MLFlowLogger(experiment_name=f"bench-{network}", tracking_uri=f"sqlite:///{scratch}/mlflow.db")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--batches", type=int, default=60, help="training steps per run (default: %(default)s)"
    )
    parser.add_argument(
        "--repeats", type=int, default=5, help="runs per configuration (default: %(default)s)"
    )
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args()
    features = load_params("features", FeaturesParams, args.params)
    match = load_params("train_match", TrainMatchParams, args.params)
    triplet = load_params("train_triplet", TrainTripletParams, args.params)
    store = synthetic_store(features)
    networks = {
        "match": (
            lambda: MatchModule.from_params(match, store.columns),
            PairDataModule(store, match.batch_size, match.seed),
            match.batch_size,
        ),
        "triplet": (
            lambda: TripletModule.from_params(triplet, store.mfcc_frames.shape[1:]),
            TripletDataModule(
                store,
                "mfcc_frames",
                triplet.styles_per_batch,
                triplet.tracks_per_style,
                args.batches,
                triplet.seed,
            ),
            triplet.styles_per_batch * triplet.tracks_per_style,
        ),
    }
    accelerators = ["cpu"] + (["gpu"] if torch.cuda.is_available() else [])
    print(f"machine: {describe()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    if torch.cuda.is_available():
        print(f"gpu: {torch.cuda.get_device_name(0)}")
    print(f"{args.batches} steps per run, median of {args.repeats} runs after a warm-up")
    with tempfile.TemporaryDirectory() as scratch:
        for accelerator in accelerators:
            for name, (make_module, datamodule, batch_size) in networks.items():
                timings = {}
                for label in ("no logger", "mlflow"):
                    fit_seconds(make_module, datamodule, 5, accelerator, make_logger(label, name, scratch))
                    runs = [
                        fit_seconds(
                            make_module,
                            datamodule,
                            args.batches,
                            accelerator,
                            make_logger(label, name, scratch),
                        )
                        for _ in range(args.repeats)
                    ]
                    timings[label] = statistics.median(runs)
                    rate = args.batches * batch_size / timings[label]
                    listing = ", ".join(f"{r:.2f}" for r in runs)
                    print(
                        f"{accelerator} {name:<8} {label:<10} {rate:8.0f} samples/s "
                        f"({args.batches / timings[label]:.1f} steps/s; runs {listing} s)"
                    )
                overhead = timings["mlflow"] / timings["no logger"] - 1
                print(f"{accelerator} {name:<8} MLflow logging overhead: {overhead:+.1%}")


if __name__ == "__main__":
    main()
