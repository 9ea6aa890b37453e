"""Shared fixtures: a seeded generator, tiny params, and one tiny project built by every stage."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

from bgmfit.config import FeaturesParams, FetchParams, load_params
from tests.integration.helpers import STAGES, TINY_PIPELINE, bgmfit, write_params
from tests.signals import REPO

# The tests' BentoML store is their own, never the user's ~/bentoml. Set before anything
# imports bentoml, which reads it once.
os.environ.setdefault("BENTOML_HOME", tempfile.mkdtemp(prefix="bgmfit-tests-bentoml-"))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def features_params() -> FeaturesParams:
    """The repository's features params, single-process so tests stay predictable."""
    params = load_params("features", FeaturesParams, REPO / "params.yaml")
    return params.model_copy(update=dict(workers=1))


@pytest.fixture
def tiny_fetch_params(tmp_path: Path) -> FetchParams:
    """A demo corpus small enough for a test: 4 styles, 3 works each, 4-second clips."""
    params = load_params("fetch", FetchParams, REPO / "params.yaml")
    return params.model_copy(
        update=dict(
            styles=("chorale", "madrigal", "reel", "jig"), works_per_style=3, clip_seconds=4.0, workers=1
        )
    )


@pytest.fixture(scope="session")
def served_project(tmp_path_factory) -> Path:
    """Run every stage of the real CLI on the tiny corpus; the BentoML store is the session's."""
    folder = tmp_path_factory.mktemp("served")
    for name in ("bentofile.yaml", "constraints.txt"):
        shutil.copy(REPO / name, folder / name)
    shutil.copytree(REPO / "src", folder / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    # Small limits, so that the oversized and over-long uploads in the tests stay small.
    write_params(folder, **TINY_PIPELINE, package={"max_upload_mb": 1.0, "max_audio_seconds": 30.0})
    for stage in STAGES:
        result = bgmfit(folder, stage)
        assert result.returncode == 0, f"bgmfit {stage} failed:\n{result.stderr[-3000:]}"
    return folder


#: Where the browser checks (MLflow UI, the editors' page) keep their screenshots.
SCREENSHOTS = REPO / "build/ui-check"
# Without the background-networking flags Chromium keeps calling Google's hosts, which this
# machine's closed network refuses.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium (installed on first use where this user may) driven by Playwright, headless."""
    from tests.system import debian_program

    chromium = debian_program("/usr/bin/chromium", "chromium")
    if chromium is None:
        pytest.skip("Chromium is not installed and cannot be installed here (needs root and apt-get)")
    from playwright.sync_api import sync_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        yield browser
        browser.close()
