"""Energy and dynamics: RMS level and dynamic range."""

from __future__ import annotations

import numpy as np

from bgmfit.features.pooling import pool
from bgmfit.features.spectrum import Spectrum

COLUMNS = ["rms_mean", "rms_std", "rms_max", "dynamic_range_db"]
_FLOOR = 1e-5  # -100 dBFS: keeps log levels of digital silence finite


def energy(spec: Spectrum, bounds: list[tuple[int, int]]) -> np.ndarray:
    """Per segment: mean, spread and peak of frame RMS, and the spread between the
    loud (95th percentile) and quiet (5th percentile) frames in dB.

    Returns
    -------
    numpy.ndarray
        ``(n_segments, 4)``, columns as :data:`COLUMNS`.
    """
    rms = spec.rms
    level_db = 20.0 * np.log10(np.maximum(rms, _FLOOR))
    dynamic_range = [np.percentile(level_db[s:e], 95) - np.percentile(level_db[s:e], 5) for s, e in bounds]
    return np.column_stack(
        [
            pool(rms, bounds, "mean"),
            pool(rms, bounds, "std"),
            pool(rms, bounds, "max"),
            np.array(dynamic_range),
        ]
    ).astype(np.float32)
