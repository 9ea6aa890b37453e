"""Catalogue embeddings, cosine search (exact or FAISS HNSW), and the stamp that ties them to models.

An index folder holds:

- ``tracks.csv``: the library's tracks (:mod:`bgmfit.index.library`), in row order, with their
  metadata (``tags`` ``;``-separated) and each one's duration;
- ``window_track.npy``, ``window_offset.npy``: every window of every track (the track's row
  and where the window starts, seconds), track by track;
- ``match_deep.npy``: method A's BGM-tower deep feature of every window;
- ``triplet.npy``: method B's unit-length style embedding of every window;
- ``triplet.faiss``: an HNSW index over those, for catalogues past ``index.ann_threshold`` windows;
- ``features.json`` and ``norm_stats.json``: how to turn new audio into the models' inputs;
- ``stamp.json``: the registered model versions it was built from and the content hash of the rest.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from bgmfit.config import FeaturesParams, IndexParams, params_from_dict
from bgmfit.data.store import windows_of
from bgmfit.errors import BgmfitError, ConfigError
from bgmfit.features.fusion import NormStats
from bgmfit.files import write_json
from bgmfit.metrics import calibrated

TRACK_COLUMNS = (
    "track_id",
    "path",
    "role",
    "style",
    "title",
    "artist",
    "licence",
    "tags",
    "work_id",
    "split",
    "duration_seconds",
)
_HASHED = (
    "tracks.csv",
    "window_track.npy",
    "window_offset.npy",
    "match_deep.npy",
    "triplet.npy",
    "features.json",
    "norm_stats.json",
)
_ARRAYS = ("window_track", "window_offset", "match_deep", "triplet")


@dataclass(frozen=True)
class LibraryTrack:
    """One track of a library, with what its manifest row says about it."""

    track_id: str
    path: str  # relative to the library folder (demo: to data/raw), POSIX
    role: str = "bgm"  # demo: bgm or music, as the corpus says
    style: str = ""
    title: str = ""
    artist: str = ""
    licence: str = ""
    tags: tuple[str, ...] = ()
    work_id: str = ""  # demo only
    split: str = ""  # demo only


@dataclass(frozen=True)
class LibraryFeatures:
    """A library's tracks and the normalised features of every window of each, ready to embed."""

    tracks: list[LibraryTrack]
    fused: np.ndarray  # (windows, n_segments, n_columns)
    frames: np.ndarray  # (windows, frames_n, frames_n_mfcc)
    window_track: np.ndarray  # (windows,) each window's row in tracks, track by track
    window_offset: np.ndarray  # (windows,) where it starts, seconds
    duration: np.ndarray  # (tracks,) seconds

    def inputs(self, kind: str) -> np.ndarray:
        """Every window's input for a network that reads ``kind`` (``fused`` or ``mfcc_frames``)."""
        return self.frames if kind == "mfcc_frames" else self.fused


class CosineIndex:
    """Nearest neighbours by cosine distance among unit-length vectors.

    Exact (a matrix-vector product and a partial sort) unless built with
    ``ann=True``, which uses FAISS's HNSW graph on inner products.
    """

    def __init__(self, vectors: np.ndarray, hnsw=None, ef_search: int = 64) -> None:
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.hnsw = hnsw
        self.ef_search = ef_search

    @classmethod
    def build(cls, vectors: np.ndarray, params: IndexParams) -> CosineIndex:
        """Exact below ``params.ann_threshold`` vectors, FAISS HNSW from there on."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if len(vectors) < params.ann_threshold:
            return cls(vectors, ef_search=params.ef_search)
        import faiss

        hnsw = faiss.IndexHNSWFlat(vectors.shape[1], params.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = params.ef_construction
        hnsw.add(vectors)
        return cls(vectors, hnsw, params.ef_search)

    @property
    def kind(self) -> str:
        """``exact`` or ``hnsw``."""
        return "exact" if self.hnsw is None else "hnsw"

    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest rows for each query, nearest first.

        Parameters
        ----------
        queries:
            ``(q, dim)`` unit-length vectors.
        k:
            Neighbours per query (at most the index size).
        allowed:
            A bool per row: only those are searched (FAISS's ID selector for HNSW), so that
            ``k`` rows come back whenever ``k`` are allowed.

        Returns
        -------
        tuple
            ``(rows, cosine distances)``, each ``(q, k)``, distances ascending; HNSW pads a row
            it cannot fill with -1.
        """
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        k = min(k, len(self.vectors) if allowed is None else int(allowed.sum()))
        if k == 0:
            return np.zeros((len(queries), 0), np.int64), np.zeros((len(queries), 0), np.float32)
        if self.hnsw is not None:
            import faiss

            params = faiss.SearchParametersHNSW(efSearch=max(self.ef_search, k))
            if allowed is not None:
                bitmap = np.packbits(allowed, bitorder="little")
                params.sel = faiss.IDSelectorBitmap(len(allowed), faiss.swig_ptr(bitmap))
            similarity, rows = self.hnsw.search(queries, k, params=params)
            return rows, 1.0 - similarity
        similarity = queries @ self.vectors.T
        if allowed is not None:
            similarity[:, ~allowed] = -np.inf
        top = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(similarity, top, axis=1), axis=1, kind="stable")
        rows = np.take_along_axis(top, order, axis=1)
        return rows, 1.0 - np.take_along_axis(similarity, rows, axis=1)


