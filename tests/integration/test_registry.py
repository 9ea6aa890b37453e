"""The MLflow registry gate on a real SQLite store: champion, challenger, idempotence, promotion, rollback."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest

from bgmfit.config import FeaturesParams, IndexParams, TrainMatchParams, load_params
from bgmfit.data.store import FeatureStore
from bgmfit.errors import BgmfitError
from bgmfit.models.match_module import MatchModule
from bgmfit.networks import MATCH
from bgmfit.stages import index, train_match
from bgmfit.tracking import registry
from bgmfit.tracking.logged import log_network
from bgmfit.tracking.registry import register_candidate
from bgmfit.tracking.runs import use_tracking_store
from tests.signals import REPO

pytestmark = pytest.mark.slow


def _untrained_run(seed: int, columns: int = 101) -> dict:
    """A run whose logged model is method A with random weights: a candidate that cannot be good."""
    import torch

    torch.manual_seed(seed)
    module = MatchModule(columns, 8, 1, 3, 8, 8, False, 0.0, 1e-3, 0.0)
    use_tracking_store()
    mlflow.set_experiment("gate_candidates")  # not a stale experiment id from an earlier test's store
    with mlflow.start_run() as run:
        uri, weights = log_network("match", module, np.zeros((2, 2, 10, columns), dtype=np.float32))
    return {"run_id": run.info.run_id, "model_uri": uri, "weights_sha256": weights}


def _trained_run() -> dict:
    params = load_params("train_match", TrainMatchParams, REPO / "params.yaml")
    train_match.run(
        params.model_copy(update=dict(accelerator="cpu", min_epochs=1, max_epochs=8, batch_size=8))
    )
    return json.loads(Path("models/match/training.json").read_text())


def _aliases() -> dict[str, str]:
    return {r["version"]: r["aliases"] for r in registry.list_versions()}


def test_the_gate_promotes_better_keeps_worse_as_challenger_and_a_person_can_promote_or_undo(project: Path):
    store = FeatureStore.load(project / "data/features")

    first = register_candidate(MATCH, _untrained_run(1), store, threshold=0.0, margin=0.01, card="first")
    assert (first.version, first.alias, first.previous_champion) == ("1", "champion", None)

    better = register_candidate(MATCH, _trained_run(), store, threshold=0.0, margin=0.01, card="trained")
    assert better.score > first.score + 0.01, (better.score, first.score)
    assert (better.version, better.alias, better.previous_champion) == ("2", "champion", "1")
    assert better.champion_score == pytest.approx(first.score, abs=1e-6), "the old champion is rescored"

    worse_run = _untrained_run(2)
    worse = register_candidate(MATCH, worse_run, store, threshold=0.0, margin=0.01, card="worse")
    assert (worse.version, worse.alias) == ("3", "challenger")
    assert _aliases() == {"1": "-", "2": "champion", "3": "challenger"}

    again = register_candidate(MATCH, worse_run, store, threshold=0.0, margin=0.01, card="worse")
    assert not again.new_version and again.version == "3", "the same run never makes a second version"
    assert len(registry.list_versions()) == 3

    client = registry.client()
    card = client.get_model_version("bgmfit-match", "2").description
    assert card.startswith("# bgmfit-match v2") and "`@champion`" in card and "trained" in card

    assert registry.rollback("bgmfit-match") == ("2", "1")
    assert _aliases()["1"] == "champion"
    with pytest.raises(BgmfitError, match="v1 replaced no earlier champion"):
        registry.rollback("bgmfit-match")

    # A challenger made champion by hand leaves @challenger, and rollback undoes it.
    assert registry.promote("bgmfit-match", "3") == ("1", "3")
    assert _aliases() == {"1": "-", "2": "-", "3": "champion"}
    assert client.get_model_version("bgmfit-match", "3").tags["promoted_by_hand"] == "true"
    with pytest.raises(BgmfitError, match="v3 is @champion already"):
        registry.promote("bgmfit-match", "3")
    with pytest.raises(BgmfitError, match="has no version '9'"):
        registry.promote("bgmfit-match", "9")
    assert registry.rollback("bgmfit-match") == ("3", "1")
    assert _aliases()["1"] == "champion"


def test_a_champion_trained_on_other_features_is_replaced_on_the_threshold_alone(project: Path):
    # The champion of an earlier feature set (97 columns) cannot score, or serve, today's 101.
    old = _untrained_run(1, columns=97)
    version = mlflow.register_model(old["model_uri"], "bgmfit-match").version
    registry.client().set_registered_model_alias("bgmfit-match", "champion", version)
    store = FeatureStore.load(project / "data/features")

    low = register_candidate(MATCH, _untrained_run(2), store, threshold=1.0, margin=0.01, card="low")
    assert (low.alias, low.champion_score) == ("challenger", None), "the threshold still applies"
    new = register_candidate(MATCH, _untrained_run(3), store, threshold=0.0, margin=0.01, card="new")
    assert (new.alias, new.champion_score, new.previous_champion) == ("champion", None, "1")
    card = registry.client().get_model_version("bgmfit-match", new.version).description
    assert "takes inputs of width 97; the features now have 101" in card

    # Rolled back to it, the old champion cannot index today's features: a clear error, no traceback.
    registry.rollback("bgmfit-match")
    champions = {
        "bgmfit-match": {"version": "1", "input": "fused"},
        "bgmfit-triplet": {"version": "1", "input": "fused"},
    }
    (project / "champions.json").write_text(json.dumps(champions))
    message = r"bgmfit-match v1 \(@champion\) takes inputs of width 97; the features now have 101"
    with pytest.raises(BgmfitError, match=message):
        index.run(
            load_params("index", IndexParams, REPO / "params.yaml"),
            load_params("features", FeaturesParams, REPO / "params.yaml"),
            features_dir=project / "data/features",
            champions_path=project / "champions.json",
        )


def test_a_candidate_below_the_threshold_never_becomes_the_first_champion(project: Path):
    store = FeatureStore.load(project / "data/features")
    decision = register_candidate(MATCH, _untrained_run(1), store, threshold=0.999, margin=0.0, card="x")
    assert decision.alias == "challenger" and decision.score < 0.999
    assert registry.champion_version(registry.client(), "bgmfit-match") is None
    with pytest.raises(BgmfitError, match="unknown model 'bgmfit-nope'"):
        registry.rollback("bgmfit-nope")


_REGISTER = """
import json, sys, time
from pathlib import Path
from bgmfit.data.store import FeatureStore
from bgmfit.networks import MATCH
from bgmfit.tracking.registry import register_candidate
run, start = json.loads(sys.argv[1]), float(sys.argv[2])
store = FeatureStore.load(Path("data/features"))
time.sleep(max(0.0, start - time.time()))
decision = register_candidate(MATCH, run, store, threshold=0.0, margin=0.01, card="race")
print(json.dumps({"version": decision.version, "alias": decision.alias}))
"""


def test_two_register_processes_at_once_register_each_run_once_and_the_alias_never_goes_missing(
    project: Path,
):
    """Four trials of two real processes registering the same run at the same moment, while this
    process polls ``models:/bgmfit-match@champion``."""
    import subprocess
    import sys
    import threading
    import time

    from tests.integration.helpers import environment

    client = registry.client()
    polls, misses, stop = [0], [], threading.Event()

    def poll() -> None:
        while not stop.is_set():
            try:
                client.get_model_version_by_alias(MATCH.name, "champion")
                polls[0] += 1
            except Exception as exc:  # noqa: BLE001 - any failure to resolve the alias is the finding
                if polls[0]:  # only once a first champion exists
                    misses.append(repr(exc)[:200])
            time.sleep(0.01)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    runs = [_untrained_run(seed) for seed in range(4)]
    try:
        for run in runs:
            start = time.time() + 10  # both have imported everything by then
            racers = [
                subprocess.Popen(
                    [sys.executable, "-c", _REGISTER, json.dumps(run), str(start)],
                    cwd=project,
                    env=environment(),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for _ in range(2)
            ]
            answers = [racer.communicate(timeout=300) for racer in racers]
            for racer, (_, err) in zip(racers, answers, strict=True):
                assert racer.returncode == 0, err[-2000:]
            decisions = [json.loads(out.strip().splitlines()[-1]) for out, _ in answers]
            assert decisions[0] == decisions[1], "both processes report the same outcome"
    finally:
        stop.set()
        poller.join(5)
    versions = client.search_model_versions(f"name='{MATCH.name}'")
    by_run = {}
    for version in versions:
        by_run.setdefault(version.run_id, []).append(version.version)
    assert sorted(by_run) == sorted(r["run_id"] for r in runs)
    assert all(len(v) == 1 for v in by_run.values()), by_run
    assert all("gate" in v.tags for v in versions), "every version kept has been through the gate"
    assert polls[0] > 100 and not misses, (polls[0], misses[:3])
