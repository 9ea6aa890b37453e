"""Networks in MLflow: logged as weights plus config (a pyfunc from code), loaded back by ``models:/`` URI.

Each version's artefact ``artifacts/network/`` is a folder of
:mod:`bgmfit.models.export`: no pickled class, so a refactor never breaks a
registered version. MLflow's own pyfunc loader (``mlflow.pyfunc.load_model``,
``mlflow models serve``) runs ``pyfunc_network.py``, logged with the model,
which rebuilds the network from that folder too.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path

import lightning as L
import mlflow
import numpy as np
import torch
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature

import bgmfit
from bgmfit.errors import BgmfitError
from bgmfit.models.export import load_network, save_network
from bgmfit.models.match_module import MatchModule
from bgmfit.tracking.runs import use_tracking_store

ARTIFACT = "network"
#: The module MLflow runs to load a logged network (models-from-code), named so that it is logged by path.
PYFUNC_CODE = "bgmfit.tracking.pyfunc_network"


@torch.no_grad()
def predict(network: L.LightningModule, inputs: np.ndarray) -> np.ndarray:
    """What the logged model answers for ``inputs``.

    Method A takes ``(batch, 2, segments, columns)`` (foreground, BGM) pairs and gives their fit;
    method B takes ``(batch, frames, n_mfcc)`` (or fused) inputs and gives unit-length embeddings.
    """
    batch = torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32))
    pairs = isinstance(network, MatchModule)
    return (network(batch[:, 0], batch[:, 1]) if pairs else network(batch)).numpy()


def log_network(key: str, network: L.LightningModule, example: np.ndarray) -> tuple[str, str]:
    """Log ``network`` under the name ``model`` of the active run, with a signature and an input example.

    Returns
    -------
    tuple
        The logged model's URI (``models:/<model id>``) and the sha256 of its weights and config.
    """
    network = network.to("cpu").eval()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / ARTIFACT
        sha = save_network(key, network, folder)
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=importlib.util.find_spec(PYFUNC_CODE).origin,
            artifacts={ARTIFACT: str(folder)},
            signature=infer_signature(example, predict(network, example)),
            input_example=example,
            # bgmfit travels with the model, so that MLflow's loader works where it is not installed.
            code_paths=[str(Path(bgmfit.__file__).parent)],
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"numpy=={np.__version__}"],
        )
    return info.model_uri, sha


def network_folder(mlflow_model: Path) -> Path:
    """The saved network inside a downloaded MLflow model folder (as BentoML's store keeps it)."""
    return mlflow_model / "artifacts" / ARTIFACT


def load_version(name: str, version: str) -> L.LightningModule:
    """Load a registered version through ``models:/NAME/VERSION``, on the CPU, in eval mode.

    Raises
    ------
    BgmfitError
        If the version cannot be fetched, or was logged in a form this bgmfit does not load
        (the pickled modules before weights + config): a one-line message that says to retrain.
    """
    uri = f"models:/{name}/{version}"
    use_tracking_store()
    # MLflow's per-file download bar is noise in a command's output (75 lines per model).
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
        except (MlflowException, OSError) as exc:
            raise BgmfitError(f"cannot load {uri}: {' '.join(str(exc).split())}") from None
        if not network_folder(local).is_dir():
            raise BgmfitError(
                f"{uri} is a pickled module from before bgmfit logged weights and config, which this "
                "bgmfit no longer loads; retrain (dvc repro) so that a version in today's format replaces it"
            )
        return load_network(network_folder(local), uri)
