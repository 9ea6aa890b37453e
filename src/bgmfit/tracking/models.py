"""Log a trained network to its MLflow run: the model with a signature and an input example."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import torch
from mlflow.models import infer_signature

import bgmfit


def log_torch_model(model: torch.nn.Module, example: np.ndarray) -> str:
    """Log ``model`` (in eval mode, on the CPU) under the name ``model`` of the active run.

    The signature is inferred from ``example`` and the model's output on it. The
    model is pickled rather than exported (MLflow's default ``pt2``), so that
    loading it gives back the bgmfit module with its towers and head, which the
    catalogue index and the service need; the ``bgmfit`` package travels with the
    model (``code_paths``) so that it loads where bgmfit is not installed.

    Returns
    -------
    str
        The logged model's URI (``models:/<model id>``).
    """
    model = model.to("cpu").eval()
    with torch.no_grad():
        output = model(torch.from_numpy(example)).numpy()
    info = mlflow.pytorch.log_model(
        model,
        name="model",
        signature=infer_signature(example, output),
        input_example=example,
        code_paths=[str(Path(bgmfit.__file__).parent)],
        serialization_format="pickle",
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"numpy=={np.__version__}"],
    )
    return info.model_uri
