"""The real `dvc repro` on a tiny corpus: it runs what changed and nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest
import soundfile as sf
import yaml

from tests.integration.helpers import STAGES, run, write_user_corpus
from tests.signals import SR, sine

pytestmark = pytest.mark.slow


def test_repro_runs_each_stage_once_and_then_only_what_changed(dvc_project: Path):
    first = run(dvc_project, "dvc", "repro")
    assert all(f"Running stage '{stage}'" in first for stage in STAGES), first
    assert (dvc_project / "data/features/fused.npy").is_file()
    assert (dvc_project / "plots/match_roc_pr.png").is_file()

    second = run(dvc_project, "dvc", "repro")
    assert "Running stage" not in second

    params = yaml.safe_load((dvc_project / "params.yaml").read_text())
    params["features"]["n_segments"] = 12  # more segments: frames_n (the whole 10 s) still fits
    (dvc_project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    third = run(dvc_project, "dvc", "repro")
    assert "Running stage 'features'" in third and "Running stage 'fetch'" not in third

    shown = run(dvc_project, "dvc", "metrics", "show")
    for name in ("fetch", "features", "match", "triplet"):
        assert f"metrics/{name}.json" in shown
    assert "baseline_random" in shown


def test_an_experiment_changes_the_metrics_that_diff_shows(dvc_project: Path):
    run(dvc_project, "dvc", "repro")
    run(dvc_project, "git", "add", "-A")
    run(dvc_project, "git", "commit", "-qm", "baseline")
    # The tiny test split makes rank metrics coarse enough to tie; calibration error and
    # validation loss are continuous, so a learning-rate change always shows.
    run(dvc_project, "dvc", "exp", "run", "-S", "train_match.lr=0.01")
    diff = run(dvc_project, "dvc", "metrics", "diff")
    assert "metrics/match.json" in diff and "ece" in diff, diff
    assert "metrics/fetch.json" not in diff and "metrics/features.json" not in diff, diff


def test_a_change_in_the_users_corpus_reruns_fetch(dvc_project: Path):
    corpus = write_user_corpus(dvc_project)
    params = yaml.safe_load((dvc_project / "params.yaml").read_text())
    params["fetch"]["source"] = "dir"
    (dvc_project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert "Running stage 'fetch'" in run(dvc_project, "dvc", "repro", "fetch")
    assert "Running stage" not in run(dvc_project, "dvc", "repro", "fetch")
    sf.write(corpus / "bed0.flac", sine(330.0, 3.0, 0.3), SR)
    assert "Running stage 'fetch'" in run(dvc_project, "dvc", "repro", "fetch")
