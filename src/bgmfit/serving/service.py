"""The BentoML service: ``bentoml serve`` from the repository root, or the built bento.

It loads the champion models that the ``package`` stage imported into the
BentoML store (``models/serving.json`` names them) and the catalogue index
(``models/index``), and refuses to start if the index was built from other
model versions. Every bad input is answered with a 4xx whose message names the
problem.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import re
import shutil
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from pathlib import Path
from typing import Annotated, Literal

import bentoml
import numpy as np
from bentoml.exceptions import BadInput, BentoMLException, NotFound, UnprocessableEntity
from bentoml.validators import ContentType, DType, Shape
from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse, HTMLResponse
from pydantic import AfterValidator, Field, ValidationError
from pydantic.json_schema import PydanticJsonSchemaWarning
from starlette.exceptions import HTTPException as StarletteHTTPException

from bgmfit.audio import SampleFile
from bgmfit.config import TimelineParams, params_from_dict
from bgmfit.errors import BgmfitError
from bgmfit.features.windows import analyse_windows
from bgmfit.files import SERVING
from bgmfit.index import Catalogue
from bgmfit.models.export import load_network
from bgmfit.networks import MATCH, TRIPLET
from bgmfit.serving.guard import RequestGuard
from bgmfit.serving.isolation import AnalysisPool
from bgmfit.serving.jobs import jobs_folder
from bgmfit.serving.recommender import Filters, Limits, Query, Recommender, RequestError
from bgmfit.timeline.job import swap_tracks, timeline_of, write_preview
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
TIMELINE = params_from_dict("timeline", TimelineParams, CONFIG["timeline"])
LIBRARY_ROOT = Path(CONFIG["library_root"])
#: A timeline job's files (the decoded episode, its timeline and previews) live here while it is
#: one of the last KEPT_JOBS; a job id is 32 hex digits, chosen by the page (or by the task).
#: The folder goes when the server shuts down (SIGTERM, Ctrl-C: :meth:`BGMFit._remove_jobs`), or
#: when a process that imported this module exits; one that a killed server left goes when the
#: next one starts (:mod:`bgmfit.serving.jobs`).
_JOBS_FOLDER = jobs_folder()
JOBS = Path(_JOBS_FOLDER.name)
KEPT_JOBS = 8
EPISODE_SAMPLES = "episode.f32"  # a job's decoded episode: raw float32 samples, read a block at a time
JOB_ID = re.compile(r"^[0-9a-f]{32}$")
EDITOR_PAGE = Path(__file__).with_name("editor.html")


class PayloadTooLarge(BentoMLException):
    """413: an upload over the byte or duration limit."""

    error_code = HTTPStatus.REQUEST_ENTITY_TOO_LARGE


class UnsupportedMediaType(BentoMLException):
    """415: content that is not audio in an accepted format."""

    error_code = HTTPStatus.UNSUPPORTED_MEDIA_TYPE


_STATUS = {400: BadInput, 413: PayloadTooLarge, 415: UnsupportedMediaType, 422: UnprocessableEntity}


def _http_error(exc: RequestError) -> BentoMLException:
    return _STATUS.get(exc.status, BadInput)(str(exc))


def _answered(ctx, answer) -> list[dict]:
    """``answer()``, or the refusal it raised: a 4xx by BentoML, a 503 with its message here.

    BentoML replaces the message of any 5xx it raises with "an unexpected error"; a client
    whose upload crashed the decoder should be told so, in the shape of BentoML's own errors.
    """
    try:
        return answer()
    except RequestError as exc:
        if exc.status < 500:
            raise _http_error(exc) from None
        ctx.response.status_code = exc.status
        return [{"error": str(exc)}]


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


def _batching(config: dict) -> dict:
    """``/embed``'s batching arguments: adaptive up to ``max_batch_size``; 1 turns batching off."""
    if config["max_batch_size"] == 1:
        return {}
    return {"batchable": True, **config}


# The optional uploads are `audio: Path = None` (see recommend): the schema has no default to
# show for them, which pydantic warns about at every `bgmfit package` and server start.
warnings.filterwarnings(
    "ignore",
    message="Unable to serialize value None with the plain serializer",
    category=PydanticJsonSchemaWarning,
)

