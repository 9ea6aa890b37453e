"""``train_triplet`` stage: method B, the triplet style network, tracked in MLflow.

Outputs under ``models/triplet/``, as for ``train_match``.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L

from bgmfit.config import TrainTripletParams
from bgmfit.data.datamodules import TripletDataModule
from bgmfit.data.store import FEATURES_DIR, FeatureStore
from bgmfit.models.training import train_and_log
from bgmfit.models.triplet_module import MODE, MONITOR, TripletModule
from bgmfit.stages.common import write_json

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
        modulation_frames=int(inputs.shape[1]) if params.front == "modulation" else 0,
    )
    result = train_and_log(
        EXPERIMENT,
        module,
        datamodule,
        params,
        out_dir,
        MONITOR,
        MODE,
        dataset=(inputs, features_dir / f"{params.input}.npy"),
        servable=lambda best: best.branch,
        example=inputs[:2],
        extra={"input": params.input, "style_names": datamodule.style_names},
    )
    summary = {
        "best_val_map_at_10": result.best_score,
        "epochs": result.epochs,
        "steps": result.global_step,
    }
    write_json(metrics_path, summary)
    return summary
