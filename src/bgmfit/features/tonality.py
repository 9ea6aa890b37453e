"""Tonality: chroma, and how strongly and in which mode it implies a key."""

from __future__ import annotations

from functools import cache

import librosa
import numpy as np

from bgmfit.features.pooling import pool
from bgmfit.features.spectrum import Spectrum

PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
COLUMNS = [f"chroma_{p}" for p in PITCH_CLASSES] + ["key_strength", "mode"]

# Krumhansl & Kessler (1982) probe-tone ratings for C major and C minor.
MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


@cache
def _chroma_filterbank(sample_rate: int, n_fft: int) -> np.ndarray:
    # tuning=0: librosa would otherwise estimate tuning per call, which costs more
    # than the chroma itself; the corpus and most produced music is at A440.
    return np.ascontiguousarray(librosa.filters.chroma(sr=sample_rate, n_fft=n_fft, tuning=0.0).T)


def chroma(spec: Spectrum) -> np.ndarray:
    """``(n_frames, 12)`` chroma from the power spectrum, each frame scaled to a peak of 1."""
    energy = spec.power @ _chroma_filterbank(spec.sample_rate, spec.n_fft)
    return energy / np.maximum(energy.max(axis=1, keepdims=True), 1e-10)


@cache
def _key_profiles() -> np.ndarray:
    rows = [np.roll(MAJOR_PROFILE, k) for k in range(12)] + [np.roll(MINOR_PROFILE, k) for k in range(12)]
    profiles = np.array(rows)
    profiles = profiles - profiles.mean(axis=1, keepdims=True)
    return profiles / np.linalg.norm(profiles, axis=1, keepdims=True)


def key_correlations(chroma_profile: np.ndarray) -> np.ndarray:
    """Pearson correlation of a 12-bin chroma profile with the 24 keys (12 major, then 12 minor)."""
    centred = chroma_profile - chroma_profile.mean()
    norm = np.linalg.norm(centred)
    return _key_profiles() @ centred / norm if norm > 0 else np.zeros(24)


def tonality(spec: Spectrum, bounds: list[tuple[int, int]]) -> np.ndarray:
    """Per segment: mean chroma, key strength (best key correlation) and mode
    (best major minus best minor correlation).

    Returns
    -------
    numpy.ndarray
        ``(n_segments, 14)``, columns as :data:`COLUMNS`.
    """
    profiles = pool(chroma(spec), bounds, "mean")
    keys = np.stack([key_correlations(p) for p in profiles])
    key_strength = keys.max(axis=1)
    mode = keys[:, :12].max(axis=1) - keys[:, 12:].max(axis=1)
    return np.hstack([profiles, key_strength[:, None], mode[:, None]]).astype(np.float32)
