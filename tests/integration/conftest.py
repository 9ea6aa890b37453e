"""Scratch projects: a synthetic feature store (training and registry tests), and a git + DVC
repository of the real pipeline on the tiny corpus (DVC and retraining tests)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.integration.helpers import TINY_PIPELINE, run, write_params, write_synthetic_store
from tests.signals import REPO


@pytest.fixture
def project(tmp_path: Path, monkeypatch, rng) -> Path:
    """A scratch folder holding a synthetic feature store and its own MLflow SQLite store, as cwd."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    write_synthetic_store(tmp_path / "data/features", rng)
    return tmp_path


@pytest.fixture
def dvc_project(tmp_path: Path) -> Path:
    """A git + DVC repository with the real pipeline, scripts and DVC config on the tiny corpus."""
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for folder in ("src", "scripts", "corpus", "library"):
        shutil.copytree(REPO / folder, tmp_path / folder, ignore=ignore)
    for name in ("dvc.yaml", "bentofile.yaml", "constraints.txt", ".gitignore"):
        shutil.copy(REPO / name, tmp_path / name)
    write_params(tmp_path, **TINY_PIPELINE)
    run(tmp_path, "git", "init", "-q")
    # `dvc exp run` commits experiments; give the scratch repository its own identity.
    run(tmp_path, "git", "config", "user.name", "bgmfit tests")
    run(tmp_path, "git", "config", "user.email", "tests@bgmfit.invalid")
    run(tmp_path, "dvc", "init", "-q")
    shutil.copy(REPO / ".dvc/config", tmp_path / ".dvc/config")  # the default local remote
    return tmp_path
