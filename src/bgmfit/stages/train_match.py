"""``train_match`` stage: method A, the pair-fit network, tracked in MLflow.

Outputs under ``models/match/``: ``model.ckpt`` (the best checkpoint),
``training.json`` (run id, best score, epochs, the logged model and its weights'
hash), and ``checkpoints/`` (kept between runs, so that ``resume: true`` can
continue a killed run).
"""

from __future__ import annotations

from pathlib import Path

import lightning as L

from bgmfit.config import TrainMatchParams, load_params
from bgmfit.data.datamodules import PairDataModule
from bgmfit.data.store import FeatureStore
from bgmfit.files import FEATURES, METRICS, write_json
from bgmfit.models.match_module import MODE, MONITOR, MatchModule
from bgmfit.networks import MATCH
from bgmfit.training import train_and_log


def main(params_path: Path) -> None:
    """``bgmfit train_match``: reads ``params.yaml: train_match``."""
    run(load_params("train_match", TrainMatchParams, params_path))


def run(
    params: TrainMatchParams,
    features_dir: Path = FEATURES,
    out_dir: Path = MATCH.folder,
    metrics_path: Path = METRICS / f"{MATCH.stage}.json",
) -> dict:
    """Train, keep the best checkpoint, log it to MLflow; return the summary written to ``metrics_path``."""
    # Seed before the network is built, so that its initial weights are reproducible too.
    L.seed_everything(params.seed, workers=True, verbose=False)
    store = FeatureStore.load(features_dir)
    module = MatchModule.from_params(params, store.columns)
    result = train_and_log(
        MATCH,
        module,
        PairDataModule(store, params.batch_size, params.seed, two_views=params.instance_weight > 0),
        params,
        MONITOR,
        MODE,
        dataset=(store.fused, features_dir / "fused.npy"),
        example=store.fused[:2, None].repeat(2, axis=1),  # (pairs, 2, segments, columns)
        out_dir=out_dir,
    )
    summary = {"best_val_ndcg_at_10": result.best_score, "epochs": result.epochs, "steps": result.global_step}
    write_json(metrics_path, summary)
    return summary
