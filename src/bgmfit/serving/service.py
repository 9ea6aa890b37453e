"""The BentoML service: ``bentoml serve`` from the repository root, or the built bento.

It loads the champion models that the ``package`` stage imported into the
BentoML store (``models/serving.json`` names them) and the catalogue index
(``models/index``), and refuses to start if the index was built from other
model versions. Every bad input is answered with a 4xx whose message names the
problem.
"""

from __future__ import annotations

import gc
import json
import os
from http import HTTPStatus
from pathlib import Path
from typing import Annotated, Literal

import bentoml
import numpy as np
from bentoml.exceptions import BadInput, BentoMLException, UnprocessableEntity
from bentoml.validators import DType, Shape
from fastapi import FastAPI
from pydantic import AfterValidator, Field

from bgmfit.errors import BgmfitError
from bgmfit.files import SERVING
from bgmfit.index import Catalogue
from bgmfit.models.export import load_network
from bgmfit.networks import MATCH, TRIPLET
from bgmfit.serving.guard import RequestGuard
from bgmfit.serving.recommender import Filters, Limits, Query, Recommender, RequestError
from bgmfit.tracking.logged import network_folder

#: Where the ``package`` stage wrote the service's configuration; ``BGMFIT_SERVING`` overrides it.
SERVING_CONFIG = Path(os.environ.get("BGMFIT_SERVING", str(SERVING)))


def _config() -> dict:
    if not SERVING_CONFIG.is_file():
        raise BgmfitError(
            f"{SERVING_CONFIG} is missing: build the models, index and bento first (make run, or "
            "dvc repro package), and start bentoml serve from the repository root"
        )
    return json.loads(SERVING_CONFIG.read_text())


CONFIG = _config()
# serving.json sits in models/ of the repository (or of the bento), and names the index relative to that root.
INDEX_DIR = SERVING_CONFIG.resolve().parent.parent / CONFIG["index_dir"]
FUSED_SHAPE = tuple(CONFIG["fused_shape"])


class PayloadTooLarge(BentoMLException):
    """413: an upload over the byte or duration limit."""

    error_code = HTTPStatus.REQUEST_ENTITY_TOO_LARGE


class UnsupportedMediaType(BentoMLException):
    """415: content that is not audio in an accepted format."""

    error_code = HTTPStatus.UNSUPPORTED_MEDIA_TYPE


_STATUS = {400: BadInput, 413: PayloadTooLarge, 415: UnsupportedMediaType, 422: UnprocessableEntity}


def _http_error(exc: RequestError) -> BentoMLException:
    return _STATUS.get(exc.status, BadInput)(str(exc))


def _finite(array: np.ndarray) -> np.ndarray:
    if not np.all(np.isfinite(array)):
        raise ValueError("features contain NaN or infinite values")
    return array


def _filters(styles, exclude_styles, tags, exclude_tags, exclude_ids, min_duration_seconds) -> Filters:
    return Filters(
        tuple(styles or ()),
        tuple(exclude_styles or ()),
        tuple(tags or ()),
        tuple(exclude_tags or ()),
        tuple(exclude_ids or ()),
        min_duration_seconds,
    )


FusedBatch = Annotated[np.ndarray, Shape((-1, *FUSED_SHAPE)), DType("float32"), AfterValidator(_finite)]
TopK = Annotated[int, Field(ge=1, le=CONFIG["limits"]["max_top_k"])]
info_app = FastAPI(title="bgmfit model info")


