"""``train_match`` stage: method A, the pair-fit network, tracked in MLflow.

Outputs under ``models/match/``: ``model.ckpt`` (the best checkpoint),
``training.json`` (run id, best score, epochs), and ``checkpoints/`` (kept
between runs, so that ``resume: true`` can continue a killed run).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import lightning as L
import mlflow

from bgmfit.config import TrainMatchParams
from bgmfit.data.datamodules import PairDataModule
from bgmfit.data.store import FEATURES_DIR, FeatureStore
from bgmfit.models.match_module import MODE, MONITOR, MatchModule, PairScorer
from bgmfit.models.training import stage_run, train, write_result
from bgmfit.stages.common import write_json
from bgmfit.tracking.models import log_torch_model

OUT_DIR = Path("models/match")
METRICS = Path("metrics/train_match.json")
EXPERIMENT = "train_match"


def run(
    params: TrainMatchParams,
    features_dir: Path = FEATURES_DIR,
    out_dir: Path = OUT_DIR,
    metrics_path: Path = METRICS,
) -> dict:
    """Train, keep the best checkpoint, log it to MLflow; return the summary written to ``metrics_path``."""
    # Seed before the network is built, so that its initial weights are reproducible too.
    L.seed_everything(params.seed, workers=True, verbose=False)
    store = FeatureStore.load(features_dir)
    datamodule = PairDataModule(store, params.batch_size, params.seed)
    module = MatchModule(
        in_columns=store.fused.shape[2],
        tower_channels=params.tower_channels,
        tower_depth=params.tower_depth,
        kernel_size=params.kernel_size,
        embed_dim=params.embed_dim,
        fused_dim=params.fused_dim,
        share_towers=params.share_towers,
        dropout=params.dropout,
        lr=params.lr,
        weight_decay=params.weight_decay,
    )
    with stage_run(EXPERIMENT, out_dir / "checkpoints", params.resume) as active:
        mlflow.log_input(
            mlflow.data.from_numpy(
                store.fused, source=str(features_dir / "fused.npy"), name="fused_features"
            ),
            context="training",
        )
        result = train(module, datamodule, params, out_dir / "checkpoints", active, MONITOR, MODE)
        shutil.copyfile(result.best_checkpoint, out_dir / "model.ckpt")
        best = MatchModule.load_from_checkpoint(out_dir / "model.ckpt", map_location="cpu")
        model_uri = log_torch_model(PairScorer(best), store.fused[:2][:, None].repeat(2, axis=1))
        write_result(out_dir / "training.json", result, {"model_uri": model_uri, "monitor": MONITOR})
    summary = {"best_val_auroc": result.best_score, "epochs": result.epochs, "steps": result.global_step}
    write_json(metrics_path, summary)
    print(
        f"train_match: best {MONITOR} {result.best_score:.4f} after {result.epochs} epoch(s); "
        f"MLflow run {result.run_id}",
        file=sys.stderr,
    )
    return summary
