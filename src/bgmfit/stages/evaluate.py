"""``evaluate`` stage: both networks and their baselines on the held-out works.

Writes ``metrics/match.json`` and ``metrics/triplet.json`` (DVC metrics), the
plots under ``plots/`` (DVC plots), and logs both to the MLflow run of the
model that was evaluated. Each metrics file also holds the method's invariance
(:mod:`bgmfit.evaluation.invariance`): held-out queries decoded from ``data/raw``
and answered again under +6 dB, -6 dB, an MP3 re-encode and a 1 s later start.
"""

from __future__ import annotations

import sys
from pathlib import Path

import mlflow

from bgmfit.config import EvaluateParams, FeaturesParams, TimelineParams, load_params
from bgmfit.data.store import FeatureStore
from bgmfit.errors import BgmfitError
from bgmfit.evaluation import plots
from bgmfit.evaluation.invariance import measure_invariance
from bgmfit.evaluation.scoring import (
    match_calibration,
    match_metrics,
    match_reliability,
    score_match,
    score_triplet,
    triplet_metrics,
)
from bgmfit.features.fusion import NormStats
from bgmfit.files import FEATURES, METRICS, MODELS, PLOTS, RAW, read_json, write_json
from bgmfit.models.match_module import MatchModule
from bgmfit.models.triplet_module import TripletModule
from bgmfit.networks import MATCH, TRIPLET
from bgmfit.stages import worker_count
from bgmfit.timeline.longform import evaluate_timelines
from bgmfit.tracking.runs import use_tracking_store


def main(params_path: Path) -> None:
    """``bgmfit evaluate``: reads ``params.yaml: evaluate``, ``features`` (to analyse queries anew)
    and ``timeline`` (the long-form episodes)."""
    run(
        load_params("evaluate", EvaluateParams, params_path),
        load_params("features", FeaturesParams, params_path),
        load_params("timeline", TimelineParams, params_path),
    )


def run(
    params: EvaluateParams,
    features: FeaturesParams,
    timeline: TimelineParams | None = None,
    raw_dir: Path = RAW,
    features_dir: Path = FEATURES,
    models_dir: Path = MODELS,
    metrics_dir: Path = METRICS,
    plots_dir: Path = PLOTS,
) -> dict:
    """Evaluate both networks; return ``{"match": ..., "triplet": ...}`` as written to ``metrics_dir``."""
    store = FeatureStore.load(features_dir)
    match_training = _training(models_dir / MATCH.key)
    triplet_training = _training(models_dir / TRIPLET.key)
    try:
        match_model = MatchModule.load_from_checkpoint(
            models_dir / MATCH.key / "model.ckpt", map_location="cpu"
        )
        match = score_match(store, match_model, params.seed)
        match_val = score_match(store, match_model, params.seed, split="val")
        triplet_model = TripletModule.load_from_checkpoint(
            models_dir / TRIPLET.key / "model.ckpt", map_location="cpu"
        )
        triplet = score_triplet(store, triplet_model, params.seed)
    except ValueError as exc:
        raise BgmfitError(f"evaluate: {exc}") from None
    invariance = measure_invariance(
        store,
        NormStats.load(features_dir / "norm_stats.json"),
        match_model,
        triplet_model,
        features,
        raw_dir,
        params.invariance_queries,
        params.seed,
        worker_count(params.workers),
    )

    match_result, match_per_style = match_metrics(match)
    triplet_result, triplet_per_style = triplet_metrics(triplet)
    match_result["invariance"] = invariance["match"]
    match_result["calibration"] = match_calibration(match, match_val)
    triplet_result["invariance"] = invariance["triplet"]

    fits = match.relevance.ravel() > 0
    match_plots = plots.curves(plots_dir, fits, {k: v.ravel() for k, v in match.scores.items()})
    match_plots += plots.reliability(plots_dir, match_reliability(match))
    match_plots += plots.per_style_bars(plots_dir, "match", "recall@10", _pick(match_per_style, "recall@10"))
    triplet_plots = plots.projection(plots_dir, "triplet", triplet.embeddings, triplet.styles)
    triplet_plots += plots.per_style_bars(
        plots_dir, "triplet", "precision@10", _pick(triplet_per_style, "precision@10")
    )
    if timeline is not None and params.timeline_episodes:
        longform = evaluate_timelines(
            store,
            raw_dir,
            match_model,
            features,
            NormStats.load(features_dir / "norm_stats.json"),
            timeline,
            params.timeline_episodes,
            params.timeline_scenes,
            params.seed,
        )
        write_json(metrics_dir / "timeline.json", longform)
        _write_timeline_plot(plots_dir / "timeline.csv", longform)
        _log_to_run(match_training["run_id"], {"timeline": longform}, [])
        print(
            "evaluate: timelines of {episodes} long-form episodes ({scenes} scenes): scene accuracy "
            "(work/style) {w:.3f}/{s:.3f} against {bw:.3f}/{bs:.3f} unsmoothed; switches {sw:.2f} "
            "against {bsw:.2f} (true {t:.2f}); boundary F1 {f1:.3f}; abstention {a:.3f} "
            "(false {fa:.3f})".format(
                episodes=longform["episodes"],
                scenes=longform["scenes"],
                w=longform["timeline"]["scene_accuracy_work"],
                s=longform["timeline"]["scene_accuracy_style"],
                bw=longform["baseline"]["scene_accuracy_work"],
                bs=longform["baseline"]["scene_accuracy_style"],
                sw=longform["timeline"]["switches"],
                bsw=longform["baseline"]["switches"],
                t=longform["true_switches"],
                f1=longform["timeline"]["boundary_f1"],
                a=longform["timeline"]["abstention"],
                fa=longform["timeline"]["false_abstention"],
            ),
            file=sys.stderr,
        )
    write_json(metrics_dir / f"{MATCH.key}.json", match_result)
    write_json(metrics_dir / f"{TRIPLET.key}.json", triplet_result)
    _log_to_run(match_training["run_id"], match_result, match_plots)
    _log_to_run(triplet_training["run_id"], triplet_result, triplet_plots)
    _report(match_result, triplet_result)
    return {"match": match_result, "triplet": triplet_result}


