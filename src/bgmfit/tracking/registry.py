"""The MLflow model registry: versions, the champion/challenger gate, model cards, promotion, rollback.

Registered models ``bgmfit-match`` and ``bgmfit-triplet`` use aliases only
(``@champion``, ``@challenger``); MLflow's stages are deprecated. A version's
gate outcome is kept in its tags, so that registering the same training run,
or a run that trained the same weights, again changes nothing.
"""

from __future__ import annotations

import math
import os
import socket
import sys
import time
from dataclasses import dataclass

import lightning as L
import mlflow
import numpy as np
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from bgmfit.data.store import FeatureStore
from bgmfit.errors import BgmfitError
from bgmfit.evaluation.scoring import match_metrics, score_match, score_triplet, triplet_metrics
from bgmfit.networks import BY_NAME, MATCH, Network
from bgmfit.tracking.logged import load_version
from bgmfit.tracking.runs import process_alive, use_tracking_store

CHAMPION, CHALLENGER = "champion", "challenger"
#: ``host:pid`` of the register process that registered a version, until its gate is done.
REGISTRAR_TAG = "bgmfit.registered_by"


@dataclass(frozen=True)
class GateDecision:
    """What the gate did with one training run's model."""

    name: str
    version: str
    alias: str  # champion | challenger
    score: float
    champion_score: float | None  # the previous champion's score on the same test split
    previous_champion: str | None
    new_version: bool  # False when the run was registered before (nothing changed)


def client() -> MlflowClient:
    """A registry client on the project's tracking store (``$MLFLOW_TRACKING_URI`` or SQLite)."""
    use_tracking_store()
    return MlflowClient()


def gate_score(network: Network, model: L.LightningModule, store: FeatureStore) -> float:
    """The gate metric of a loaded registered version on the test split of ``store``."""
    try:
        if network is MATCH:
            metrics, _ = match_metrics(score_match(store, model, seed=0))
        else:
            metrics, _ = triplet_metrics(score_triplet(store, model, seed=0))
    except ValueError as exc:
        raise BgmfitError(f"register: {exc}") from None
    return float(metrics["model"][network.metric])


def incompatibility(model: L.LightningModule, store: FeatureStore) -> str | None:
    """Why a loaded version cannot take the features of ``store``, or ``None`` when it can.

    A version takes a fixed width: fused columns (method A), or the flattened
    input length (method B). A change of the features changes that width.
    """
    inputs = store.inputs(model.input_kind)
    if "in_columns" in model.hparams:
        takes, given = int(model.hparams["in_columns"]), int(inputs.shape[2])
    else:
        takes, given = int(model.hparams["in_features"]), int(np.prod(inputs.shape[1:]))
    if takes == given:
        return None
    return f"takes inputs of width {takes}; the features now have {given}"