@bentoml.asgi_app(info_app, path="/")
@bentoml.service(name=CONFIG.get("bento_name", "bgmfit"), traffic=CONFIG["traffic"], workers=1)
class BGMFit:
    """Background-music recommendations: which catalogue BGM fits a clip, and which music is like which."""

    match_model = bentoml.models.BentoModel(CONFIG["models"][MATCH.name])
    triplet_model = bentoml.models.BentoModel(CONFIG["models"][TRIPLET.name])

    def __init__(self) -> None:
        models, versions = {}, {}
        for name, ref in ((MATCH.name, self.match_model), (TRIPLET.name, self.triplet_model)):
            models[name] = load_network(network_folder(Path(ref.path_of("mlflow_model"))), str(ref.tag))
            versions[name] = int(ref.info.labels["registry_version"])
        catalogue = Catalogue.load(INDEX_DIR)
        # Raises when the index was built from other versions: the service then refuses to start.
        self.recommender = Recommender(
            models[MATCH.name], models[TRIPLET.name], versions, catalogue, Limits(**CONFIG["limits"])
        )
        gc.freeze()  # start-up objects never need collecting; fewer long GC pauses under load

    def _query(self, audio: Path | None, features: list | None) -> Query:
        if (audio is None) == (features is None):
            raise RequestError(
                422, "send either an audio file or a fused features array, not both or neither"
            )
        if audio is not None:
            # By the file's size, before its bytes are read into memory.
            self.recommender.check_upload_size(audio.stat().st_size)
            return self.recommender.query_from_audio(audio.read_bytes(), "upload")
        return self.recommender.query_from_fused(features)

    @bentoml.api
    def recommend(
        self,
        # `Path = None` rather than `Path | None`: BentoML turns an upload into a Path only for a
        # plain Path annotation; the default still makes the field optional.
        audio: Path = None,  # type: ignore[assignment]
        features: list[list[float]] | None = None,
        top_k: TopK = 10,
        method: Literal["match", "triplet"] = "match",
        styles: list[str] | None = None,
        exclude_styles: list[str] | None = None,
        tags: list[str] | None = None,
        exclude_tags: list[str] | None = None,
        exclude_ids: list[str] | None = None,
        min_duration_seconds: float = 0.0,
        min_fit: Annotated[float, Field(ge=0, le=1)] | None = None,
    ) -> list[dict]:
        """Rank the library for uploaded audio (wav, flac, ogg, opus, mp3, m4a) or a normalised fused array.

        ``method=match`` ranks the library's BGM by method A's calibrated fit;
        ``method=triplet`` ranks all library music by method B's cosine distance. The
        filters (any of ``styles``, all of ``tags``, none of the ``exclude_*``, at least
        ``min_duration_seconds``) apply before ``top_k`` is cut. ``min_fit`` (method A) leaves
        out tracks that fit less: an empty list says that nothing fits.
        """
        filters = _filters(styles, exclude_styles, tags, exclude_tags, exclude_ids, min_duration_seconds)
        try:
            query = self._query(audio, features)
            return self.recommender.recommend(query, method, top_k, filters, min_fit)
        except RequestError as exc:
            raise _http_error(exc) from None

    @bentoml.api
    def match(self, audio: Path, track_ids: list[str]) -> list[dict]:
        """Method A's graded fit of an uploaded clip with each of the named catalogue tracks."""
        try:
            return self.recommender.match(self._query(audio, None), track_ids)
        except RequestError as exc:
            raise _http_error(exc) from None

    @bentoml.api
    def similar(
        self,
        track_id: str | None = None,
        audio: Path = None,  # type: ignore[assignment]  (see recommend)
        top_k: TopK = 10,
        styles: list[str] | None = None,
        exclude_styles: list[str] | None = None,
        tags: list[str] | None = None,
        exclude_tags: list[str] | None = None,
        exclude_ids: list[str] | None = None,
        min_duration_seconds: float = 0.0,
    ) -> list[dict]:
        """Library music nearest to a library track or to uploaded music (method B, cosine distance).

        The filters are those of ``/recommend``.
        """
        filters = _filters(styles, exclude_styles, tags, exclude_tags, exclude_ids, min_duration_seconds)
        try:
            query = None if audio is None else self._query(audio, None)
            return self.recommender.similar(track_id, query, top_k, filters)
        except RequestError as exc:
            raise _http_error(exc) from None

    @bentoml.api(
        batchable=True,
        max_batch_size=CONFIG["batching"]["max_batch_size"],
        max_latency_ms=CONFIG["batching"]["max_latency_ms"],
    )
    def embed(self, features: FusedBatch) -> np.ndarray:
        """Method A's foreground deep features of ``(batch, segments, columns)`` normalised fused arrays.

        Requests are batched adaptively across clients.
        """
        return self.recommender.foreground_deep(features)

    @info_app.get("/model-info")
    def model_info(self) -> dict:
        """Model versions and aliases, the index's content hash and size, and the request limits."""
        return self.recommender.model_info()


# One byte cap for every endpoint and content type, counted as the body streams in, before
# BentoML parses (and spools) anything; and no text where a file is expected (BentoML would fetch it).
BGMFit.add_asgi_middleware(
    RequestGuard, max_bytes=CONFIG["limits"]["max_upload_bytes"], file_fields=("audio",)
)