def _write_timeline_plot(path: Path, longform: dict) -> None:
    """One row per measure, the smoothed timeline beside the unsmoothed baseline (a DVC bar plot)."""
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["measure", "scorer", "value"])
        for measure in ("scene_accuracy_work", "scene_accuracy_style", "boundary_f1"):
            for scorer in ("timeline", "baseline"):
                writer.writerow([measure, scorer, f"{longform[scorer][measure]:.4f}"])


def _training(folder: Path) -> dict:
    if not (folder / "model.ckpt").is_file():
        raise BgmfitError(f"{folder}: no trained model; run its training stage first (dvc repro)")
    return read_json(folder / "training.json", "run its training stage first (dvc repro)")


def _pick(per_style: dict[str, dict[str, dict[str, float]]], metric: str) -> dict[str, dict[str, float]]:
    return {
        scorer: {style: block[metric] for style, block in styles.items()}
        for scorer, styles in per_style.items()
    }


def _flatten(prefix: str, block: dict) -> dict[str, float]:
    flat = {}
    for key, value in block.items():
        name = f"{prefix}/{key}".replace("@", "_at_")
        if isinstance(value, dict):
            flat |= _flatten(name, value)
        elif isinstance(value, int | float) and value == value:  # MLflow rejects NaN
            flat[name] = float(value)
    return flat


def _log_to_run(run_id: str, result: dict, figures: list[Path]) -> None:
    use_tracking_store()
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics(_flatten("test", result))
        for figure in figures:
            mlflow.log_artifact(str(figure), artifact_path="evaluation")


def _report(match: dict, triplet: dict) -> None:
    def line(name: str, block: dict, keys: list[str]) -> str:
        return f"  {name:<16}" + "  ".join(f"{k} {block[k]:.3f}" for k in keys)

    keys_a = ["roc_auc", "pr_auc", "recall@1", "recall@10", "mrr", "ndcg@10", "ece"]
    keys_b = ["precision@10", "map@10", "triplet_satisfaction"]
    lines = ["evaluate: method A (pair fit) on held-out works"]
    lines += [line(n, match[n], keys_a) for n in ("model", "baseline_cosine", "baseline_random")]
    lines += ["evaluate: method B (triplet style) on held-out works"]
    lines += [line(n, triplet[n], keys_b) for n in ("model", "baseline_cosine", "baseline_random")]
    for name, block in (("A", match["invariance"]), ("B", triplet["invariance"])):
        changes = [k for k, v in block.items() if isinstance(v, dict)]
        cells = "  ".join(
            f"{c} {block[c]['top1_unchanged']:.3f}/{block[c]['top10_overlap']:.3f}" for c in changes
        )
        lines.append(
            f"evaluate: method {name} invariance (top-1 unchanged/top-10 overlap, {block['queries']} queries)"
        )
        lines.append(f"  {cells}")
    c = match["calibration"]
    lines.append(
        f"evaluate: method A calibration: isotonic, {c['knots']} knots fitted on val, "
        f"test ECE {c['ece_before']:.3f} -> {c['ece_after']:.3f}"
    )
    print("\n".join(lines), file=sys.stderr)
