"""Timbre: MFCCs with their deltas."""

from __future__ import annotations

import numpy as np

from bgmfit.features.pooling import pool
from bgmfit.features.spectrum import Spectrum, mfcc


def columns(n_mfcc: int) -> list[str]:
    """Column names: MFCC means, MFCC standard deviations, delta standard deviations."""
    return (
        [f"mfcc{i}_mean" for i in range(n_mfcc)]
        + [f"mfcc{i}_std" for i in range(n_mfcc)]
        + [f"mfcc{i}_delta_std" for i in range(n_mfcc)]
    )


def timbre(spec: Spectrum, bounds: list[tuple[int, int]], n_mfcc: int) -> np.ndarray:
    """Per segment: the mean and spread of each MFCC, and the spread of its frame-to-frame delta.

    The mean of a delta is near zero over any stretch of audio, so its spread is
    what carries information (how fast the timbre moves).

    Returns
    -------
    numpy.ndarray
        ``(n_segments, 3 * n_mfcc)``.
    """
    coefficients = mfcc(spec, n_mfcc)
    deltas = np.gradient(coefficients, axis=0) if spec.n_frames > 1 else np.zeros_like(coefficients)
    return np.hstack(
        [pool(coefficients, bounds, "mean"), pool(coefficients, bounds, "std"), pool(deltas, bounds, "std")]
    )
