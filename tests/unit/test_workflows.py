"""The GitHub workflows are valid, and CI's retraining runs the same script as `make retrain`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from tests.signals import REPO

WORKFLOWS = sorted((REPO / ".github/workflows").glob("*.yml"))


def test_every_workflow_passes_githubs_workflow_schema():
    assert {p.name for p in WORKFLOWS} >= {"ci.yml", "retrain.yml"}
    checker = Path(sys.executable).parent / "check-jsonschema"
    result = subprocess.run(
        [str(checker), "--builtin-schema", "vendor.github-workflows", *map(str, WORKFLOWS)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_retraining_in_ci_and_make_retrain_run_one_script():
    workflow = yaml.safe_load((REPO / ".github/workflows/retrain.yml").read_text())
    triggers = workflow[True]  # PyYAML reads the key `on` as True
    assert {"workflow_dispatch", "schedule", "push"} <= set(triggers)
    assert "params.yaml" in triggers["push"]["paths"] and "dvc.yaml" in triggers["push"]["paths"]
    steps = [s.get("run", "") for s in workflow["jobs"]["retrain"]["steps"]]
    assert "make venv" in steps and "make retrain" in steps
    makefile = (REPO / "Makefile").read_text()
    assert "retrain: venv\n\tbash scripts/retrain.sh" in makefile


def test_ci_audits_every_pinned_package_for_known_advisories():
    workflow = yaml.safe_load((REPO / ".github/workflows/ci.yml").read_text())
    steps = " ".join(s.get("run", "") for s in workflow["jobs"]["audit"]["steps"])
    assert "pip-audit --requirement constraints.txt" in steps
