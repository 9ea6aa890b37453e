"""The synthetic project that the training and registry tests share."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.helpers import write_synthetic_store


@pytest.fixture
def project(tmp_path: Path, monkeypatch, rng) -> Path:
    """A scratch folder holding a synthetic feature store and its own MLflow SQLite store, as cwd."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    write_synthetic_store(tmp_path / "data/features", rng)
    return tmp_path
