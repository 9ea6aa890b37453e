"""Run the real CLI in a scratch project folder with its own params.yaml."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from tests.signals import REPO

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
}


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
    """This interpreter's scripts first on PATH (so ``bgmfit`` and ``dvc`` resolve), one BLAS thread."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["OMP_NUM_THREADS"] = "1"
    return env


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
