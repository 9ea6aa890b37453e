"""``train_triplet`` stage: method B, the triplet style network, tracked in MLflow.

Outputs under ``models/triplet/``, as for ``train_match``.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import lightning as L
import mlflow

from bgmfit.config import TrainTripletParams
from bgmfit.data.datamodules import TripletDataModule
from bgmfit.data.store import FEATURES_DIR, FeatureStore
from bgmfit.models.training import stage_run, train, write_result
from bgmfit.models.triplet_module import MODE, MONITOR, TripletModule
from bgmfit.stages.common import write_json
from bgmfit.tracking.models import log_torch_model

OUT_DIR = Path("models/triplet")
METRICS = Path("metrics/train_triplet.json")
EXPERIMENT = "train_triplet"


def run(
    params: TrainTripletParams,
    features_dir: Path = FEATURES_DIR,
    out_dir: Path = OUT_DIR,
    metrics_path: Path = METRICS,
) -> dict:
    """Train, keep the best checkpoint, log it to MLflow; return the summary written to ``metrics_path``."""
    # Seed before the network is built, so that its initial weights are reproducible too.
    L.seed_everything(params.seed, workers=True, verbose=False)
    store = FeatureStore.load(features_dir)
    datamodule = TripletDataModule(
        store,
        params.input,
        params.styles_per_batch,
        params.tracks_per_style,
        params.batches_per_epoch,
        params.seed,
    )
    inputs = datamodule.features
    module = TripletModule(
        in_features=int(inputs[0].size),
        hidden_dim=params.hidden_dim,
        embed_dim=params.embed_dim,
        dropout=params.dropout,
        margin=params.margin,
        mining=params.mining,
        lr=params.lr,
        weight_decay=params.weight_decay,
    )
    with stage_run(EXPERIMENT, out_dir / "checkpoints", params.resume) as active:
        source = features_dir / f"{params.input}.npy"
        mlflow.log_input(
            mlflow.data.from_numpy(inputs, source=str(source), name=params.input), context="training"
        )
        result = train(module, datamodule, params, out_dir / "checkpoints", active, MONITOR, MODE)
        shutil.copyfile(result.best_checkpoint, out_dir / "model.ckpt")
        best = TripletModule.load_from_checkpoint(out_dir / "model.ckpt", map_location="cpu")
        model_uri = log_torch_model(best.branch, inputs[:2])
        write_result(
            out_dir / "training.json",
            result,
            {
                "model_uri": model_uri,
                "monitor": MONITOR,
                "input": params.input,
                "style_names": datamodule.style_names,
            },
        )
    summary = {
        "best_val_triplet_satisfaction": result.best_score,
        "epochs": result.epochs,
        "steps": result.global_step,
    }
    write_json(metrics_path, summary)
    print(
        f"train_triplet: best {MONITOR} {result.best_score:.4f} after {result.epochs} epoch(s); "
        f"MLflow run {result.run_id}",
        file=sys.stderr,
    )
    return summary
