"""The real `dvc repro` on a tiny corpus: it runs what changed and nothing else."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.integration.helpers import TINY_PIPELINE, environment, write_params
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
    for name in ("dvc.yaml", "bentofile.yaml", "constraints.txt"):
        shutil.copy(REPO / name, tmp_path / name)
    write_params(tmp_path, **TINY_PIPELINE)
    _run(tmp_path, "git", "init", "-q")
    # `dvc exp run` commits experiments; give the scratch repository its own identity.
    _run(tmp_path, "git", "config", "user.name", "bgmfit tests")
    _run(tmp_path, "git", "config", "user.email", "tests@bgmfit.invalid")
    _run(tmp_path, "dvc", "init", "-q")
    return tmp_path


STAGES = ("fetch", "features", "train_match", "train_triplet", "evaluate", "register", "index", "package")


def test_repro_runs_each_stage_once_and_then_only_what_changed(project: Path):
    first = _run(project, "dvc", "repro")
    assert all(f"Running stage '{stage}'" in first for stage in STAGES), first
    assert (project / "data/features/fused.npy").is_file() and (project / "plots/match_roc_pr.png").is_file()

    second = _run(project, "dvc", "repro")
    assert "Running stage" not in second

    params = yaml.safe_load((project / "params.yaml").read_text())
    params["features"]["n_segments"] = 8
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    third = _run(project, "dvc", "repro")
    assert "Running stage 'features'" in third and "Running stage 'fetch'" not in third

    shown = _run(project, "dvc", "metrics", "show")
    for name in ("fetch", "features", "match", "triplet"):
        assert f"metrics/{name}.json" in shown
    assert "baseline_random" in shown


def test_an_experiment_changes_the_metrics_that_diff_shows(project: Path):
    _run(project, "dvc", "repro")
    _run(project, "git", "add", "-A")
    _run(project, "git", "commit", "-qm", "baseline")
    # The tiny test split makes rank metrics coarse enough to tie; calibration error and
    # validation loss are continuous, so a learning-rate change always shows.
    _run(project, "dvc", "exp", "run", "-S", "train_match.lr=0.01")
    diff = _run(project, "dvc", "metrics", "diff")
    assert "metrics/match.json" in diff and "ece" in diff, diff
    assert "metrics/fetch.json" not in diff and "metrics/features.json" not in diff, diff
