"""Registered versions are weights plus config: they outlive a refactor, old pickles get one line,
and the same weights never make a second version."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

from bgmfit.data.store import FeatureStore
from bgmfit.errors import BgmfitError
from bgmfit.models import export, match_module
from bgmfit.models.match_module import MatchModule
from bgmfit.networks import MATCH
from bgmfit.tracking import registry
from bgmfit.tracking.logged import load_version, log_network, network_folder
from bgmfit.tracking.registry import register_candidate
from bgmfit.tracking.runs import use_tracking_store

pytestmark = pytest.mark.slow

COLUMNS = 101


def _network(seed: int) -> MatchModule:
    torch.manual_seed(seed)
    return MatchModule(COLUMNS, 8, 1, 3, 8, 8, False, 0.0, 1e-3, 0.0, head="interactions").eval()


def _logged_run(network: MatchModule) -> dict:
    """A run that logged ``network`` as the training stage does; its training.json keys."""
    use_tracking_store()
    mlflow.set_experiment("logged_networks")
    with mlflow.start_run() as run:
        uri, weights = log_network("match", network, np.zeros((2, 2, 10, COLUMNS), dtype=np.float32))
    return {"run_id": run.info.run_id, "model_uri": uri, "weights_sha256": weights}


def _fits(network: torch.nn.Module, pairs: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return network(pairs[:, 0], pairs[:, 1])


def test_a_version_loads_after_its_class_is_renamed_and_moved(project: Path, monkeypatch, rng):
    original = _network(1)
    version = mlflow.register_model(_logged_run(original)["model_uri"], MATCH.name).version
    local = Path(
        mlflow.artifacts.download_artifacts(f"models:/{MATCH.name}/{version}", dst_path=str(project))
    )
    saved = b"".join(p.read_bytes() for p in network_folder(local).iterdir())
    assert b"MatchModule" not in saved and b"bgmfit.models" not in saved, "no class is named in the files"

    # The refactor: MatchModule becomes PairFitNetwork in another module, and the old name is gone.
    renamed = type("PairFitNetwork", (MatchModule,), {"__module__": "bgmfit.models.pair_fit"})
    monkeypatch.delattr(match_module, "MatchModule")
    monkeypatch.setitem(export.BUILDERS, "match", renamed)

    loaded = load_version(MATCH.name, version)
    assert type(loaded).__name__ == "PairFitNetwork"
    pairs = torch.from_numpy(rng.standard_normal((6, 2, 10, COLUMNS)).astype(np.float32))
    assert torch.equal(_fits(loaded, pairs), _fits(original, pairs)), "the same network, weight for weight"


def test_a_version_whose_settings_no_longer_build_the_network_is_refused_in_one_line(
    project: Path, monkeypatch
):
    version = mlflow.register_model(_logged_run(_network(1))["model_uri"], MATCH.name).version

    class Narrower(MatchModule):  # a later bgmfit whose network lost an argument
        def __init__(self, head="concat", **kwargs):
            super().__init__(**kwargs)

    monkeypatch.setitem(export.BUILDERS, "match", Narrower)
    with pytest.raises(
        BgmfitError, match=r"^models:/bgmfit-match/1: its weights no longer fit the network .*retrain"
    ):
        load_version(MATCH.name, version)


def test_a_pickled_version_from_before_is_refused_in_one_line_and_the_gate_decides_on_the_threshold(
    project: Path, capsys
):
    use_tracking_store()
    mlflow.set_experiment("pickled")
    with mlflow.start_run():  # what bgmfit logged before: the pickled module itself
        info = mlflow.pytorch.log_model(_network(1), name="model", serialization_format="pickle")
    old = mlflow.register_model(info.model_uri, MATCH.name).version
    registry.client().set_registered_model_alias(MATCH.name, "champion", old)
    with pytest.raises(BgmfitError) as refused:
        load_version(MATCH.name, old)
    message = str(refused.value)
    assert "\n" not in message and "pickled module" in message and "retrain (dvc repro)" in message

    store = FeatureStore.load(project / "data/features")
    decision = register_candidate(
        MATCH, _logged_run(_network(2)), store, threshold=0.0, margin=0.5, card="new"
    )
    assert (decision.alias, decision.champion_score, decision.previous_champion) == (
        "champion",
        None,
        str(old),
    )
    tags = registry.client().get_model_version(MATCH.name, decision.version).tags
    assert tags["champion_incompatible"].startswith(f"v{old} cannot be loaded")
    said = capsys.readouterr().err
    assert f"{MATCH.name} @champion v{old} cannot be loaded" in said
    assert f"v{decision.version} is gated on the threshold alone" in said


def test_retraining_to_the_same_weights_adds_no_version(project: Path):
    store = FeatureStore.load(project / "data/features")
    first = register_candidate(MATCH, _logged_run(_network(1)), store, threshold=0.0, margin=0.01, card="a")
    # Another run (a changed comment, say) that trained the very same weights.
    second_run = _logged_run(_network(1))
    again = register_candidate(MATCH, second_run, store, threshold=0.0, margin=0.01, card="b")
    assert (again.version, again.alias, again.new_version) == (first.version, first.alias, False)
    tags = registry.client().get_run(second_run["run_id"]).data.tags
    assert tags["same_weights_as"] == "bgmfit-match v1", "the run says which version it repeats"
    other = register_candidate(MATCH, _logged_run(_network(2)), store, threshold=0.0, margin=0.01, card="c")
    assert other.new_version and other.version == "2", "other weights are a new version"
    assert [r["version"] for r in registry.list_versions()] == ["1", "2"]
