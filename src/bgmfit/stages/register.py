"""``register`` stage: register both trained models and pass them through the promotion gate.

Writes ``models/champions.json`` (the champion version of each model, which
the ``index`` stage builds from) and ``metrics/register.json`` (what the gate
decided).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bgmfit.config import FeaturesParams, RegisterParams, load_params
from bgmfit.data.store import FeatureStore
from bgmfit.errors import BgmfitError
from bgmfit.files import CHAMPIONS, FEATURES, METRICS, MODELS, read_json, write_json
from bgmfit.networks import MATCH, NETWORKS, TRIPLET, Network
from bgmfit.tracking.registry import champion_version, client, register_candidate
from bgmfit.tracking.runs import dvc_output_hash

KNOWN_LIMITS = {
    "match": [
        "Audio is heard in windows of {seconds:g} s (features.n_segments x segment_seconds); a long "
        "query is their mean fit, a long BGM its best window's. Training saw each track's first window.",
        "Fit grades come from structure (same work 1.0, same style 0.5, other 0.0), not from listeners.",
        "Trained on the demo corpus (General MIDI renders of public-domain scores and eSpeak NG narration) "
        "unless fetch points at your own catalogue; expect a domain gap on studio recordings.",
    ],
    "triplet": [
        "Each window gives the first features.frames_n MFCC frames only, so it hears timbre and texture, "
        "not form; a long file is the mean of its windows' embeddings.",
        "Styles that differ mostly in metre (reel, jig, hornpipe, slip jig) are the hardest to separate.",
        "Trained on the demo corpus unless fetch points at your own catalogue.",
    ],
}


def main(params_path: Path) -> None:
    """``bgmfit register``: reads ``params.yaml: register`` and, for the model cards, ``features``."""
    features = load_params("features", FeaturesParams, params_path)
    run(load_params("register", RegisterParams, params_path), clip_seconds=features.clip_seconds)


def run(
    params: RegisterParams,
    clip_seconds: float,
    features_dir: Path = FEATURES,
    models_dir: Path = MODELS,
    metrics_dir: Path = METRICS,
) -> dict:
    """Register and gate both networks; return the decisions as written to ``metrics/register.json``.

    ``clip_seconds`` is how much audio the features read, for the model cards' limits.
    """
    store = FeatureStore.load(features_dir)
    decisions = {}
    for network, threshold in ((MATCH, params.match_threshold), (TRIPLET, params.triplet_threshold)):
        training = read_json(
            models_dir / network.key / "training.json", "run its training stage first (dvc repro)"
        )
        metrics = read_json(metrics_dir / f"{network.key}.json", "run the evaluate stage first (dvc repro)")
        card = model_card(network, training, metrics, clip_seconds)
        invariance = metrics.get("invariance", {}).get("min_top1_unchanged")
        decision = register_candidate(
            network,
            training,
            store,
            threshold,
            params.margin,
            card,
            invariance=(invariance, params.invariance_threshold) if invariance is not None else None,
        )
        decisions[network.key] = {
            "model": decision.name,
            "version": int(decision.version),
            "alias": decision.alias,
            # Rounded as the gate's tag keeps it, so that a rerun writes the same file.
            network.metric: round(decision.score, 6),
            "new_version": decision.new_version,
        }
        if decision.champion_score is not None:
            decisions[network.key][f"champion_{network.metric}"] = round(decision.champion_score, 6)
    champions = write_champions(models_dir / CHAMPIONS.name)
    write_json(metrics_dir / "register.json", decisions)
    for d in decisions.values():
        state = "new version" if d["new_version"] else "already registered"
        print(f"register: {d['model']} v{d['version']} ({state}) -> @{d['alias']}", file=sys.stderr)
    print(
        "register: champions " + ", ".join(f"{n} v{c['version']}" for n, c in champions.items()),
        file=sys.stderr,
    )
    return decisions


def write_champions(path: Path = CHAMPIONS) -> dict:
    """Record the current ``@champion`` of each model (version, run, weights) for the ``index`` stage."""
    mlflow_client = client()
    champions = {}
    for network in NETWORKS:
        champion = champion_version(mlflow_client, network.name)
        if champion is None:
            raise BgmfitError(
                f"{network.name} has no @champion: no version has passed the gate yet "
                f"(see `bgmfit registry` and the register section of params.yaml)"
            )
        champions[network.name] = {
            "version": int(champion.version),
            "run_id": champion.run_id,
            "weights_sha256": champion.tags.get("weights_sha256", "unknown"),
        }
    write_json(path, champions)
    return champions


def model_card(network: Network, training: dict, metrics: dict, seconds: float) -> str:
    """The Markdown model card of a candidate: data, metrics beside the baselines, params, limits."""
    mlflow_client = client()
    params = mlflow_client.get_run(training["run_id"]).data.params
    scorers = ("model", "baseline_cosine", "baseline_random")
    keys = [k for k, v in metrics["model"].items() if isinstance(v, int | float)]
    lines = [
        "## Data",
        f"- Features: `{FEATURES}`, DVC md5 `{dvc_output_hash(str(FEATURES))}`.",
        f"- Test split: {json.dumps(metrics.get('test', {}))}.",
        f"- Training run: `{training['run_id']}`, best `{training.get('monitor')}` "
        f"{training.get('best_score', float('nan')):.4f}.",
        "",
        "## Metrics on held-out works",
        "| metric | " + " | ".join(scorers) + " |",
        "|---|" + "---|" * len(scorers),
    ]
    lines += [f"| {k} | " + " | ".join(f"{metrics[s][k]:.4f}" for s in scorers) + " |" for k in keys]
    if "invariance" in metrics:
        block = metrics["invariance"]
        changes = [k for k, v in block.items() if isinstance(v, dict)]
        lines += [
            "",
            f"## Invariance ({block['queries']} held-out queries, decoded and changed, then answered again)",
            "| change | top-1 unchanged | top-10 overlap |",
            "|---|---|---|",
        ]
        lines += [
            f"| {c} | {block[c]['top1_unchanged']:.3f} | {block[c]['top10_overlap']:.3f} |" for c in changes
        ]
    if "calibration" in metrics:
        c = metrics["calibration"]
        lines += [
            "",
            "## Calibration",
            f"Isotonic regression fitted on the validation split ({c['val_pairs']} pairs, "
            f"{c['knots']} knots). Test ECE {c['ece_before']:.4f} before, {c['ece_after']:.4f} after. "
            "The served fits (`/recommend`, `/match`, timelines) are the calibrated ones.",
        ]
    lines += ["", "## Params", "| param | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in sorted(params.items())]
    lines += ["", "## Known limits"]
    lines += ["- " + limit.format(seconds=seconds) for limit in KNOWN_LIMITS[network.key]]
    return "\n".join(lines) + "\n"
