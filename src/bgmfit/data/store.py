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
#: Each window's track and start (seconds), and each track's duration (seconds).
WINDOW_FILES = ("window_track.npy", "window_offset.npy", "duration.npy")
#: Augmented copies of training tracks: their fused matrices, MFCC frames, and whose copies they are.
COPY_FILES = ("copies_fused.npy", "copies_mfcc_frames.npy", "copies_track.npy")


@dataclass(frozen=True)
class FeatureStore:
    """Normalised features of every track and of every window of it.

    Training and evaluation read one window per track (its first: a 10 s demo clip is exactly
    one); the catalogue index reads them all.

    Attributes
    ----------
    fused:
        ``(tracks, segments, columns)`` float32, method A's input: each track's first window.
    mfcc_frames:
        ``(tracks, frames_n, n_mfcc)`` float32, method B's input: each track's first window.
    tracks:
        Manifest rows in array order.
    columns:
        The name of each fused column, from ``norm_stats.json``.
    window_fused, window_frames:
        The same, for every window of every track, track by track.
    window_track:
        ``(windows,)``: each window's track, a row of ``tracks``.
    window_offset:
        ``(windows,)``: where each window starts in its track, seconds.
    duration:
        ``(tracks,)``: each track's length, seconds.
    copies_fused, copies_frames, copies_track:
        The first window of each augmented copy of a training track, and its track's row.
    """

    fused: np.ndarray
    mfcc_frames: np.ndarray
    tracks: list[ManifestRow]
    columns: list[str]
    window_fused: np.ndarray
    window_frames: np.ndarray
    window_track: np.ndarray
    window_offset: np.ndarray
    duration: np.ndarray
    copies_fused: np.ndarray
    copies_frames: np.ndarray
    copies_track: np.ndarray

    @classmethod
    def load(cls, folder: Path = FEATURES) -> FeatureStore:
        """Load what the ``features`` stage wrote to ``folder``."""
        names = ("fused.npy", "mfcc_frames.npy", *WINDOW_FILES, *COPY_FILES, "tracks.csv", "norm_stats.json")
        missing = [str(folder / n) for n in names if not (folder / n).is_file()]
        if missing:
            raise BgmfitError(
                f"missing {', '.join(missing)}; run the features stage first (dvc repro features)"
            )
        fused = _load_array(folder / "fused.npy")
        frames = _load_array(folder / "mfcc_frames.npy")
        tracks = read_manifest(folder / "tracks.csv")
        columns = NormStats.load(folder / "norm_stats.json").columns
        track, offset, duration = _load_windows(folder, len(tracks))
        if not fused.shape[0] == frames.shape[0] == track.size:
            raise BgmfitError(
                f"{folder}: the feature arrays and window_track.npy disagree in length; "
                "rerun the features stage"
            )
        if len(columns) != fused.shape[2]:
            raise BgmfitError(
                f"{folder}: norm_stats.json names {len(columns)} columns but fused.npy has "
                f"{fused.shape[2]}; rerun the features stage"
            )
        copies_fused, copies_frames = (_load_array(folder / name) for name in COPY_FILES[:2])
        copies_track = np.load(folder / COPY_FILES[2]).astype(np.int64)
        if not copies_fused.shape[0] == copies_frames.shape[0] == copies_track.size or (
            copies_track.size and not 0 <= copies_track.min() <= copies_track.max() < len(tracks)
        ):
            raise BgmfitError(f"{folder}: the augmented copies' arrays disagree; rerun the features stage")
        first = np.searchsorted(track, np.arange(len(tracks)))
        one_each = first.size == track.size  # then the first windows are all of them: no copy
        return cls(
            fused=fused if one_each else fused[first],
            mfcc_frames=frames if one_each else frames[first],
            tracks=tracks,
            columns=columns,
            window_fused=fused,
            window_frames=frames,
            window_track=track,
            window_offset=offset,
            duration=duration,
            copies_fused=copies_fused,
            copies_frames=copies_frames,
            copies_track=copies_track,
        )

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

    def window_inputs(self, kind: str) -> np.ndarray:
        """:meth:`inputs` for every window of every track."""
        return self.window_frames if self.inputs(kind) is self.mfcc_frames else self.window_fused

    def training_inputs(self, kind: str) -> np.ndarray:
        """:meth:`inputs`, then the augmented copies' (rows past ``len(tracks)``, see :meth:`pick_copies`)."""
        copies = self.copies_frames if self.inputs(kind) is self.mfcc_frames else self.copies_fused
        return np.concatenate([self.inputs(kind), copies]) if len(copies) else self.inputs(kind)

    def pick_copies(self, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Each track row as itself or one of its copies, evenly: rows of :meth:`training_inputs`."""
        rows = np.asarray(rows, dtype=np.int64)
        if self.copies_track.size == 0:
            return rows
        copy, counts = self._copies_of(rows)
        return copy(np.floor(rng.random(rows.size) * (counts + 1)).astype(np.int64))

    def two_views(self, rows: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Two different copies of each track row, as rows of :meth:`training_inputs`.

        The first is :meth:`pick_copies`' (drawn the same way); the second is the original
        where the first is a copy, and one of its copies, evenly, where the first is the
        original. A track without copies is its own second view.
        """
        rows = np.asarray(rows, dtype=np.int64)
        if self.copies_track.size == 0:
            return rows, rows
        copy, counts = self._copies_of(rows)
        first = np.floor(rng.random(rows.size) * (counts + 1)).astype(np.int64)
        second = np.where(first > 0, 0, np.minimum(counts, 1 + np.floor(rng.random(rows.size) * counts)))
        return copy(first), copy(second.astype(np.int64))

    def _copies_of(self, rows: np.ndarray):
        """``(copy, counts)``: ``copy(choice)`` maps choice 1..counts to that copy, 0 to the track itself."""
        order = np.argsort(self.copies_track, kind="stable")
        owned = self.copies_track[order]
        starts = np.searchsorted(owned, rows, side="left")
        counts = np.searchsorted(owned, rows, side="right") - starts

        def copy(choice: np.ndarray) -> np.ndarray:
            picked = order[np.minimum(starts + choice - 1, owned.size - 1)] + len(self.tracks)
            return np.where(choice > 0, picked, rows)

        return copy, counts

    def windows_of(self, rows: np.ndarray) -> np.ndarray:
        """The windows of the tracks in ``rows``, track by track in the order of ``rows``."""
        return windows_of(self.window_track, rows)[0]


def windows_of(window_track: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The windows of the tracks in ``rows``, and for each the position in ``rows`` of its track.

    ``window_track`` gives each window's track, track by track (as the ``features`` stage and
    the index write them).
    """
    rows = np.asarray(rows, dtype=np.int64)
    starts = np.searchsorted(window_track, rows, side="left")
    counts = np.searchsorted(window_track, rows, side="right") - starts
    owner = np.repeat(np.arange(rows.size), counts)
    # Each window is its track's first window plus its place among that track's windows.
    place = np.arange(owner.size) - np.repeat(np.cumsum(counts) - counts, counts)
    return (np.repeat(starts, counts) + place).astype(np.int64), owner


def _load_windows(folder: Path, n_tracks: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each window's track and offset and each track's duration, checked against the tracks."""
    try:
        track, offset, duration = (np.load(folder / name) for name in WINDOW_FILES)
    except (ValueError, OSError, EOFError) as exc:
        raise BgmfitError(f"{folder}: not a readable window list ({exc}); rerun the features stage") from None
    steps = np.diff(track)
    ordered = track.size > 0 and track[0] == 0 and np.all((steps == 0) | (steps == 1))
    if not ordered or track[-1] != n_tracks - 1 or offset.shape != track.shape or duration.size != n_tracks:
        raise BgmfitError(
            f"{folder}: the windows do not cover the {n_tracks} tracks of tracks.csv in order; "
            "rerun the features stage"
        )
    return track.astype(np.int64), offset.astype(np.float32), duration.astype(np.float32)


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
