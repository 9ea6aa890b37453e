"""The code MLflow logs with each bgmfit network (models-from-code) and runs to load it as a pyfunc."""

from pathlib import Path

import mlflow
import numpy as np

from bgmfit.models.export import load_network
from bgmfit.tracking.logged import ARTIFACT, predict


class NetworkPyfunc(mlflow.pyfunc.PythonModel):
    """MLflow's view of a bgmfit network: numpy in, numpy out (see :func:`bgmfit.tracking.logged.predict`)."""

    def load_context(self, context):
        self.network = load_network(Path(context.artifacts[ARTIFACT]))

    # The hint only stops MLflow from asking for one; the logged signature says what it takes.
    def predict(self, context, model_input: np.ndarray, params=None) -> np.ndarray:
        return predict(self.network, np.asarray(model_input, dtype=np.float32))


mlflow.models.set_model(NetworkPyfunc())
