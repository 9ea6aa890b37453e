"""``train_triplet`` stage: method B, the triplet style network, tracked in MLflow.

Outputs under ``models/triplet/``, as for ``train_match``.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L

from bgmfit.config import TrainTripletParams, load_params
from bgmfit.data.datamodules import TripletDataModule
from bgmfit.data.store import FeatureStore
from bgmfit.files import FEATURES, METRICS, write_json
from bgmfit.models.triplet_module import MODE, MONITOR, TripletModule
from bgmfit.networks import TRIPLET
from bgmfit.training import train_and_log


def main(params_path: Path) -> None:
    """``bgmfit train_triplet``: reads ``params.yaml: train_triplet``."""
    run(load_params("train_triplet", TrainTripletParams, params_path))


def run(
    params: TrainTripletParams,
    features_dir: Path = FEATURES,
    out_dir: Path = TRIPLET.folder,
    metrics_path: Path = METRICS / f"{TRIPLET.stage}.json",
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
        two_views=params.instance_weight > 0,
    )
    inputs = datamodule.features
    network = TripletModule.from_params(params, inputs.shape[1:])
    network.fit_timbre_centre(inputs[store.music("train")])
    result = train_and_log(
        TRIPLET,
        network,
        datamodule,
        params,
        MONITOR,
        MODE,
        dataset=(inputs, features_dir / f"{params.input}.npy"),
        example=inputs[:2],
        out_dir=out_dir,
        extra={"style_names": datamodule.style_names},
    )
    summary = {
        "best_val_map_at_10": result.best_score,
        "epochs": result.epochs,
        "steps": result.global_step,
    }
    write_json(metrics_path, summary)
    return summary
