"""A tiny trained, registered, indexed and packaged project that the service tests share."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.integration.helpers import TINY_PIPELINE, bgmfit, write_params
from tests.signals import REPO

PIPELINE = ("fetch", "features", "train_match", "train_triplet", "evaluate", "register", "index", "package")


@pytest.fixture(scope="session")
def served_project(tmp_path_factory) -> Path:
    """Run every stage of the real CLI on the tiny corpus; the BentoML store is the session's."""
    folder = tmp_path_factory.mktemp("served")
    for name in ("bentofile.yaml", "constraints.txt"):
        shutil.copy(REPO / name, folder / name)
    shutil.copytree(REPO / "src", folder / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    # Small limits, so that the oversized and over-long uploads in the tests stay small.
    write_params(folder, **TINY_PIPELINE, package={"max_upload_mb": 1.0, "max_audio_seconds": 30.0})
    for stage in PIPELINE:
        result = bgmfit(folder, stage)
        assert result.returncode == 0, f"bgmfit {stage} failed:\n{result.stderr[-3000:]}"
    return folder


@pytest.fixture(scope="session")
def service_class(served_project: Path):
    """The BentoML service class, configured by the tiny project's ``models/serving.json``."""
    os.environ["BGMFIT_SERVING"] = str(served_project / "models/serving.json")
    from bgmfit.serving.service import BGMFit

    return BGMFit
