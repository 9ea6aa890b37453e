"""The music a service recommends from: the demo corpus, or any folder of audio.

Training data and the served library are different things. The ``index`` stage embeds a
*library* with the ``@champion`` versions and never touches training:

- ``index.library: demo``: the demo corpus's BGM and music tracks (the ``features`` stage's);
- ``index.library: dir``: every audio file under ``index.library_dir``, found by its suffix
  (:data:`AUDIO_SUFFIXES`) and judged by its content. A track's id is its path relative to
  the folder, so it stays the same from one build to the next.

A manifest is optional (``index.library_manifest``, default ``<library_dir>/library.csv`` when
that file exists). It adds metadata by ``path``, the only required column: ``title``,
``artist``, ``licence``, ``style`` and ``tags``, a ``;``-separated list of free tags (mood,
tempo feel, instrumentation). A file the manifest does not name is still a track.

Every library track is a candidate for both methods: a BGM for method A, music for method B.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from bgmfit.config import FeaturesParams
from bgmfit.data.store import FeatureStore, windows_of
from bgmfit.features.extract import extract_many
from bgmfit.features.fusion import NormStats
from bgmfit.index.catalogue import LibraryFeatures, LibraryTrack

#: Suffixes of the files a library folder's listing takes as audio (any case); the content decides.
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".aac", ".mp4", ".webm")
#: Columns a library manifest may have; only ``path`` is required.
MANIFEST_COLUMNS = ("path", "title", "artist", "licence", "style", "tags")
#: Where a library folder's manifest is looked for when ``index.library_manifest`` is not set.
DEFAULT_MANIFEST = "library.csv"


@dataclass(frozen=True)
class Problem:
    """A file or manifest line that could not be used: ``where`` (path, or path:line) and why."""

    where: str
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


@dataclass
class Scan:
    """What a library folder holds: its tracks, in path order, and what was refused."""

    folder: Path
    manifest: Path | None
    tracks: list[LibraryTrack] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def scan_folder(folder: Path, manifest: Path | None = None) -> Scan:
    """List a library folder's audio files and join its manifest's metadata to them.

    Parameters
    ----------
    folder:
        The library folder; searched recursively, hidden files and folders left out.
    manifest:
        Its manifest CSV; ``None`` takes ``folder/library.csv`` when there is one.

    Returns
    -------
    Scan
        Tracks, and the manifest lines that could not be used (each by ``path:line``). A bad
        line leaves its file in the library, without metadata. Files are not decoded here.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder} is not a folder")
    if manifest is None and (folder / DEFAULT_MANIFEST).is_file():
        manifest = folder / DEFAULT_MANIFEST
    paths = sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file()
        and p.suffix.lower() in AUDIO_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    scan = Scan(folder, manifest)
    metadata = _read_manifest(manifest, set(paths), scan.problems) if manifest else {}
    scan.tracks = [LibraryTrack(track_id=p, path=p, **metadata.get(p, {})) for p in paths]
    return scan


def _read_manifest(manifest: Path, paths: set[str], problems: list[Problem]) -> dict[str, dict]:
    """Metadata by path from a library manifest; each unusable line is added to ``problems``."""
    if not manifest.is_file():
        problems.append(Problem(str(manifest), "no such manifest"))
        return {}
    try:
        with open(manifest, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            unknown = [c for c in header if c not in MANIFEST_COLUMNS]
            if "path" not in header or unknown:
                reason = (
                    "no path column" if "path" not in header else f"unknown column(s) {', '.join(unknown)}"
                )
                problems.append(
                    Problem(f"{manifest}:1", f"{reason}; the columns are {', '.join(MANIFEST_COLUMNS)}")
                )
                return {}
            rows = list(enumerate(reader, start=2))
    except (UnicodeDecodeError, csv.Error) as exc:
        problems.append(Problem(str(manifest), f"not a readable CSV file ({exc})"))
        return {}
    out: dict[str, dict] = {}
    for line, row in rows:
        where = f"{manifest}:{line}"
        if None in row:
            problems.append(Problem(where, f"more fields than the {len(header)} columns"))
            continue
        path = (row.get("path") or "").strip()
        normal = PurePosixPath(path)
        if not path:
            problems.append(Problem(where, "path is empty"))
        elif normal.is_absolute() or ".." in normal.parts:
            problems.append(Problem(where, f"path {path!r} must be relative to the library folder"))
        elif path not in paths:
            problems.append(Problem(where, f"path {path!r} is not an audio file of the library folder"))
        elif path in out:
            problems.append(Problem(where, f"path {path!r} is listed twice"))
        else:
            tags = tuple(t.strip() for t in (row.get("tags") or "").split(";") if t.strip())
            text = {c: (row.get(c) or "").strip() for c in ("title", "artist", "licence", "style")}
            out[path] = text | {"tags": tags}
    return out


def demo_library(store: FeatureStore) -> LibraryFeatures:
    """The demo corpus's BGM and music tracks (all splits), from the ``features`` stage's store."""
    rows = store.music()
    windows, owner = windows_of(store.window_track, rows)
    tracks = [
        LibraryTrack(
            track_id=t.track_id,
            path=t.path,
            role=t.role,
            style=t.style,
            licence=t.licence,
            work_id=t.work_id,
            split=t.split,
        )
        for t in (store.tracks[i] for i in rows)
    ]
    return LibraryFeatures(
        tracks,
        store.window_fused[windows],
        store.window_frames[windows],
        owner.astype(np.int64),
        store.window_offset[windows].astype(np.float32),
        store.duration[rows].astype(np.float32),
    )


def folder_library(
    scan: Scan, params: FeaturesParams, norm: NormStats, workers: int
) -> tuple[LibraryFeatures | None, list[Problem], int]:
    """Analyse every file of a scanned folder (cached by content), normalised as the champions' inputs.

    Returns
    -------
    tuple
        The library (``None`` when no file could be decoded), each file that could not be
        (by path), and how many files were analysed now rather than read from the cache.
    """
    paths = [str(scan.folder / t.path) for t in scan.tracks]
    results = list(extract_many(paths, params, workers, desc="library"))
    failed = [Problem(r.path, r.error) for r in results if r.error]
    analysed = sum(1 for r in results if r.features is not None and not r.cached)
    kept = [(t, r.features) for t, r in zip(scan.tracks, results, strict=True) if r.features is not None]
    if not kept:
        return None, failed, analysed
    return (
        LibraryFeatures(
            [t for t, _ in kept],
            norm.normalise_fused(np.concatenate([f.fused for _, f in kept])),
            norm.normalise_frames(np.concatenate([f.mfcc_frames for _, f in kept])),
            np.concatenate([np.full(len(f.offsets), i, np.int64) for i, (_, f) in enumerate(kept)]),
            np.concatenate([f.offsets for _, f in kept]).astype(np.float32),
            np.array([f.duration for _, f in kept], dtype=np.float32),
        ),
        failed,
        analysed,
    )
