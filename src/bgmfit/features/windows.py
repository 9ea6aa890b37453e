"""A file of any length as a sequence of windows, each one network input long.

A window is ``n_segments * segment_seconds`` (10 s by default), what both networks read.
Windows start every ``window_hop_seconds`` from the start of the file; one more, ending
at the file's end, covers the tail, so no second of the file goes unheard. A file
shorter than one window is one window, zero-padded. Past ``max_windows`` the windows are
spread evenly from the start to the end instead, so that an hour-long episode costs what
``max_windows`` clips cost.

Each window is analysed by :func:`~bgmfit.features.fusion.analyse`, and so levelled on
its own, exactly as every training clip is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bgmfit.config import FeaturesParams
from bgmfit.features.fusion import analyse


@dataclass(frozen=True)
class TrackWindows:
    """Unnormalised features of every window of one file.

    Attributes
    ----------
    fused:
        ``(windows, n_segments, n_columns)`` float32 (method A).
    mfcc_frames:
        ``(windows, frames_n, frames_n_mfcc)`` float32 (method B).
    offsets:
        ``(windows,)`` float32: where each window starts in the file, seconds.
    duration:
        The file's length, seconds.
    """

    fused: np.ndarray
    mfcc_frames: np.ndarray
    offsets: np.ndarray
    duration: float


def window_starts(n_samples: int, params: FeaturesParams) -> np.ndarray:
    """The first sample of each window of a waveform of ``n_samples`` (see the module doc)."""
    length = int(round(params.clip_seconds * params.sample_rate))
    hop = max(1, int(round(params.window_hop_seconds * params.sample_rate)))
    last = n_samples - length
    if last <= 0:
        return np.zeros(1, dtype=np.int64)
    starts = np.arange(0, last + 1, hop, dtype=np.int64)
    if starts[-1] < last:
        starts = np.append(starts, last)
    if starts.size > params.max_windows:
        starts = np.round(np.linspace(0, last, params.max_windows)).astype(np.int64)
    return starts


def analyse_windows(y: np.ndarray, params: FeaturesParams) -> TrackWindows:
    """Every window's features of a mono float32 waveform at ``params.sample_rate``."""
    y = np.asarray(y, dtype=np.float32)
    length = int(round(params.clip_seconds * params.sample_rate))
    starts = window_starts(y.size, params)
    tracks = [analyse(y[s : s + length], params) for s in starts]
    return TrackWindows(
        fused=np.stack([t.fused for t in tracks]),
        mfcc_frames=np.stack([t.mfcc_frames for t in tracks]),
        offsets=(starts / params.sample_rate).astype(np.float32),
        duration=y.size / params.sample_rate,
    )
