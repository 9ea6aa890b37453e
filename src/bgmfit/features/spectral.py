"""Spectral shape: centroid, bandwidth, roll-off, flatness and octave-band contrast."""

from __future__ import annotations

import librosa
import numpy as np

from bgmfit.features.pooling import pool
from bgmfit.features.spectrum import Spectrum

ROLLOFF_SHARE = 0.85
CONTRAST_BANDS = 6
_EPS = 1e-10

COLUMNS = [
    "centroid_khz_mean",
    "centroid_khz_std",
    "bandwidth_khz_mean",
    "bandwidth_khz_std",
    "rolloff_khz_mean",
    "rolloff_khz_std",
    "flatness_mean",
    "flatness_std",
] + [f"contrast{i}_mean" for i in range(CONTRAST_BANDS + 1)]


def centroid_bandwidth(spec: Spectrum) -> tuple[np.ndarray, np.ndarray]:
    """Per frame: magnitude-weighted mean frequency and spread around it, both in Hz."""
    weight = spec.magnitude.sum(axis=1) + _EPS
    centroid = (spec.magnitude @ spec.freqs) / weight
    second = (spec.magnitude @ (spec.freqs**2)) / weight
    return centroid, np.sqrt(np.maximum(second - centroid**2, 0.0))


def rolloff(spec: Spectrum, share: float = ROLLOFF_SHARE) -> np.ndarray:
    """Per frame: the frequency in Hz below which ``share`` of the magnitude lies."""
    cumulative = np.cumsum(spec.magnitude, axis=1)
    index = (cumulative < share * cumulative[:, -1:]).sum(axis=1)
    return spec.freqs[np.minimum(index, spec.freqs.size - 1)]


def flatness(spec: Spectrum) -> np.ndarray:
    """Per frame: geometric over arithmetic mean of the power spectrum (1 = white noise, ~0 = a tone)."""
    power = np.maximum(spec.power, _EPS)
    return np.exp(np.mean(np.log(power), axis=1)) / np.mean(power, axis=1)


def spectral(spec: Spectrum, bounds: list[tuple[int, int]]) -> np.ndarray:
    """Per segment: mean and spread of centroid, bandwidth, roll-off (kHz) and flatness,
    and the mean peak-to-valley contrast (dB) of each octave band.

    Returns
    -------
    numpy.ndarray
        ``(n_segments, 15)``, columns as :data:`COLUMNS`.
    """
    centroid, bandwidth = centroid_bandwidth(spec)
    per_frame = np.stack(
        [centroid / 1000.0, bandwidth / 1000.0, rolloff(spec) / 1000.0, flatness(spec)], axis=1
    )
    contrast = librosa.feature.spectral_contrast(
        S=spec.magnitude.T, sr=spec.sample_rate, n_fft=spec.n_fft, n_bands=CONTRAST_BANDS
    ).T
    means, spreads = pool(per_frame, bounds, "mean"), pool(per_frame, bounds, "std")
    shape = np.stack([means, spreads], axis=2).reshape(len(bounds), -1)  # mean, std per measure
    return np.hstack([shape, pool(contrast, bounds, "mean")])