def champion_version(mlflow_client: MlflowClient, name: str):
    """The ``@champion`` version of ``name``, or ``None`` when there is none (yet)."""
    try:
        return mlflow_client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def register_candidate(
    network: Network,
    training: dict,
    store: FeatureStore,
    threshold: float,
    margin: float,
    card: str,
    invariance: tuple[float, float] | None = None,
) -> GateDecision:
    """Register a training run's logged model and pass it through the gate.

    The version becomes ``@champion`` only if its score reaches ``threshold``
    and beats the current champion, scored now on the same test split, by
    ``margin``; otherwise it becomes ``@challenger``. The alias moves last,
    after the version has loaded through ``models:/`` and scored (the smoke
    prediction). The previous champion's version is kept in the tag
    ``previous_champion`` for :func:`rollback`.

    A run whose weights (and network config) hash the same as a registered version's
    (``weights_sha256``) adds no version: retraining to identical weights, after a change
    that did not change them, reuses that version and its gate outcome.

    Parameters
    ----------
    training:
        The stage's ``training.json``: ``run_id``, ``model_uri`` and ``weights_sha256``.
    card:
        The model card's Markdown body; a header with the version and gate outcome is added.
    invariance:
        ``(the candidate's least top-1 unchanged over the evaluated changes, its threshold)``;
        below the threshold a candidate stays ``@challenger``, whatever its other scores.
    """
    mlflow_client = client()
    run_id, weights = training["run_id"], training.get("weights_sha256")
    versions = mlflow_client.search_model_versions(f"name='{network.name}'")
    existing = [v for v in versions if v.run_id == run_id] or [
        v for v in versions if weights and v.tags.get("weights_sha256") == weights
    ]
    if existing and "gate" not in existing[0].tags:
        # Registered by another register process, still gating (or by one that stopped before the gate).
        existing = [_gated_by_its_registrar(mlflow_client, network.name, existing[0])]
    if existing and "gate" in existing[0].tags:
        if existing[0].run_id != run_id:  # the same weights from another run: say so on that run
            mlflow_client.set_tag(run_id, "same_weights_as", f"{network.name} v{existing[0].version}")
        return _decision_of(network, existing[0])
    if existing:  # registered by an earlier run of this stage that stopped before the gate
        version = str(existing[0].version)
    else:
        tags = {REGISTRAR_TAG: f"{socket.gethostname()}:{os.getpid()}"}
        tags |= {"weights_sha256": weights} if weights else {}
        version = str(mlflow.register_model(training["model_uri"], network.name, tags=tags).version)
        # No lock spans search and register: two processes can both register the run. Checked after
        # writing, the lowest version of the run is kept; a later one is deleted, and its process
        # takes the gate outcome of the one that registered first.
        first = min(
            (v for v in mlflow_client.search_model_versions(f"name='{network.name}'") if v.run_id == run_id),
            key=lambda v: int(v.version),
        )
        if str(first.version) != version:
            mlflow_client.delete_model_version(network.name, version)
            print(
                f"register: run {run_id} was registered as {network.name} v{first.version} by another "
                f"register process at the same time; v{version} is withdrawn",
                file=sys.stderr,
            )
            return _decision_of(network, _gated_by_its_registrar(mlflow_client, network.name, first))

    score = gate_score(network, load_version(network.name, version), store)
    if not math.isfinite(score):
        raise BgmfitError(f"{network.name} v{version}: smoke prediction gave a {network.metric} of {score}")
    champion = champion_version(mlflow_client, network.name)
    champion_score = incompatible = None
    if champion is not None:
        # After a change of the features (or of the saved format) the champion can neither be
        # scored on this split nor serve these features, so only the threshold applies.
        try:
            champion_model = load_version(network.name, str(champion.version))
            incompatible = incompatibility(champion_model, store)
        except BgmfitError as exc:
            incompatible = f"cannot be loaded ({exc})"
        if incompatible is None:
            champion_score = gate_score(network, champion_model, store)
    steady = invariance is None or invariance[0] >= invariance[1]
    promote = steady and score >= threshold and (champion_score is None or score >= champion_score + margin)
    alias = CHAMPION if promote else CHALLENGER

    tags = {"gate_metric": network.metric, "gate_score": f"{score:.6f}", "threshold": str(threshold)}
    if invariance is not None:
        tags["invariance_min_top1"] = f"{invariance[0]:.4f}"
        tags["invariance_threshold"] = str(invariance[1])
    if champion_score is not None:
        tags["champion_score"] = f"{champion_score:.6f}"
    if incompatible:
        tags["champion_incompatible"] = f"v{champion.version} {incompatible}"
        print(
            f"register: {network.name} @champion v{champion.version} {incompatible}; "
            f"v{version} is gated on the threshold alone",
            file=sys.stderr,
        )
    if promote and champion is not None:
        tags["previous_champion"] = str(champion.version)
    for key, value in tags.items():
        mlflow_client.set_model_version_tag(network.name, version, key, value)
    header = _card_header(
        network, version, alias, score, threshold, champion, champion_score, margin, incompatible, invariance
    )
    mlflow_client.update_model_version(network.name, version, description=header + card)
    mlflow_client.log_text(run_id, header + card, f"model_card/{network.name}-v{version}.md")
    # The alias moves last, then the tag that marks the gate as done.
    mlflow_client.set_registered_model_alias(network.name, alias, version)
    mlflow_client.set_model_version_tag(network.name, version, "gate", alias)
    return GateDecision(
        network.name,
        version,
        alias,
        score,
        champion_score,
        tags.get("previous_champion"),
        new_version=not existing,
    )


def _gated_by_its_registrar(mlflow_client: MlflowClient, name: str, version, timeout: float = 300.0):
    """``version`` once the process that registered it has gated it; as it is if that process is gone.

    A process of this machine is known to be gone when its id is; one of another machine
    is waited for ``timeout`` seconds.
    """
    host, _, pid = version.tags.get(REGISTRAR_TAG, "").partition(":")
    here = host == socket.gethostname()
    if not pid.isdigit() or (here and (int(pid) == os.getpid() or not process_alive(int(pid)))):
        return version  # untagged (registered before this tag existed), ours, or its process is gone
    deadline = time.monotonic() + timeout
    while "gate" not in version.tags and time.monotonic() < deadline:
        if here and not process_alive(int(pid)):
            break
        time.sleep(0.5)
        version = mlflow_client.get_model_version(name, str(version.version))
    return version


def _decision_of(network: Network, version) -> GateDecision:
    """The gate outcome recorded in a version's tags."""
    tags = version.tags
    return GateDecision(
        network.name,
        str(version.version),
        tags["gate"],
        float(tags["gate_score"]),
        float(tags["champion_score"]) if "champion_score" in tags else None,
        tags.get("previous_champion"),
        new_version=False,
    )


