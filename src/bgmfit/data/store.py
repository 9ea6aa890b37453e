"""Read the ``features`` stage's outputs: arrays aligned with the manifest rows."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bgmfit.data.manifest import FOREGROUND_ROLES, ManifestRow, read_manifest
from bgmfit.errors import BgmfitError

FEATURES_DIR = Path("data/features")


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
    """

    fused: np.ndarray
    mfcc_frames: np.ndarray
    tracks: list[ManifestRow]

    @classmethod
    def load(cls, folder: Path = FEATURES_DIR) -> FeatureStore:
        """Load ``fused.npy``, ``mfcc_frames.npy`` and ``tracks.csv`` from ``folder``."""
        needed = [folder / n for n in ("fused.npy", "mfcc_frames.npy", "tracks.csv")]
        missing = [str(p) for p in needed if not p.is_file()]
        if missing:
            raise BgmfitError(
                f"missing {', '.join(missing)}; run the features stage first (dvc repro features)"
            )
        fused = np.load(folder / "fused.npy")
        frames = np.load(folder / "mfcc_frames.npy")
        tracks = read_manifest(folder / "tracks.csv")
        if not fused.shape[0] == frames.shape[0] == len(tracks):
            raise BgmfitError(f"{folder}: arrays and tracks.csv disagree in length; rerun the features stage")
        return cls(fused, frames, tracks)

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

    def catalogue(self, split: str | None = None) -> np.ndarray:
        """Rows of music for method B: BGM and stand-alone music tracks."""
        return self.select(split, ("bgm", "music"))