def ann_recall(index: CosineIndex, queries: np.ndarray, k: int = 10, leave_out: bool = False) -> float:
    """recall@k of ``index``'s search against exact search over the same vectors.

    ``leave_out``: the queries are rows of the index (one window per sampled query) and each
    one's own row is left out of both answers, so that finding itself does not count.
    """
    exact = CosineIndex(index.vectors)
    extra = int(leave_out)
    truth, _ = exact.search(queries, k + extra)
    found, _ = index.search(queries, k + extra)
    if leave_out:
        own = exact.search(queries, 1)[0]
        truth = [[r for r in row if r != o][:k] for row, o in zip(truth, own[:, 0], strict=True)]
        found = [[r for r in row if r != o][:k] for row, o in zip(found, own[:, 0], strict=True)]
    hits = sum(len(set(t) & set(f)) for t, f in zip(truth, found, strict=True))
    return hits / (k * len(queries))


@dataclass
class Catalogue:
    """A loaded index folder: tracks, and the embeddings of every window of each."""

    tracks: list[dict[str, str]]
    window_track: np.ndarray  # (windows,) each window's row in tracks
    window_offset: np.ndarray  # (windows,) where it starts in its track, seconds
    match_deep: np.ndarray  # (windows, embed_dim), method A's BGM tower
    triplet: CosineIndex  # (windows, embed_dim), method B's style embeddings
    features: FeaturesParams
    norm_stats: NormStats
    stamp: dict

    def __post_init__(self) -> None:
        self.row_of = {t["track_id"]: i for i, t in enumerate(self.tracks)}
        self.styles = np.array([t["style"] for t in self.tracks], dtype=object)
        self.tags = [frozenset(x for x in t["tags"].split(";") if x) for t in self.tracks]
        self.style_names = frozenset(self.styles.tolist())  # what filters may name
        self.tag_names = frozenset().union(*self.tags)
        self.durations = np.array([float(t["duration_seconds"]) for t in self.tracks], dtype=np.float64)
        # Method A's calibration on the validation split (the index stage fits it for the champion).
        self.calibration = self.stamp.get("calibration")
        self.bgm_rows = np.array([i for i, t in enumerate(self.tracks) if t["role"] == "bgm"], dtype=np.int64)
        self._bgm_windows = self.windows_of(self.bgm_rows)  # once: every /recommend ranks them all

    def versions(self) -> dict[str, int]:
        """Registered model name -> the version the index was built from."""
        return {name: int(m["version"]) for name, m in self.stamp["models"].items()}

    def windows_of(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The windows of the tracks in ``rows``, and the position in ``rows`` of each one's track."""
        return windows_of(self.window_track, rows)

    @torch.no_grad()
    def fits(
        self, match_model, foreground: torch.Tensor, rows: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Method A's ``(fit, distance, window)`` of a query with each track of ``rows`` (default: every BGM).

        ``foreground`` holds the deep features of the query's windows. A BGM window's fit with
        the query is ``match_model.query_fit`` (the mean over the query's windows), calibrated by
        the index's isotonic map; a track's fit is its best window's, and that window is where an
        editor should start playing it.
        """
        windows, track = self._bgm_windows if rows is None else self.windows_of(rows)
        candidates = torch.from_numpy(self.match_deep[windows])
        fit = calibrated(match_model.query_fit(foreground, candidates).numpy(), self.calibration)
        distance = (
            (1.0 - torch.nn.functional.cosine_similarity(foreground[:, None], candidates[None], dim=2))
            .numpy()
            .mean(axis=0)
        )
        order = np.lexsort((-fit, track))
        best = order[np.searchsorted(track[order], np.arange(len(self.bgm_rows if rows is None else rows)))]
        return fit[best], distance[best], windows[best]

    def style_of(self, row: int) -> np.ndarray:
        """Method B's embedding of a whole catalogue track: its windows' mean, unit length."""
        return unit_mean(self.triplet.vectors[self.windows_of(np.array([row]))[0]])

    def nearest_tracks(
        self, vector: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> list[tuple[int, int, float]]:
        """The ``k`` tracks with a window nearest to ``vector``: ``(track row, window, cosine distance)``.

        A track's distance is its nearest window's, and that window is where to play it from.
        ``allowed`` (a bool per track) leaves the others out of the search, so that ``k`` come
        back whenever ``k`` tracks are allowed.
        """
        windows_allowed = None if allowed is None else allowed[self.window_track]
        total = len(self.triplet.vectors) if allowed is None else int(windows_allowed.sum())
        probe = min(total, k * 4)
        while True:
            windows, distances = self.triplet.search(vector, probe, windows_allowed)
            best: dict[int, tuple[int, float]] = {}
            for w, d in zip(windows[0], distances[0], strict=True):
                track = int(self.window_track[w])
                if w >= 0 and track not in best:
                    best[track] = (int(w), float(d))
            if len(best) >= k or probe >= total:
                break
            probe = min(total, probe * 4)
        return [(t, w, d) for t, (w, d) in list(best.items())[:k]]

    @classmethod
    def load(cls, folder: Path) -> Catalogue:
        """Load an index folder, checking that its content matches its stamp."""
        stamp_path = folder / "stamp.json"
        if not stamp_path.is_file():
            raise BgmfitError(f"no catalogue index in {folder}; build it with `dvc repro index`")
        stamp = json.loads(stamp_path.read_text())
        if content_hash(folder) != stamp["content_sha256"]:
            raise BgmfitError(f"{folder}: files differ from stamp.json's content hash; rebuild the index")
        features = _features_of(folder)
        with open(folder / "tracks.csv", newline="") as f:
            reader = csv.DictReader(f)
            tracks = list(reader)
        if tuple(reader.fieldnames or ()) != TRACK_COLUMNS:
            raise BgmfitError(
                f"{folder}/tracks.csv has other columns than this bgmfit writes; rebuild the index "
                "(dvc repro index)"
            )
        try:
            arrays = {name: np.load(folder / f"{name}.npy") for name in _ARRAYS}
        except FileNotFoundError as exc:
            raise BgmfitError(
                f"{folder}: no {Path(exc.filename).name}; the index was written by another bgmfit, "
                "rebuild it (dvc repro index)"
            ) from None
        hnsw = None
        if (folder / "triplet.faiss").is_file():
            import faiss

            hnsw = faiss.read_index(str(folder / "triplet.faiss"))
        return cls(
            tracks=tracks,
            window_track=arrays["window_track"],
            window_offset=arrays["window_offset"],
            match_deep=arrays["match_deep"],
            triplet=CosineIndex(arrays["triplet"], hnsw, int(stamp.get("ef_search", 64))),
            features=features,
            norm_stats=NormStats.load(folder / "norm_stats.json"),
            stamp=stamp,
        )


def _features_of(folder: Path) -> FeaturesParams:
    """How the index's features were computed; an index of another bgmfit (a key added or gone) is refused."""
    try:
        return params_from_dict(
            "features", FeaturesParams, json.loads((folder / "features.json").read_text())
        )
    except ConfigError as exc:
        raise BgmfitError(
            f"{folder}/features.json was written by another bgmfit ({exc}); "
            "rebuild the index (dvc repro index)"
        ) from None


def content_hash(folder: Path) -> str:
    """sha256 over the index's files (everything but the stamp itself)."""
    digest = hashlib.sha256()
    for name in (*_HASHED, "triplet.faiss"):
        path = folder / name
        if path.is_file():
            digest.update(name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


@torch.no_grad()
def build_catalogue(
    library: LibraryFeatures,
    match_model: torch.nn.Module,
    triplet_model: torch.nn.Module,
    champions: dict,
    features: FeaturesParams,
    norm_stats: Path,
    params: IndexParams,
    out: Path,
    source: dict,
) -> dict:
    """Embed every window of every library track with the champions.

    Parameters
    ----------
    library:
        The tracks and their windows' normalised features (:mod:`bgmfit.index.library`).
    match_model, triplet_model:
        The champion versions as loaded from the registry (method A and method B).
    champions:
        ``models/champions.json``: name -> ``{"version", "run_id", "weights_sha256"}``.
    source:
        What the library is (``{"library": "demo"}``, or the folder and what it refused), kept
        in the stamp and shown by ``/model-info``.

    Returns
    -------
    dict
        The stamp written to ``out/stamp.json``.
    """
    if not library.tracks:
        raise BgmfitError("the library is empty: no bgm or music track to index")
    every = np.arange(len(library.window_track))
    match_deep = _batched(
        lambda x: match_model.embed(x, "bgm"), library.inputs(match_model.input_kind), every
    )
    triplet = _batched(triplet_model, library.inputs(triplet_model.input_kind), every)
    index = CosineIndex.build(triplet, params)

    out.mkdir(parents=True, exist_ok=True)
    with open(out / "tracks.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(TRACK_COLUMNS)
        for track, duration in zip(library.tracks, library.duration, strict=True):
            row = asdict(track) | {
                "tags": ";".join(track.tags),
                "duration_seconds": f"{duration:.3f}",
            }
            writer.writerow([row[c] for c in TRACK_COLUMNS])
    np.save(out / "window_track.npy", library.window_track.astype(np.int64))
    np.save(out / "window_offset.npy", library.window_offset.astype(np.float32))
    np.save(out / "match_deep.npy", match_deep.astype(np.float32))
    np.save(out / "triplet.npy", triplet.astype(np.float32))
    if index.hnsw is not None:
        import faiss

        faiss.write_index(index.hnsw, str(out / "triplet.faiss"))
    write_json(out / "features.json", features.model_dump())
    (out / "norm_stats.json").write_bytes(norm_stats.read_bytes())
    recall = None
    if index.hnsw is not None:  # how far HNSW is from exact search on these very embeddings
        sample = np.random.default_rng(0).choice(len(triplet), size=min(500, len(triplet)), replace=False)
        recall = round(ann_recall(index, triplet[sample], leave_out=True), 4)
    stamp = {
        "models": champions,
        **source,
        "tracks": len(library.tracks),
        "windows": int(every.size),
        "bgm_tracks": sum(t.role == "bgm" for t in library.tracks),
        "search": index.kind,
        "ef_search": params.ef_search,
        "ann_recall_at_10": recall,
        "content_sha256": content_hash(out),
    }
    write_json(out / "stamp.json", stamp)
    return stamp


def unit_mean(vectors: np.ndarray) -> np.ndarray:
    """The mean of ``(n, dim)`` vectors, scaled to unit length."""
    mean = np.asarray(vectors, dtype=np.float32).mean(axis=0)
    return mean / max(float(np.linalg.norm(mean)), 1e-12)


def _batched(network, inputs: np.ndarray, rows: np.ndarray, batch: int = 4096) -> np.ndarray:
    """``network`` over ``inputs[rows]``, a batch at a time (a long catalogue does not fit at once)."""
    parts = [
        network(torch.from_numpy(np.ascontiguousarray(inputs[rows[i : i + batch]]))).numpy()
        for i in range(0, len(rows), batch)
    ]
    return np.concatenate(parts)