FusedBatch = Annotated[np.ndarray, Shape((-1, *FUSED_SHAPE)), DType("float32"), AfterValidator(_finite)]
TopK = Annotated[int, Field(ge=1, le=CONFIG["limits"]["max_top_k"])]
# Declared, BentoML's answer takes its media type from here; otherwise it derives it from the
# output model's JSON schema on every response (0.1 ms, 6 % of a small request's time).
Results = Annotated[list[dict], ContentType("application/json")]
Embeddings = Annotated[np.ndarray, ContentType("application/json")]
info_app = FastAPI(title="bgmfit model info")


@bentoml.asgi_app(info_app, path="/")
# threads: BentoML runs every synchronous endpoint through one limiter of this many threads (1 by
# default, when one slow request stalls all others); the uploads' heavy work is in the analysis
# processes, so a thread per analysis worker and two to spare. Timeline jobs and remixes have their own.
@bentoml.service(
    name=CONFIG.get("bento_name", "bgmfit"),
    traffic=CONFIG["traffic"],
    workers=1,
    threads=CONFIG["analysis"]["workers"] + 2,
)
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
        analysis = CONFIG["analysis"]
        self.analysis = AnalysisPool(
            catalogue.features, analysis["workers"], analysis["timeout_seconds"], analysis["memory_mb"]
        )
        self.recommender = Recommender(
            models[MATCH.name],
            models[TRIPLET.name],
            versions,
            catalogue,
            Limits(**CONFIG["limits"]),
            analyser=self.analysis.analyse,
        )
        self.progress: dict[str, dict] = {}  # job id -> {"step", "fraction"}, for the editor page
        self._jobs_lock = threading.Lock()
        # One long job (an episode's timeline, or a remix of its preview) at a time: a queue of them
        # must leave a core to the other endpoints. A job's remixes run in the order they came.
        self._long_jobs = ThreadPoolExecutor(1, thread_name_prefix="timeline")
        self._warm_up()
        gc.freeze()  # start-up objects never need collecting; fewer long GC pauses under load

    @bentoml.on_shutdown
    def _remove_jobs(self) -> None:
        """Timeline jobs hold decoded episodes (an hour is ~320 MB): none outlives the server."""
        _JOBS_FOLDER.cleanup()

    def _warm_up(self) -> None:
        """Analyse a few seconds of noise here and rank for it by both methods, once.

        So that the first client's request is not the slow one: librosa's and numba's first
        calls (the timeline analyses in this process), PyTorch's first call of each shape, and
        both rankings. The analysis processes warm themselves as they start.
        """
        catalogue = self.recommender.catalogue
        noise = np.random.default_rng(0).normal(0, 0.1, 3 * catalogue.features.sample_rate)
        windows = analyse_windows(noise.astype(np.float32), catalogue.features)
        norm = catalogue.norm_stats
        query = Query(norm.normalise_fused(windows.fused), norm.normalise_frames(windows.mfcc_frames))
        for method in ("match", "triplet"):
            self.recommender.recommend(query, method, 1, None, None)

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
        ctx: bentoml.Context = None,  # type: ignore[assignment]
    ) -> Results:
        """Rank the library for uploaded audio (wav, flac, ogg, opus, mp3, m4a) or a normalised fused array.

        ``method=match`` ranks the library's BGM by method A's calibrated fit;
        ``method=triplet`` ranks all library music by method B's cosine distance. The
        filters (any of ``styles``, all of ``tags``, none of the ``exclude_*``, at least
        ``min_duration_seconds``) apply before ``top_k`` is cut. ``min_fit`` (method A) leaves
        out tracks that fit less: an empty list says that nothing fits.
        """
        filters = _filters(styles, exclude_styles, tags, exclude_tags, exclude_ids, min_duration_seconds)
        return _answered(
            ctx,
            lambda: self.recommender.recommend(self._query(audio, features), method, top_k, filters, min_fit),
        )

    @bentoml.api
    def match(self, audio: Path, track_ids: list[str], ctx: bentoml.Context = None) -> Results:  # type: ignore[assignment]
        """Method A's graded fit of an uploaded clip with each of the named catalogue tracks."""
        return _answered(ctx, lambda: self.recommender.match(self._query(audio, None), track_ids))

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
        ctx: bentoml.Context = None,  # type: ignore[assignment]
    ) -> Results:
        """Library music nearest to a library track or to uploaded music (method B, cosine distance).

        The filters are those of ``/recommend``.
        """
        filters = _filters(styles, exclude_styles, tags, exclude_tags, exclude_ids, min_duration_seconds)
        return _answered(
            ctx,
            lambda: self.recommender.similar(
                track_id, None if audio is None else self._query(audio, None), top_k, filters
            ),
        )

    @bentoml.api(**_batching(CONFIG["batching"]))
    def embed(self, features: FusedBatch) -> Embeddings:
        """Method A's foreground deep features of ``(batch, segments, columns)`` normalised fused arrays.

        Requests are batched adaptively across clients, unless ``package.max_batch_size`` is 1.
        """
        return self.recommender.foreground_deep(features)

    @info_app.get("/model-info")
    def model_info(self) -> dict:
        """Model versions and aliases, the index's content hash and size, and the request limits."""
        return self.recommender.model_info()

    # -- whole episodes ---------------------------------------------------------------------------

    @bentoml.task
    async def timeline(
        self, audio: Path, ctx: bentoml.Context, job: str | None = None, preview: bool = True
    ) -> dict:
        """Score a whole episode: ``POST /timeline/submit``, then ``GET /timeline/status``, ``/timeline/get``.

        The answer is the timeline (the same JSON as ``bgmfit timeline``) with ``job``; with
        ``preview``, ``preview_url`` is where its mix can be fetched (``GET /jobs/{job}/...``).
        ``job`` (32 hex digits) lets a client follow ``GET /jobs/{job}/progress`` meanwhile.
        """
        if getattr(ctx.request.state, "task_id", None) is None:
            raise BadInput("an episode is scored as a task: POST /timeline/submit, then GET /timeline/status")
        job = self._new_job(job)
        # Queued jobs wait here, not in BentoML's threads, which the other endpoints need.
        return await asyncio.get_running_loop().run_in_executor(
            self._long_jobs, self._timeline, audio, job, preview
        )

    def _timeline(self, audio: Path, job: str, preview: bool) -> dict:
        folder = JOBS / job
        try:
            self.recommender.check_upload_size(audio.stat().st_size)
            # In an analysis process, as every upload: a decoder that crashes or hangs costs this job.
            limit = self.recommender.limits.max_audio_seconds
            self.analysis.decode_to(audio.read_bytes(), limit, folder / EPISODE_SAMPLES)
        except RequestError as exc:
            self.progress[job] = {"step": "failed", "fraction": 1.0, "error": str(exc)}
            raise _http_error(exc) from None
        catalogue = self.recommender.catalogue
        y = SampleFile(folder / EPISODE_SAMPLES)
        answer = timeline_of(
            y,
            catalogue,
            self.recommender.match_model,
            self.recommender.versions,
            TIMELINE,
            "upload",
            LIBRARY_ROOT,
            folder / "preview-0.mp3" if preview else None,
            progress=lambda step, fraction: self.progress.__setitem__(
                job, {"step": step, "fraction": fraction}
            ),
        )
        answer["job"] = job
        if preview:
            answer["preview_url"] = f"/jobs/{job}/preview-0.mp3"
        answer.pop("preview", None)  # the server's own path
        (folder / "timeline.json").write_text(json.dumps(answer))
        self.progress[job] = {"step": "done", "fraction": 1.0}
        return answer

    @bentoml.task
    async def render(self, job: str, choices: dict[str, str], ctx: bentoml.Context) -> dict:
        """Swap scenes' tracks for their alternatives (``{"3": "track id"}``) and mix the preview
        again: ``POST /render/submit``, then ``GET /render/status``, ``/render/get``.

        The answer is the job's timeline with the new tracks and a new ``preview_url``. A remix of
        an hour takes about a minute, so it is a task, as the timeline is.
        """
        if getattr(ctx.request.state, "task_id", None) is None:
            raise BadInput("a preview is mixed again as a task: POST /render/submit, then GET /render/status")
        return await asyncio.get_running_loop().run_in_executor(self._long_jobs, self._render, job, choices)

    def _render(self, job: str, choices: dict[str, str]) -> dict:
        folder = self._job_folder(job)
        if folder is None:
            raise NotFound(f"no finished timeline job {job!r}")
        timeline = json.loads((folder / "timeline.json").read_text())
        try:
            swap_tracks(timeline, {int(k): v for k, v in choices.items()})
        except (BgmfitError, ValueError) as exc:
            raise UnprocessableEntity(str(exc)) from None
        version = len(list(folder.glob("preview-*.mp3")))
        y = SampleFile(folder / EPISODE_SAMPLES)
        target = folder / f"preview-{version}.mp3"
        write_preview(
            y,
            self.recommender.catalogue.features.sample_rate,
            timeline,
            self.recommender.catalogue,
            LIBRARY_ROOT,
            TIMELINE,
            target,
        )
        timeline.pop("preview", None)
        timeline["preview_url"] = f"/jobs/{job}/{target.name}"
        (folder / "timeline.json").write_text(json.dumps(timeline))
        return timeline

    @info_app.get("/jobs/{job}/progress")
    def job_progress(self, job: str) -> dict:
        """How far a timeline job is: ``step`` (analysis, speech, fits, preview, done) and ``fraction``."""
        if not JOB_ID.match(job) or job not in self.progress:
            raise HTTPException(404, f"no timeline job {job!r}")
        return self.progress[job]

    @info_app.get("/jobs/{job}/{name}")
    def job_file(self, job: str, name: str):
        """A job's preview mix (``preview-N.mp3``) or its ``timeline.json``."""
        if not re.fullmatch(r"preview-\d+\.mp3|timeline\.json", name):
            raise HTTPException(404, f"no such job file {name!r}")
        folder = self._job_folder(job)
        if folder is None:
            raise HTTPException(404, f"no finished timeline job {job!r}")
        path = folder / name
        if not path.is_file():
            raise HTTPException(404, f"job {job} has no {name} (yet)")
        kind = "audio/mpeg" if name.endswith(".mp3") else "application/json"
        return FileResponse(path, media_type=kind, filename=name)

    @info_app.get("/editor", response_class=HTMLResponse)
    def editor(self) -> str:
        """The editors' page: upload an episode, follow it, see and hear its timeline, swap tracks."""
        return EDITOR_PAGE.read_text()

    def _new_job(self, job: str | None) -> str:
        import uuid

        job = job or uuid.uuid4().hex
        if not JOB_ID.match(job):
            raise UnprocessableEntity(f"job must be 32 hex digits, got {job!r}")
        with self._jobs_lock:  # keep the newest KEPT_JOBS - 1 and this one
            JOBS.mkdir(exist_ok=True)  # again, if an earlier app of this process shut down (tests)
            folders = sorted(
                (p for p in JOBS.iterdir() if p.is_dir() and JOB_ID.match(p.name)),
                key=lambda p: p.stat().st_mtime,
            )
            for folder in folders[: max(0, len(folders) - KEPT_JOBS + 1)]:
                shutil.rmtree(folder, ignore_errors=True)
                self.progress.pop(folder.name, None)
            (JOBS / job).mkdir(exist_ok=True)
        self.progress[job] = {"step": "queued", "fraction": 0.0}
        return job

    def _job_folder(self, job: str) -> Path | None:
        """A finished job's folder; ``None`` for an unknown or unfinished job, or one that is not an id."""
        if not JOB_ID.match(job) or not (JOBS / job / "timeline.json").is_file():
            return None
        return JOBS / job


