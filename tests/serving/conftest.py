"""The service class, configured by the session's served project (``tests/conftest.py``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def service_class(served_project: Path):
    """The BentoML service class, configured by the tiny project's ``models/serving.json``."""
    os.environ["BGMFIT_SERVING"] = str(served_project / "models/serving.json")
    from bgmfit.serving.service import BGMFit

    return BGMFit
