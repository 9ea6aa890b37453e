"""The real `dvc repro` on a tiny corpus: it runs what changed and nothing else."""

from __future__ import annotations

import os
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


def test_a_dvc_repro_killed_with_sigkill_inside_features_takes_its_stage_along_and_reruns_only_it(
    dvc_project: Path,
):
    """kill -9 of `dvc repro` alone (not its group) while `features` runs: the stage process and its
    workers end too (Linux's parent-death signal), nothing half-written counts as done, and the rerun
    repeats `features` but not `fetch`."""
    import signal
    import subprocess
    import time

    import psutil

    from tests.integration.helpers import TINY_PIPELINE, environment, write_params

    def stage_processes() -> list[psutil.Process]:
        found = []
        for child in psutil.Process(dvc.pid).children(recursive=True):
            try:
                if "features" in child.cmdline() and any("bgmfit" in part for part in child.cmdline()):
                    found.append(child)
            except psutil.Error:
                continue
        return found

    write_params(dvc_project, features={"workers": 2}, **TINY_PIPELINE)  # a pool, whatever the cores
    run(dvc_project, "dvc", "repro", "fetch")
    # Uncached, so that the stage is still extracting when it is killed.
    dvc = subprocess.Popen(
        ["dvc", "repro", "features"],
        cwd=dvc_project,
        env=environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    # Until its pool's workers are there: the stage's own start (imports) takes seconds on a slow machine.
    deadline = time.monotonic() + 300
    while len(stage_processes()) < 2 and time.monotonic() < deadline and dvc.poll() is None:
        time.sleep(0.1)
    time.sleep(1)  # inside their extraction
    stage = stage_processes()
    assert len(stage) > 1, f"the features stage and its workers never started: {stage}"
    dvc.send_signal(signal.SIGKILL)
    dvc.wait(30)
    gone, alive = psutil.wait_procs(stage, timeout=60)
    assert not alive, f"the features stage goes on, orphaned: {[p.pid for p in alive]} of {len(stage)} alive"
    try:
        os.killpg(dvc.pid, signal.SIGKILL)  # any worker left of the group: this test started it
    except ProcessLookupError:
        pass

    status = run(dvc_project, "dvc", "status", "features")
    assert "features" in status and "changed" in status, status
    again = run(dvc_project, "dvc", "repro", "features")
    assert "Running stage 'features'" in again and "Running stage 'fetch'" not in again, again
    assert (dvc_project / "data/features/fused.npy").is_file()
