"""Read the ``features`` stage's outputs: arrays aligned with the manifest rows."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bgmfit.data.manifest import FOREGROUND_ROLES, ManifestRow, read_manifest
from bgmfit.errors import BgmfitError
from bgmfit.features.fusion import NormStats
from bgmfit.files import FEATURES

#: The arrays a network can read, by the name of their file (``<kind>.npy``).
INPUT_KINDS = ("fused", "mfcc_frames")


@dataclass(frozen=True)
class FeatureStore:
    """Normalised features of every track, row-aligned with ``tracks``.

    Attributes
    ----------
    fused:
        ``(tracks, segments, columns)`` float32, method A's input.
    mfcc_frames:
        ``(tracks, frames_n, n_mfcc)`` float32, method B's input.
    tracks:
        Manifest rows in array order.
    columns:
        The name of each fused column, from ``norm_stats.json``.
    """

    fused: np.ndarray
    mfcc_frames: np.ndarray
    tracks: list[ManifestRow]
    columns: list[str]

    @classmethod
    def load(cls, folder: Path = FEATURES) -> FeatureStore:
        """Load ``fused.npy``, ``mfcc_frames.npy``, ``tracks.csv`` and the column names from ``folder``."""
        needed = [folder / n for n in ("fused.npy", "mfcc_frames.npy", "tracks.csv", "norm_stats.json")]
        missing = [str(p) for p in needed if not p.is_file()]
        if missing:
            raise BgmfitError(
                f"missing {', '.join(missing)}; run the features stage first (dvc repro features)"
            )
        fused = _load_array(folder / "fused.npy")
        frames = _load_array(folder / "mfcc_frames.npy")
        tracks = read_manifest(folder / "tracks.csv")
        columns = NormStats.load(folder / "norm_stats.json").columns
        if not fused.shape[0] == frames.shape[0] == len(tracks):
            raise BgmfitError(f"{folder}: arrays and tracks.csv disagree in length; rerun the features stage")
        if len(columns) != fused.shape[2]:
            raise BgmfitError(
                f"{folder}: norm_stats.json names {len(columns)} columns but fused.npy has "
                f"{fused.shape[2]}; rerun the features stage"
            )
        return cls(fused, frames, tracks, columns)

    def select(self, split: str | None = None, roles: tuple[str, ...] | None = None) -> np.ndarray:
        """Row indices of the tracks in ``split`` (all when ``None``) with one of ``roles``."""
        return np.array(
            [
                i
                for i, t in enumerate(self.tracks)
                if (split is None or t.split == split) and (roles is None or t.role in roles)
            ],
            dtype=np.int64,
        )

    def foregrounds(self, split: str | None = None) -> np.ndarray:
        """Rows of foreground and narration tracks."""
        return self.select(split, FOREGROUND_ROLES)

    def bgms(self, split: str | None = None) -> np.ndarray:
        """Rows of BGM tracks (accompaniments that have a foreground)."""
        return self.select(split, ("bgm",))

    def music(self, split: str | None = None) -> np.ndarray:
        """Rows of music for method B: BGM and stand-alone music tracks."""
        return self.select(split, ("bgm", "music"))

    def inputs(self, kind: str) -> np.ndarray:
        """The array a network reads: ``fused`` (method A, or B on the fused matrix) or ``mfcc_frames``.

        Every network carries its kind (``input_kind``); this is the one place it becomes an array.
        """
        if kind not in INPUT_KINDS:
            raise BgmfitError(f"unknown network input {kind!r}; expected one of {', '.join(INPUT_KINDS)}")
        return getattr(self, kind)


def _load_array(path: Path) -> np.ndarray:
    """The ``(tracks, rows, columns)`` float array at ``path``, all finite, or a BgmfitError naming it."""
    try:
        array = np.load(path)
    except (ValueError, OSError, EOFError) as exc:  # torn, or not written by numpy
        raise BgmfitError(f"{path}: not a readable feature array ({exc}); rerun the features stage") from None
    if array.ndim != 3 or not np.issubdtype(array.dtype, np.floating):
        raise BgmfitError(
            f"{path}: expected a 3-d float array, got {array.dtype} of shape {array.shape}; "
            "rerun the features stage"
        )
    bad = int(array.size - np.count_nonzero(np.isfinite(array)))
    if bad:
        raise BgmfitError(f"{path}: {bad} value(s) are NaN or infinite; rerun the features stage")
    return array
