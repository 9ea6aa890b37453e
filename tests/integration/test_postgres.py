"""MLflow tracking and the registry on a real PostgreSQL, chosen by MLFLOW_TRACKING_URI alone."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import mlflow
import pytest

from bgmfit.config import TrainMatchParams, load_params
from bgmfit.data.store import FeatureStore
from bgmfit.networks import MATCH
from bgmfit.stages import train_match
from bgmfit.tracking import registry
from bgmfit.tracking.registry import register_candidate
from tests.integration.helpers import write_synthetic_store
from tests.signals import REPO
from tests.system import debian_program, free_port

pytestmark = pytest.mark.slow


@pytest.fixture
def postgres():
    """A throwaway PostgreSQL cluster on 127.0.0.1, stopped by this fixture; yields its MLflow URI."""

    initdb = debian_program("/usr/lib/postgresql/*/bin/initdb", "postgresql")
    if initdb is None:
        pytest.skip("PostgreSQL is not installed and cannot be installed here (needs root and apt-get)")
    binaries = initdb.parent
    # initdb refuses to run as root; the cluster then belongs to Debian's postgres user.
    run_as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    # Not under pytest's tmp_path: its parents are private to root, and postgres must reach the cluster.
    cluster = Path(tempfile.mkdtemp(prefix="bgmfit-postgres-"))
    if run_as:
        shutil.chown(cluster, "postgres")
    port = free_port()

    def pg(*args: str) -> None:
        subprocess.run([*run_as, *args], check=True, capture_output=True, timeout=120)

    pg(str(binaries / "initdb"), "-D", str(cluster / "data"), "--auth=trust", "-U", "postgres")
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {cluster}"
    pg(
        str(binaries / "pg_ctl"),
        "-D",
        str(cluster / "data"),
        "-o",
        options,
        "-l",
        str(cluster / "log"),
        "-w",
        "start",
    )
    try:
        pg("psql", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-c", "CREATE DATABASE mlflow")
        yield f"postgresql://postgres@127.0.0.1:{port}/mlflow"
    finally:
        pg(str(binaries / "pg_ctl"), "-D", str(cluster / "data"), "-m", "fast", "-w", "stop")
        shutil.rmtree(cluster, ignore_errors=True)


def test_a_tiny_run_trains_and_registers_on_postgresql(postgres: str, tmp_path: Path, monkeypatch, rng):
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", postgres)
    write_synthetic_store(project / "data/features", rng)
    params = load_params("train_match", TrainMatchParams, REPO / "params.yaml")
    train_match.run(
        params.model_copy(update=dict(accelerator="cpu", min_epochs=1, max_epochs=2, batch_size=8))
    )
    training = json.loads((project / "models/match/training.json").read_text())
    decision = register_candidate(
        MATCH, training, FeatureStore.load(project / "data/features"), threshold=0.0, margin=0.0, card="pg"
    )
    assert (decision.version, decision.alias) == ("1", "champion")

    client = registry.client()
    assert client.tracking_uri.startswith("postgresql://")
    run = client.get_run(training["run_id"])
    assert run.info.status == "FINISHED" and run.data.params["max_epochs"] == "2"
    assert client.get_model_version_by_alias("bgmfit-match", "champion").run_id == training["run_id"]
    assert mlflow.pyfunc.load_model("models:/bgmfit-match@champion").metadata.run_id == training["run_id"]
