"""The two networks, as every layer names them: stage, folder, registered model and gate metric."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bgmfit.files import METRICS, MODELS


@dataclass(frozen=True)
class Network:
    """One of the two networks.

    Attributes
    ----------
    key:
        ``match`` or ``triplet``: its training stage is ``train_<key>`` (also the MLflow
        experiment), its folder ``models/<key>/`` and its evaluation ``metrics/<key>.json``.
    name:
        The registered model in the MLflow registry (and the BentoML store).
    metric, metric_label:
        The gate metric, a key of the evaluation's metrics, and how the model card names it.

    What input a network reads is not here: method B's is a param, so every trained
    network carries its own (``input`` of the loaded module).
    """

    key: str
    name: str
    metric: str
    metric_label: str

    @property
    def stage(self) -> str:
        """The training stage, params section and MLflow experiment."""
        return f"train_{self.key}"

    @property
    def folder(self) -> Path:
        """``models/<key>/``: ``model.ckpt``, ``training.json`` and ``checkpoints/``."""
        return MODELS / self.key

    @property
    def evaluation(self) -> Path:
        """``metrics/<key>.json``: the held-out metrics the gate and the model card read."""
        return METRICS / f"{self.key}.json"


MATCH = Network("match", "bgmfit-match", "roc_auc", "test ROC-AUC (fits vs does not fit)")
TRIPLET = Network("triplet", "bgmfit-triplet", "map@10", "test style MAP@10")
NETWORKS = (MATCH, TRIPLET)
BY_NAME = {n.name: n for n in NETWORKS}