def _parse_errors_are_400(spec) -> None:
    """Make a request that BentoML cannot parse into ``spec`` a 400 that says why, never a 500.

    BentoML turns anything but a validation error raised while it parses a request into
    500: Starlette's 400 for a malformed or over-long multipart form, a part's bytes that
    are not UTF-8 (``json.loads`` on them), a 5,000-digit number (Python's limit on
    ``int()``). Parsing only reads what the client sent, so all of it is the client's to fix.
    """
    parse = spec.from_http_request.__func__

    async def from_http_request(cls, request, serde):
        try:
            return await parse(cls, request, serde)
        except (ValidationError, BentoMLException):
            raise
        except StarletteHTTPException as exc:
            raise BadInput(f"malformed request body: {exc.detail}") from None
        except OSError:
            raise  # the server's own disk or socket: not the client's fault
        except Exception as exc:  # noqa: BLE001 - see the docstring
            raise BadInput(f"malformed request body: {type(exc).__name__}: {str(exc)[:200]}") from None

    spec.from_http_request = classmethod(from_http_request)


for _api in BGMFit.apis.values():
    _parse_errors_are_400(_api.input_spec)

# One byte cap for every endpoint and content type, counted as the body streams in, before
# BentoML parses (and spools) anything; and no text where a file is expected (BentoML would fetch it).
BGMFit.add_asgi_middleware(
    RequestGuard, max_bytes=CONFIG["limits"]["max_upload_bytes"], file_fields=("audio",)
)
