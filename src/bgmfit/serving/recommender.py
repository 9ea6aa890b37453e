"""Recommendations from the champion models and the catalogue index, with the limits of a public API.

The same :class:`Recommender` answers the CLI (``bgmfit recommend``, ``match``,
``similar``) and the BentoML service. Every bad input raises
:class:`RequestError` with the HTTP status it deserves and a message that names
the problem; nothing a client sends can raise anything else.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from bgmfit.audio import ACCEPTED_FORMATS
from bgmfit.config import PackageParams
from bgmfit.errors import BgmfitError, RequestError
from bgmfit.features.windows import TrackWindows, analyse_windows
from bgmfit.index import Catalogue
from bgmfit.index.catalogue import unit_mean
from bgmfit.networks import MATCH, TRIPLET
from bgmfit.serving.isolation import decode_upload

METHODS = ("match", "triplet")


@dataclass(frozen=True)
class Limits:
    """What a request may ask for (from ``params.yaml: package``; see :meth:`from_params`)."""

    max_upload_bytes: int
    max_audio_seconds: float
    max_top_k: int

    @classmethod
    def from_params(cls, params: PackageParams) -> Limits:
        """The limits that the ``package`` section sets."""
        return cls(params.max_upload_bytes, params.max_audio_seconds, params.max_top_k)


@dataclass(frozen=True)
class Query:
    """One piece of audio as the models see it: the normalised inputs of each of its windows."""

    fused: np.ndarray  # (windows, n_segments, n_columns)
    frames: np.ndarray | None  # (windows, frames_n, frames_n_mfcc); None when only a fused array was sent


@dataclass(frozen=True)
class Filters:
    """Which library tracks an answer may hold; every condition given must hold.

    ``styles``: any of them; ``tags``: all of them; ``exclude_styles``, ``exclude_tags``:
    none of them; ``exclude_ids``: not these tracks (those already used in an episode);
    ``min_duration_seconds``: at least this long. Each style, tag and id named must exist
    in the library, so that a typo is a 422 and not an empty or unfiltered answer.
    """

    styles: tuple[str, ...] = ()
    exclude_styles: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    exclude_tags: tuple[str, ...] = ()
    exclude_ids: tuple[str, ...] = ()
    min_duration_seconds: float = 0.0


class Recommender:
    """Method A and method B over one catalogue.

    Parameters
    ----------
    match_model, triplet_model:
        The champion versions of method A and method B, as loaded from the registry.
    versions:
        Registered model name -> the version of each model given here.
    catalogue:
        The index; it must have been built from exactly ``versions``.
    limits:
        Request limits.
    analyser:
        Decodes and analyses an upload: ``(bytes, max seconds, name) -> TrackWindows``. In this
        process by default; the service passes its :class:`~bgmfit.serving.isolation.AnalysisPool`.

    Raises
    ------
    BgmfitError
        If the index was built from other model versions than ``versions``.
    """

    def __init__(
        self,
        match_model: torch.nn.Module,
        triplet_model: torch.nn.Module,
        versions: dict[str, int],
        catalogue: Catalogue,
        limits: Limits,
        analyser: Callable[[bytes, float, str], TrackWindows] | None = None,
    ) -> None:
        if versions != catalogue.versions():
            raise BgmfitError(
                f"the catalogue index was built from {_describe(catalogue.versions())} but the models "
                f"loaded are {_describe(versions)}; rebuild the index and the bento (dvc repro index package)"
            )
        self.match_model = match_model.eval()
        self.triplet_model = triplet_model.eval()
        self.versions = versions
        self.catalogue = catalogue
        self.limits = limits
        self.analyser = analyser or self._analyse_here
        features = catalogue.features
        self.fused_shape = (features.n_segments, len(catalogue.norm_stats.columns))
        self._bgm_rows = catalogue.bgm_rows

    # -- inputs ---------------------------------------------------------------------------------

    def check_upload_size(self, size: int, name: str = "upload") -> None:
        """Refuse (413) an upload of ``size`` bytes over the byte cap."""
        if size > self.limits.max_upload_bytes:
            raise RequestError(
                413,
                f"{name}: {size / 2**20:.1f} MiB is over the upload limit of "
                f"{self.limits.max_upload_bytes / 2**20:.1f} MiB",
            )

    def query_from_audio(self, content: bytes, name: str = "upload") -> Query:
        """An upload as both models' inputs, per window: decoded and analysed by ``analyser``."""
        self.check_upload_size(len(content), name)
        windows = self.analyser(content, self.limits.max_audio_seconds, name)
        norm = self.catalogue.norm_stats
        query = Query(norm.normalise_fused(windows.fused), norm.normalise_frames(windows.mfcc_frames))
        if not (np.all(np.isfinite(query.fused)) and np.all(np.isfinite(query.frames))):
            raise RequestError(422, f"{name}: its features are not finite; the audio cannot be analysed")
        return query

    def _analyse_here(self, content: bytes, max_seconds: float, name: str) -> TrackWindows:
        return analyse_windows(
            decode_upload(content, self.catalogue.features.sample_rate, max_seconds, name),
            self.catalogue.features,
        )

    def query_from_fused(self, fused) -> Query:
        """Check a normalised fused feature array sent by a client."""
        try:
            array = np.asarray(fused, dtype=np.float32)
        except (TypeError, ValueError):
            raise RequestError(422, "features: not a numeric array") from None
        if array.shape != self.fused_shape:
            raise RequestError(
                422,
                f"features: shape {list(array.shape)} is not the fused matrix shape {list(self.fused_shape)}",
            )
        if not np.all(np.isfinite(array)):
            raise RequestError(422, "features: contains NaN or infinite values")
        return Query(array[None], None)

    def check_top_k(self, top_k: int) -> int:
        """``top_k`` if it is within 1..max_top_k."""
        if not 1 <= top_k <= self.limits.max_top_k:
            raise RequestError(422, f"top_k must be in 1..{self.limits.max_top_k}, got {top_k}")
        return top_k

    def allowed(self, filters: Filters | None) -> np.ndarray | None:
        """A bool per library track: which pass ``filters`` (``None`` when nothing is filtered)."""
        if filters is None or filters == Filters():
            return None
        catalogue = self.catalogue
        for name, values, known, what in (
            ("styles", filters.styles, catalogue.style_names, "styles"),
            ("exclude_styles", filters.exclude_styles, catalogue.style_names, "styles"),
            ("tags", filters.tags, catalogue.tag_names, "tags"),
            ("exclude_tags", filters.exclude_tags, catalogue.tag_names, "tags"),
        ):
            unknown = [v for v in values if v not in known]
            if unknown:
                listing = ", ".join(sorted(known)[:30]) or "none"
                raise RequestError(
                    422,
                    f"{name}: unknown {what} {', '.join(map(repr, unknown))}; "
                    f"the library's {what}: {listing}",
                )
        for track_id in filters.exclude_ids:
            self._row(track_id, "exclude_ids")
        if not math.isfinite(filters.min_duration_seconds) or filters.min_duration_seconds < 0:
            raise RequestError(
                422, f"min_duration_seconds must be a number >= 0, got {filters.min_duration_seconds:g}"
            )
        keep = catalogue.durations >= filters.min_duration_seconds
        if filters.styles:
            keep &= np.isin(catalogue.styles, filters.styles)
        if filters.exclude_styles:
            keep &= ~np.isin(catalogue.styles, filters.exclude_styles)
        wanted, unwanted = set(filters.tags), set(filters.exclude_tags)
        if wanted or unwanted:
            keep &= np.array([wanted <= tags and not unwanted & tags for tags in catalogue.tags])
        keep[[catalogue.row_of[t] for t in filters.exclude_ids]] = False
        return keep

    def _row(self, track_id: str, field: str | None = None) -> int:
        if track_id not in self.catalogue.row_of:
            where = f"{field}: " if field else ""
            raise RequestError(422, f"{where}unknown track id {track_id!r}: not in the library")
        return self.catalogue.row_of[track_id]

    # -- answers --------------------------------------------------------------------------------

    @torch.no_grad()
    def foreground_deep(self, fused: np.ndarray) -> np.ndarray:
        """Method A's foreground deep features of ``(batch, segments, columns)`` fused arrays."""
        return self.match_model.embed(
            torch.from_numpy(np.asarray(fused, dtype=np.float32)), "foreground"
        ).numpy()

    @torch.no_grad()
    def style_embedding(self, query: Query) -> np.ndarray:
        """Method B's unit-length embedding ``(embed_dim,)`` of a query: its windows' mean, unit length.

        The mean (a centroid on the sphere) rather than, say, the nearest window of each
        catalogue track: a style is what the windows share, and the mean moves least when
        the query starts a second later or carries a different intro.
        """
        if self.triplet_model.input_kind == "mfcc_frames":
            if query.frames is None:
                raise RequestError(
                    422,
                    f"method 'triplet' needs audio: the champion {TRIPLET.name} reads MFCC frames, "
                    "which a fused feature array does not carry",
                )
            inputs = query.frames
        else:
            inputs = query.fused
        return unit_mean(self.triplet_model(torch.from_numpy(inputs)).numpy())

    def recommend(
        self,
        query: Query,
        method: str = "match",
        top_k: int = 10,
        filters: Filters | None = None,
        min_fit: float | None = None,
    ) -> list[dict]:
        """The library tracks that best fit (``match``) or most resemble (``triplet``) the query.

        ``match`` ranks the library's BGM by method A's predicted fit; ``triplet``
        ranks all library music by ascending cosine distance of method B's
        embeddings. Each result has ``track_id``, ``style``, ``score`` (fit, or
        1 - distance / 2), ``distance`` (cosine, in that method's space),
        ``offset_seconds`` (where the best window of the track starts, to play it from)
        and the track's metadata. ``filters`` apply before the ``top_k`` are cut. Method A's
        score is its fit calibrated on the validation split; ``min_fit`` leaves out the tracks
        that fit less (so an empty answer means that nothing fits).
        """
        if method not in METHODS:
            raise RequestError(422, f"method must be one of {', '.join(METHODS)}, got {method!r}")
        if min_fit is not None and method != "match":
            raise RequestError(422, "min_fit is a threshold on method A's fit: use it with method 'match'")
        if min_fit is not None and not 0.0 <= min_fit <= 1.0:
            raise RequestError(422, f"min_fit must be in 0..1, got {min_fit:g}")
        top_k = self.check_top_k(top_k)
        allowed = self.allowed(filters)
        if method == "match":
            fits = self._fits(query.fused)
            order = np.argsort(-fits[0], kind="stable")
            if allowed is not None:
                order = order[allowed[self._bgm_rows[order]]]
            if min_fit is not None:
                order = order[fits[0][order] >= min_fit]
            return [self._result(self._bgm_rows[i], *(column[i] for column in fits)) for i in order[:top_k]]
        nearest = self.catalogue.nearest_tracks(self.style_embedding(query), top_k, allowed)
        return [self._result(r, 1.0 - d / 2.0, d, w) for r, w, d in nearest]

    def match(self, query: Query, track_ids: list[str]) -> list[dict]:
        """Method A's graded fit of the query with each named catalogue track, in the order given."""
        if not track_ids:
            raise RequestError(422, "track_ids: give at least one catalogue track id")
        if len(track_ids) > self.limits.max_top_k:
            raise RequestError(422, f"track_ids: at most {self.limits.max_top_k} ids per request")
        rows = np.array([self._row(t) for t in track_ids], dtype=np.int64)
        fits = self._fits(query.fused, rows)
        return [self._result(r, *(column[i] for column in fits)) for i, r in enumerate(rows)]

    def similar(
        self,
        track_id: str | None = None,
        query: Query | None = None,
        top_k: int = 10,
        filters: Filters | None = None,
    ) -> list[dict]:
        """Library music nearest (method B, ascending cosine distance) to a library track or a query.

        A library track is never its own result; ``filters`` apply before the ``top_k`` are cut.
        """
        if (track_id is None) == (query is None):
            raise RequestError(422, "give either a library track_id or an audio file, not both or neither")
        top_k = self.check_top_k(top_k)
        allowed = self.allowed(filters)
        if track_id is not None:
            own = self._row(track_id)
            if allowed is None:
                allowed = np.ones(len(self.catalogue.tracks), dtype=bool)
            allowed[own] = False
            nearest = self.catalogue.nearest_tracks(self.catalogue.style_of(own), top_k, allowed)
        else:
            nearest = self.catalogue.nearest_tracks(self.style_embedding(query), top_k, allowed)
        return [self._result(r, 1.0 - d / 2.0, d, w) for r, w, d in nearest]

    def model_info(self) -> dict:
        """Model versions, the index's hash and size, and the limits."""
        stamp = self.catalogue.stamp
        return {
            "models": {
                name: {"version": version, "alias": "champion", "run_id": stamp["models"][name]["run_id"]}
                for name, version in self.versions.items()
            },
            "index": {
                "library": stamp["library"],
                "content_sha256": stamp["content_sha256"],
                "tracks": stamp["tracks"],
                "windows": stamp["windows"],
                "bgm_tracks": stamp["bgm_tracks"],
                "search": stamp["search"],
                "calibration": (
                    f"isotonic, {len(self.catalogue.calibration['x'])} knots"
                    if self.catalogue.calibration
                    else "none"
                ),
                "ann_recall_at_10": stamp.get("ann_recall_at_10"),  # HNSW against exact; null when exact
            },
            "limits": {
                "max_upload_bytes": self.limits.max_upload_bytes,
                "max_audio_seconds": self.limits.max_audio_seconds,
                "max_top_k": self.limits.max_top_k,
                "window_seconds": self.catalogue.features.clip_seconds,
                "window_hop_seconds": self.catalogue.features.window_hop_seconds,
                "max_windows": self.catalogue.features.max_windows,
                "fused_shape": list(self.fused_shape),
                "formats": list(ACCEPTED_FORMATS),
            },
        }

    def _fits(self, fused: np.ndarray, rows: np.ndarray | None = None):
        """Method A's ``(fit, distance, window)`` of a query with each track of ``rows`` (all BGM)."""
        return self.catalogue.fits(self.match_model, torch.from_numpy(self.foreground_deep(fused)), rows)

    def _result(self, row: int, score: float, distance: float, window: int) -> dict:
        track = self.catalogue.tracks[int(row)]
        return {
            "track_id": track["track_id"],
            "style": track["style"],
            "role": track["role"],
            "score": round(float(score), 6),
            "distance": round(float(distance), 6),
            "offset_seconds": round(float(self.catalogue.window_offset[int(window)]), 2),
            "duration_seconds": round(float(track["duration_seconds"]), 2),
            "title": track["title"],
            "artist": track["artist"],
            "licence": track["licence"],
            "tags": [t for t in track["tags"].split(";") if t],
        }


def _describe(versions: dict[str, int]) -> str:
    return ", ".join(f"{name} v{v}" for name, v in sorted(versions.items()))


def from_registry(index_dir, limits: Limits) -> Recommender:
    """A recommender on the local machine: the index in ``index_dir`` and the registry's champions.

    Raises
    ------
    BgmfitError
        If the index is missing, or the registry's ``@champion`` moved since the index was built.
    """
    from bgmfit.tracking.logged import load_version
    from bgmfit.tracking.registry import champion_version, client

    catalogue = Catalogue.load(index_dir)
    versions = catalogue.versions()
    mlflow_client = client()
    for name, version in versions.items():
        champion = champion_version(mlflow_client, name)
        if champion is None or int(champion.version) != version:
            now = "none" if champion is None else f"v{champion.version}"
            raise BgmfitError(
                f"the index was built from {name} v{version} but @champion is now {now}; "
                "rebuild it with `dvc repro index`"
            )
    models = {name: load_version(name, str(v)) for name, v in versions.items()}
    return Recommender(models[MATCH.name], models[TRIPLET.name], versions, catalogue, limits)
