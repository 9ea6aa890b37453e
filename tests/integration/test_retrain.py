"""`make retrain`'s script, run as CI runs it: the gate follows the scores; worse params do not promote."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
import yaml

from tests.integration.helpers import run

pytestmark = pytest.mark.slow


def _retrain(project: Path, lr: float) -> str:
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["train_match"]["lr"] = lr
    # The concat head and the folded tempo alone: the smallest network that trains in two epochs
    # of the tiny corpus (with them lr 3e-3 beat 1e-7 here before the tempo estimate changed).
    params["train_match"]["head"] = "concat"
    params["train_match"]["agreement"] = ["tempo_folded_bpm_per_100"]
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    output = run(project, "env", "RETRAIN_BASE=HEAD", "bash", "scripts/retrain.sh")
    # What main would hold after a merged retraining: the next run's diff is against it.
    run(project, "git", "add", "-A")
    run(project, "git", "commit", "-qm", f"retrained with lr={lr}")
    return output


def test_retraining_follows_the_gate_and_keeps_the_champion_against_worse(dvc_project: Path):
    run(dvc_project, "git", "add", "-A")
    run(dvc_project, "git", "commit", "-qm", "baseline")
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{dvc_project / 'mlflow.db'}")

    def alias(name: str) -> int:
        return int(client.get_model_version_by_alias("bgmfit-match", name).version)

    # A learning rate this small leaves the network where it started: the first version is
    # champion only because there is none before it (the test thresholds are 0).
    first = _retrain(dvc_project, lr=1e-7)
    assert "## Metrics against HEAD" in first and "bgmfit-match" in first
    assert alias("champion") == 1
    assert (dvc_project / "dist/bgmfit.bento").stat().st_size > 0
    assert any((dvc_project / "dvc-store").rglob("*")), "dvc push filled the default local remote"

    # Whether two epochs at lr 3e-3 beat the untrained network on the tiny test split (a few dozen
    # pairs) is chance: ROC-AUC 0.56 against 0.59 once the features changed. What must hold is that
    # the script's gate follows the scores: promote by the margin, else keep the champion.
    second = _retrain(dvc_project, lr=3e-3)
    assert "metrics/match.json" in second and "roc_auc" in second, "the metrics diff is printed"
    gate = json.loads((dvc_project / "metrics/register.json").read_text())["match"]
    margin = yaml.safe_load((dvc_project / "params.yaml").read_text())["register"]["margin"]
    assert gate["version"] == 2 and gate["champion_roc_auc"] is not None
    if gate["roc_auc"] >= gate["champion_roc_auc"] + margin:
        assert (alias("champion"), gate["alias"]) == (2, "champion"), second
        assert client.get_model_version("bgmfit-match", "2").tags["previous_champion"] == "1"
    else:
        assert (alias("champion"), alias("challenger"), gate["alias"]) == (1, 2, "challenger"), second
    champion = alias("champion")

    # Barely trained again: no better than either version before it, so the champion stays.
    _retrain(dvc_project, lr=2e-7)
    assert (alias("champion"), alias("challenger")) == (champion, 3)
    stamp = json.loads((dvc_project / "models/index/stamp.json").read_text())
    assert stamp["models"]["bgmfit-match"]["version"] == champion, "the index is built from the champion"
