"""Pool per-frame values into per-segment statistics."""

from __future__ import annotations

import numpy as np


def pool(values: np.ndarray, bounds: list[tuple[int, int]], stat: str) -> np.ndarray:
    """Reduce frames ``[start, end)`` of each segment with ``stat`` (``mean``, ``std`` or ``max``).

    Parameters
    ----------
    values:
        ``(n_frames,)`` or ``(n_frames, k)``.
    bounds:
        Segment frame ranges from :func:`bgmfit.features.spectrum.segment_bounds`.

    Returns
    -------
    numpy.ndarray
        ``(n_segments,)`` or ``(n_segments, k)``, float32.
    """
    reduce = {"mean": np.mean, "std": np.std, "max": np.max}[stat]
    return np.stack([reduce(values[s:e], axis=0) for s, e in bounds]).astype(np.float32)
