"""Tiny synthetic signals with a known answer, at 22,050 Hz."""

from __future__ import annotations

from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SR = 22050


def sine(freq: float, seconds: float = 3.0, amplitude: float = 0.5, phase: float = 0.0) -> np.ndarray:
    """A pure tone at ``freq`` Hz, float32 at 22,050 Hz."""
    t = np.arange(int(seconds * SR)) / SR
    return (amplitude * np.sin(2 * np.pi * freq * t + phase)).astype(np.float32)


def harmonic_tone(f0: float, seconds: float = 3.0, harmonics: int = 12) -> np.ndarray:
    """A tone with ``harmonics`` partials falling as 1/k, like a bowed or sung note."""
    t = np.arange(int(seconds * SR)) / SR
    y = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, harmonics + 1))
    return (0.2 * y).astype(np.float32)


def click_track(bpm: float, seconds: float = 10.0) -> np.ndarray:
    """Short decaying noise bursts every beat at ``bpm``."""
    y = np.zeros(int(seconds * SR), dtype=np.float32)
    burst = np.random.default_rng(0).standard_normal(256).astype(np.float32) * np.exp(-np.arange(256) / 40)
    for onset in np.arange(0.0, seconds, 60.0 / bpm):
        start = int(onset * SR)
        end = min(start + burst.size, y.size)
        y[start:end] += burst[: end - start]
    return y
