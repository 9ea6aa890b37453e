"""Fuse the feature dimensions into one (segments x columns) matrix per track.

:func:`analyse` computes one STFT and every dimension from it, unnormalised.
:class:`NormStats` z-scores each column with statistics of the training split
only, then scales each dimension by 1/sqrt(its width), so that a dimension with
60 columns (timbre) and one with 4 (energy) weigh the same in a distance.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bgmfit.audio import normalise_loudness
from bgmfit.config import FeaturesParams
from bgmfit.errors import BgmfitError
from bgmfit.features import energy, prosody, rhythm, spectral, timbre, tonality
from bgmfit.features.spectrum import Spectrum, compute_spectrum, mfcc, segment_bounds
from bgmfit.files import write_json

_STD_FLOOR = 1e-6


@dataclass(frozen=True)
class Dimension:
    """One named feature dimension and the columns it contributes."""

    name: str
    columns: list[str]
    compute: Callable[[Spectrum, list[tuple[int, int]]], np.ndarray]


def dimensions(params: FeaturesParams) -> list[Dimension]:
    """The fused dimensions, in column order."""
    return [
        Dimension("timbre", timbre.columns(params.n_mfcc), lambda s, b: timbre.timbre(s, b, params.n_mfcc)),
        Dimension("spectral", spectral.COLUMNS, spectral.spectral),
        Dimension("tonality", tonality.COLUMNS, tonality.tonality),
        Dimension("rhythm", rhythm.COLUMNS, rhythm.rhythm),
        Dimension("energy", energy.COLUMNS, energy.energy),
        Dimension("prosody", prosody.COLUMNS, prosody.prosody),
    ]


@dataclass(frozen=True)
class TrackFeatures:
    """Unnormalised features of one track.

    Attributes
    ----------
    fused:
        ``(n_segments, n_columns)`` float32 (method A).
    mfcc_frames:
        ``(frames_n, frames_n_mfcc)`` float32, the first frames' MFCCs (method B).
    """

    fused: np.ndarray
    mfcc_frames: np.ndarray


def fit_length(y: np.ndarray, params: FeaturesParams) -> np.ndarray:
    """Crop or zero-pad a waveform to exactly the analysed length, ``n_segments * segment_seconds``."""
    n = int(round(params.clip_seconds * params.sample_rate))
    return y[:n] if y.size >= n else np.pad(y, (0, n - y.size))


def analyse(y: np.ndarray, params: FeaturesParams) -> TrackFeatures:
    """Compute every feature of one waveform from a single STFT.

    Parameters
    ----------
    y:
        Mono float32 at ``params.sample_rate``; cropped or zero-padded to the analysed length,
        then brought to ``params.loudness_lufs``, so that the features do not carry the file's gain.
    params:
        The ``features`` params.
    """
    y = fit_length(np.asarray(y, dtype=np.float32), params)
    y = normalise_loudness(y, params.sample_rate, params.loudness_lufs)
    spec = compute_spectrum(y, params.sample_rate, params.n_fft, params.hop_length, params.n_mels)
    frames_per_segment = params.segment_seconds * params.sample_rate / params.hop_length
    bounds = segment_bounds(spec.n_frames, frames_per_segment, params.n_segments)
    fused = np.hstack([d.compute(spec, bounds) for d in dimensions(params)]).astype(np.float32)
    frames = mfcc(spec, params.frames_n_mfcc)[: params.frames_n].astype(np.float32)
    return TrackFeatures(fused=fused, mfcc_frames=frames)


@dataclass(frozen=True)
class NormStats:
    """Per-column normalisation statistics, fitted on the training split only.

    Attributes
    ----------
    dimensions:
        ``(name, first column, end column)`` per dimension of the fused matrix.
    columns:
        Every fused column's name.
    fused_mean, fused_std:
        Per fused column, over every segment of every training track.
    frames_mean, frames_std:
        Per MFCC coefficient, over every frame of every training track.
    """

    dimensions: list[tuple[str, int, int]]
    columns: list[str]
    fused_mean: np.ndarray
    fused_std: np.ndarray
    frames_mean: np.ndarray
    frames_std: np.ndarray

    @classmethod
    def fit(cls, params: FeaturesParams, fused: np.ndarray, frames: np.ndarray) -> NormStats:
        """Fit on training tracks only.

        ``fused`` is (n, segments, columns) and ``frames`` is (n, frames_n, n_mfcc).
        """
        dims, start = [], 0
        for d in dimensions(params):
            dims.append((d.name, start, start + len(d.columns)))
            start += len(d.columns)
        flat_fused = fused.reshape(-1, fused.shape[-1]).astype(np.float64)
        flat_frames = frames.reshape(-1, frames.shape[-1]).astype(np.float64)
        return cls(
            dimensions=dims,
            columns=[c for d in dimensions(params) for c in d.columns],
            fused_mean=flat_fused.mean(axis=0).astype(np.float32),
            fused_std=np.maximum(flat_fused.std(axis=0), _STD_FLOOR).astype(np.float32),
            frames_mean=flat_frames.mean(axis=0).astype(np.float32),
            frames_std=np.maximum(flat_frames.std(axis=0), _STD_FLOOR).astype(np.float32),
        )

    def normalise_fused(self, fused: np.ndarray) -> np.ndarray:
        """z-score each column, then scale each dimension by 1/sqrt(its width). Any leading shape."""
        z = (fused - self.fused_mean) / self.fused_std
        for _, start, end in self.dimensions:
            z[..., start:end] /= np.sqrt(end - start)
        return z.astype(np.float32)

    def normalise_frames(self, frames: np.ndarray) -> np.ndarray:
        """z-score each MFCC coefficient. Any leading shape."""
        return ((frames - self.frames_mean) / self.frames_std).astype(np.float32)

    def save(self, path: Path) -> None:
        """Write as JSON."""
        payload = {
            "dimensions": [{"name": n, "start": s, "end": e} for n, s, e in self.dimensions],
            "columns": self.columns,
            "fused_mean": self.fused_mean.tolist(),
            "fused_std": self.fused_std.tolist(),
            "frames_mean": self.frames_mean.tolist(),
            "frames_std": self.frames_std.tolist(),
        }
        write_json(path, payload)

    @classmethod
    def load(cls, path: Path) -> NormStats:
        """Read what :meth:`save` wrote; a torn or foreign file is a :class:`BgmfitError` naming it."""
        try:
            payload = json.loads(path.read_text())
            return cls(
                dimensions=[(d["name"], d["start"], d["end"]) for d in payload["dimensions"]],
                columns=list(payload["columns"]),
                **{
                    k: np.asarray(payload[k], dtype=np.float32)
                    for k in ("fused_mean", "fused_std", "frames_mean", "frames_std")
                },
            )
        except (ValueError, KeyError, TypeError) as exc:  # JSONDecodeError is a ValueError
            reason = f"no {exc.args[0]!r}" if isinstance(exc, KeyError) else str(exc)
            raise BgmfitError(
                f"{path}: not valid normalisation statistics ({reason}); rerun the features stage"
            ) from None
