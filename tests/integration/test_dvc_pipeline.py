"""The real `dvc repro` on a tiny corpus: it runs what changed and nothing else."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.integration.helpers import TINY_FETCH, environment, write_params
from tests.signals import REPO

pytestmark = pytest.mark.slow


def _run(folder: Path, *command: str) -> str:
    result = subprocess.run(
        command, cwd=folder, env=environment(), capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


@pytest.fixture
def project(tmp_path: Path) -> Path:
    shutil.copytree(
        REPO / "src", tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    write_params(tmp_path, fetch=TINY_FETCH)
    _run(tmp_path, "git", "init", "-q")
    _run(tmp_path, "dvc", "init", "-q")
    return tmp_path


def test_repro_runs_each_stage_once_and_then_only_what_changed(project: Path):
    first = _run(project, "dvc", "repro")
    assert "Running stage 'fetch'" in first and "Running stage 'features'" in first
    assert (project / "data/features/fused.npy").is_file()

    second = _run(project, "dvc", "repro")
    assert "Running stage" not in second

    params = yaml.safe_load((project / "params.yaml").read_text())
    params["features"]["n_segments"] = 8
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    third = _run(project, "dvc", "repro")
    assert "Running stage 'features'" in third and "Running stage 'fetch'" not in third

    shown = _run(project, "dvc", "metrics", "show")
    assert "metrics/fetch.json" in shown and "metrics/features.json" in shown