def _card_header(
    network, version, alias, score, threshold, champion, champion_score, margin, incompatible, invariance
) -> str:
    if incompatible:
        against = (
            f"the champion then, v{champion.version}, {incompatible}, so it could not be scored "
            "on this split and the threshold alone decided"
        )
    elif champion_score is None:
        against = "there was no champion before it"
    else:
        against = f"the champion then, v{champion.version}, scored {champion_score:.4f} on the same split"
    steadiness = ""
    if invariance is not None:
        held = "meets" if invariance[0] >= invariance[1] else "is below, so it cannot be champion:"
        steadiness = (
            f" Least top-1 unchanged under the invariance changes {invariance[0]:.3f} {held} {invariance[1]}."
        )
    return (
        f"# {network.name} v{version}\n\n"
        f"**Gate: `@{alias}`.** {network.metric_label} {score:.4f}; threshold {threshold}, "
        f"margin {margin}; {against}.{steadiness}\n\n"
    )


def rollback(name: str) -> tuple[str, str]:
    """Move ``@champion`` of ``name`` back to the version it replaced.

    Returns
    -------
    tuple
        ``(old champion version, new champion version)``.

    Raises
    ------
    BgmfitError
        If ``name`` is not a bgmfit model, has no champion, or its champion replaced none.
    """
    if name not in BY_NAME:
        raise BgmfitError(f"unknown model {name!r}; expected one of {', '.join(BY_NAME)}")
    mlflow_client = client()
    champion = champion_version(mlflow_client, name)
    if champion is None:
        raise BgmfitError(f"{name} has no @champion to roll back")
    previous = champion.tags.get("previous_champion")
    if previous is None:
        raise BgmfitError(f"{name} v{champion.version} replaced no earlier champion; nothing to roll back to")
    mlflow_client.set_registered_model_alias(name, CHAMPION, previous)
    mlflow_client.set_model_version_tag(name, str(champion.version), "rolled_back", "true")
    return str(champion.version), previous


def promote(name: str, version: str) -> tuple[str | None, str]:
    """Make ``version`` of ``name`` the ``@champion`` by hand, whatever its gate said.

    For a challenger the gate kept back on the margin, or one that a person prefers for what the
    gate does not read (steadier answers, a model card's notes). The version it replaces is kept in
    its ``previous_champion`` tag, so :func:`rollback` undoes it; ``@challenger`` leaves it.

    Returns
    -------
    tuple
        ``(old champion version or None, new champion version)``.

    Raises
    ------
    BgmfitError
        If ``name`` is not a bgmfit model, has no such version, or it is the champion already.
    """
    if name not in BY_NAME:
        raise BgmfitError(f"unknown model {name!r}; expected one of {', '.join(BY_NAME)}")
    mlflow_client = client()
    try:
        chosen = mlflow_client.get_model_version(name, version)
    except MlflowException:
        raise BgmfitError(f"{name} has no version {version!r}; `bgmfit registry` lists them") from None
    champion = champion_version(mlflow_client, name)
    if champion is not None and str(champion.version) == str(chosen.version):
        raise BgmfitError(f"{name} v{version} is @champion already")
    if champion is not None:
        mlflow_client.set_model_version_tag(name, version, "previous_champion", str(champion.version))
    elif "previous_champion" in chosen.tags:  # from an earlier time as champion: nothing to go back to now
        mlflow_client.delete_model_version_tag(name, version, "previous_champion")
    mlflow_client.set_model_version_tag(name, version, "promoted_by_hand", "true")
    if CHALLENGER in chosen.aliases:
        mlflow_client.delete_registered_model_alias(name, CHALLENGER)
    mlflow_client.set_registered_model_alias(name, CHAMPION, version)
    return (str(champion.version) if champion is not None else None), str(chosen.version)


def list_versions() -> list[dict[str, str]]:
    """Every version of both bgmfit models: version, aliases, gate outcome and score, run."""
    mlflow_client = client()
    rows = []
    for name in BY_NAME:
        versions = mlflow_client.search_model_versions(f"name='{name}'")
        # search_model_versions leaves aliases empty; the registered model holds them.
        aliases: dict[str, list[str]] = {}
        if versions:
            for alias, version in mlflow_client.get_registered_model(name).aliases.items():
                aliases.setdefault(str(version), []).append(alias)
        for v in versions:
            rows.append(
                {
                    "model": name,
                    "version": str(v.version),
                    "aliases": ",".join(sorted(aliases.get(str(v.version), []))) or "-",
                    "gate": v.tags.get("gate", "-"),
                    "metric": v.tags.get("gate_metric", "-"),
                    "score": v.tags.get("gate_score", "-"),
                    "run_id": v.run_id or "-",
                }
            )
    return sorted(rows, key=lambda r: (r["model"], int(r["version"])))
