"""Run the real CLI in a scratch project folder with its own params.yaml."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import soundfile as sf
import yaml

from bgmfit.data.manifest import ManifestRow, write_manifest
from bgmfit.features import tonality
from bgmfit.features.fusion import NormStats
from tests.signals import REPO, SR, harmonic_tone, sine

TINY_FETCH = {"styles": ["chorale", "madrigal", "reel", "jig"], "works_per_style": 3, "clip_seconds": 4.0}
# Enough works for two per style in every split, so both networks can train and be evaluated.
TINY_PIPELINE = {
    "fetch": TINY_FETCH | {"works_per_style": 6, "val_fraction": 0.34, "test_fraction": 0.34},
    "train_match": {"max_epochs": 2, "min_epochs": 1, "batch_size": 16, "accelerator": "cpu"},
    "train_triplet": {
        "max_epochs": 2,
        "min_epochs": 1,
        "batches_per_epoch": 3,
        "styles_per_batch": 4,
        "tracks_per_style": 2,
        "accelerator": "cpu",
    },
    "evaluate": {"timeline_episodes": 2, "timeline_scenes": 3},
    # A two-epoch model must still become champion, so that index, package and serving run.
    "register": {"match_threshold": 0.0, "triplet_threshold": 0.0, "invariance_threshold": 0.0},
}

# Every stage of dvc.yaml, in order.
STAGES = ("fetch", "features", "train_match", "train_triplet", "evaluate", "register", "index", "package")


def write_params(
    folder: Path, fetch: dict | None = None, features: dict | None = None, **sections: dict
) -> Path:
    """Copy the repository's params.yaml into ``folder`` with some keys overridden."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["fetch"].update(fetch or {})
    params["features"].update({"cache_dir": str(folder / ".cache")} | (features or {}))
    for section, overrides in sections.items():
        params[section].update(overrides)
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def environment() -> dict[str, str]:
    """This interpreter's scripts first on PATH (so ``bgmfit`` and ``dvc`` resolve), one BLAS thread.

    ``BENTOML_HOME`` comes from ``tests/conftest.py``: the session's own BentoML store.
    """
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["OMP_NUM_THREADS"] = "1"
    # BentoML deletes and recreates its task database ($BENTOML_HOME/task_result.db) whenever
    # a server starts, so two servers of one home would break each other's tasks.
    env["BENTOML_RESULT_STORE"] = str(Path(tempfile.mkdtemp(prefix="bentoml-tasks-")) / "task_result.db")
    return env


@contextmanager
def bentoml_serve(
    project: Path, serving: Path, log: Path, env: dict[str, str] | None = None
) -> Iterator[tuple[str, int]]:
    """A real `bentoml serve` of ``project`` on 127.0.0.1, configured by ``serving`` (a serving.json in
    its ``models/``), with ``env`` added to its environment, until the block ends: its URL and process id."""
    from tests.system import free_port, local_server

    port = free_port()
    command = ["bentoml", "serve", "bgmfit.serving.service:BGMFit", "--host", "127.0.0.1", f"--port={port}"]
    base = f"http://127.0.0.1:{port}"
    env = environment() | {"BGMFIT_SERVING": str(serving)} | (env or {})
    with local_server(
        [sys.executable, "-m", *command], f"{base}/readyz", log, cwd=project, env=env
    ) as server:
        yield base, server.pid


def run(folder: Path, *command: str) -> str:
    """Run ``command`` in ``folder`` and return its output; fail the test with it on a non-zero exit."""
    result = subprocess.run(
        command, cwd=folder, env=environment(), capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def bgmfit(folder: Path, *args: str) -> subprocess.CompletedProcess:
    """Run ``bgmfit ARGS`` in ``folder``; never raises on a non-zero exit."""
    return subprocess.run(
        [sys.executable, "-m", "bgmfit", *args],
        cwd=folder,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=600,
    )


STYLES, WORKS = ("calm", "lively", "dark"), 6


def write_synthetic_store(folder: Path, rng: np.random.Generator, copies: bool = False) -> Path:
    """Fused matrices and MFCC frames where each style has its own mean, as the features stage writes them.

    With ``copies``, each training track also has one augmented copy: itself plus a little noise.
    """
    rows, fused, frames = [], [], []
    for s, style in enumerate(STYLES):
        for w in range(WORKS):
            split = "train" if w < 4 else "val" if w == 4 else "test"
            for role in ("foreground", "bgm", "music"):
                rows.append(
                    ManifestRow(
                        f"{style}-{w}-{role}",
                        "x.flac",
                        role,
                        style,
                        f"{style}-{w}",
                        split,
                        10.0,
                        22050,
                        "",
                        "synthetic",
                        "",
                    )
                )
                fused.append(rng.normal(s, 1.0, size=(10, 101)))
                frames.append(rng.normal(s, 1.0, size=(32, 20)))
    folder.mkdir(parents=True)
    np.save(folder / "fused.npy", np.array(fused, dtype=np.float32))
    np.save(folder / "mfcc_frames.npy", np.array(frames, dtype=np.float32))
    # One window per track, as a 10 s clip is.
    np.save(folder / "window_track.npy", np.arange(len(rows), dtype=np.int32))
    np.save(folder / "window_offset.npy", np.zeros(len(rows), dtype=np.float32))
    np.save(folder / "duration.npy", np.full(len(rows), 10.0, dtype=np.float32))
    owners = np.array([i for i, r in enumerate(rows) if copies and r.split == "train"], dtype=np.int32)
    for name, array in (("copies_fused.npy", fused), ("copies_mfcc_frames.npy", frames)):
        originals = np.array(array, dtype=np.float32)[owners]
        np.save(folder / name, originals + rng.normal(0, 0.1, originals.shape).astype(np.float32))
    np.save(folder / "copies_track.npy", owners)
    write_manifest(rows, folder / "tracks.csv")
    # Column names as the features stage writes them, for those `train_match.agreement` names.
    keys = [f"key_corr_{k}" for k in tonality.KEYS]
    tempi = ["tempo_bpm_per_100", "tempo_folded_bpm_per_100"]
    columns = [f"c{i}" for i in range(101 - len(keys) - len(tempi))] + keys + tempi
    zeros, ones = np.zeros(101, np.float32), np.ones(101, np.float32)
    stats = NormStats([("synthetic", 0, 101)], columns, zeros, ones, zeros[:20], ones[:20])
    stats.save(folder / "norm_stats.json")
    return folder


def write_user_corpus(folder: Path) -> Path:
    """``folder/corpus``: six works of a foreground tone and its BGM, in two styles, with a manifest."""
    audio = folder / "corpus"
    audio.mkdir(exist_ok=True)
    rows = [["track_id", "path", "role", "style", "work_id", "split", "label"]]
    for i in range(6):
        style = "calm" if i % 2 else "lively"
        sf.write(audio / f"lead{i}.wav", harmonic_tone(200.0 + 20 * i, 3.0), SR)
        sf.write(audio / f"bed{i}.flac", sine(100.0 + 10 * i, 3.0, 0.3), SR)
        rows += [
            [f"lead{i}", f"lead{i}.wav", "foreground", style, f"w{i}", "", "1.0"],
            [f"bed{i}", f"bed{i}.flac", "bgm", style, f"w{i}", "", ""],
        ]
    with (audio / "manifest.csv").open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    return audio
