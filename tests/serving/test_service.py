"""The BentoML service: called directly, over HTTP in-process, and as a real `bentoml serve`."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
from starlette.testclient import TestClient

from bgmfit.config import PackageParams, load_params
from bgmfit.errors import BgmfitError
from bgmfit.index import Catalogue
from bgmfit.serving.recommender import Limits, Recommender
from bgmfit.tracking.logged import load_version
from tests.integration.helpers import bentoml_serve
from tests.system import debian_program

pytestmark = pytest.mark.slow


def _tracks(project: Path) -> list[dict]:
    with open(project / "data/raw/manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def clip(served_project: Path) -> tuple[bytes, dict]:
    """A rendered held-out chorale melody, and its manifest row."""
    row = next(t for t in _tracks(served_project) if t["role"] == "foreground" and t["split"] == "test")
    return (served_project / "data/raw" / row["path"]).read_bytes(), row


@pytest.fixture(scope="module")
def asgi_app(service_class, tmp_path_factory):
    # `bentoml serve` gives /metrics a multiprocess folder; in-process, the test does.
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(tmp_path_factory.mktemp("prometheus")))
    # One app per process: each to_asgi() registers BentoML's Prometheus metrics again.
    return service_class.to_asgi()


@pytest.fixture(scope="module")
def client(asgi_app):
    with TestClient(asgi_app) as http:
        yield http


def _wav(seconds: float, rate: int = 8000) -> bytes:
    buffer = io.BytesIO()
    t = np.arange(int(seconds * rate)) / rate
    sf.write(
        buffer, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), rate, format="WAV", subtype="PCM_16"
    )
    return buffer.getvalue()


def test_the_class_called_directly_recommends_and_finds_neighbours(service_class, clip, tmp_path):
    content, row = clip
    upload = tmp_path / "clip.flac"
    upload.write_bytes(content)
    service = service_class()
    results = service.recommend(audio=upload, top_k=5)
    assert len(results) == 5 and all(r["role"] == "bgm" for r in results)
    assert [r["score"] for r in results] == sorted((r["score"] for r in results), reverse=True)
    neighbours = service.similar(track_id=f"{row['work_id']}-bgm", top_k=3)
    assert len(neighbours) == 3 and f"{row['work_id']}-bgm" not in {n["track_id"] for n in neighbours}
    assert [n["distance"] for n in neighbours] == sorted(n["distance"] for n in neighbours)


def test_every_endpoint_answers_over_http(client, clip):
    content, row = clip
    files = {"audio": ("clip.flac", content, "audio/flac")}
    ranked = client.post("/recommend", files=files, data={"top_k": "4", "method": "triplet"})
    assert ranked.status_code == 200 and len(ranked.json()) == 4

    own_bgm = f"{row['work_id']}-bgm"
    fits = client.post("/match", files=files, data={"track_ids": json.dumps([own_bgm])})
    assert fits.status_code == 200 and 0.0 < fits.json()[0]["score"] < 1.0

    info = client.get("/model-info").json()
    assert set(info["models"]) == {"bgmfit-match", "bgmfit-triplet"}
    assert len(info["index"]["content_sha256"]) == 64 and info["limits"]["max_top_k"] == 100
    shape = info["limits"]["fused_shape"]

    fused = np.zeros(shape).tolist()
    by_array = client.post("/recommend", json={"features": fused, "top_k": 3})
    assert by_array.status_code == 200 and len(by_array.json()) == 3
    embedded = client.post("/embed", json={"features": [fused, fused]})
    assert embedded.status_code == 200 and len(embedded.json()) == 2
    assert client.get("/readyz").status_code == 200 and client.get("/healthz").status_code == 200


BAD_INPUTS = {
    "empty": (lambda c: {"files": {"audio": ("a.wav", b"", "audio/wav")}}, 400, "empty file"),
    "truncated": (
        lambda c: {"files": {"audio": ("a.wav", _wav(5.0)[:20000], "audio/wav")}},
        400,
        "truncated",
    ),
    "wrong magic": (
        lambda c: {"files": {"audio": ("a.wav", b"RIFX not really a wave file" * 40, "audio/wav")}},
        415,
        "not decodable as audio",
    ),
    "oversized": (
        lambda c: {"files": {"audio": ("a.wav", b"\0" * (1024 * 1024 + 1), "audio/wav")}},
        413,
        "over the limit of 1,048,576 bytes (1 MiB, package.max_upload_mb)",
    ),
    "oversized json": (
        lambda c: {"json": {"features": [[0.0] * 300_000]}},
        413,
        "over the limit of 1,048,576 bytes",
    ),
    "text for a file": (
        lambda c: {"data": {"audio": "http://127.0.0.1:9/clip.wav"}, "files": {"top_k": (None, "3")}},
        400,
        "audio: expected an uploaded file",
    ),
    "urlencoded file field": (
        lambda c: {"data": {"top_k": "3", "audio": "http://127.0.0.1:9/clip.wav"}},
        400,
        "audio: expected an uploaded file (multipart/form-data)",
    ),
    "no boundary": (
        lambda c: {"content": b"--x\r\n", "headers": {"content-type": "multipart/form-data"}},
        400,
        "without a boundary",
    ),
    "too long": (
        lambda c: {"files": {"audio": ("a.wav", _wav(40.0), "audio/wav")}},
        413,
        "over the limit of 30 s",
    ),
    "wrong shape": (
        lambda c: {"json": {"features": [[1.0, 2.0], [3.0, 4.0]]}},
        422,
        "is not the fused matrix shape",
    ),
    "k out of range": (
        lambda c: {"files": {"audio": ("a.flac", c, "audio/flac")}, "data": {"top_k": "101"}},
        400,
        "top_k",
    ),
    # What a campaign of malformed requests (benchmarks/fuzz.py) once answered with 500:
    "a part that names two fields": (
        lambda c: _multipart(b'form-data; name="audio"; name="top_k"; filename="a.flac"', c),
        400,
        "malformed request body",
    ),
    "1,100 fields": (
        lambda c: {
            "files": {"audio": ("a.flac", c, "audio/flac")},
            "data": {f"field{i}": "1" for i in range(1100)},
        },
        400,
        "Too many fields",
    ),
    "top_k of 20 digits": (
        lambda c: {"files": {"audio": ("a.flac", c, "audio/flac")}, "data": {"top_k": "5" * 20}},
        400,
        "less than or equal to 100",
    ),
    "top_k of 5,000 digits": (
        lambda c: {"files": {"audio": ("a.flac", c, "audio/flac")}, "data": {"top_k": "5" * 5000}},
        400,
        "Exceeds the limit (4300 digits)",
    ),
    "float samples near 3e38": (
        lambda c: {"files": {"audio": ("a.wav", _float_wav(3.3e38, 44100), "audio/wav")}},
        422,
        "more than 60 dB over full scale",
    ),
    "float samples near 1e18": (
        lambda c: {"files": {"audio": ("a.wav", _float_wav(1e18, 8000), "audio/wav")}},
        422,
        "more than 60 dB over full scale",
    ),
    "a NaN sample": (
        lambda c: {"files": {"audio": ("a.wav", _float_wav(np.nan, 8000), "audio/wav")}},
        422,
        "contains NaN or infinite samples",
    ),
    "BentoML's pickle format": (
        lambda c: {"content": b"\x80\x04N.", "headers": {"content-type": "application/vnd.bentoml+pickle"}},
        415,
        "is not accepted: send JSON or multipart/form-data",
    ),
    "a WAV header that lies about its sample width": (
        lambda c: {"files": {"audio": ("a.wav", _wav(2.0)[:34] + b"\xff\xff" + _wav(2.0)[36:], "audio/wav")}},
        415,
        "no audio stream it can decode",
    ),
}


def _multipart(disposition: bytes, content: bytes) -> dict:
    body = b"--b\r\nContent-Disposition: " + disposition + b"\r\n\r\n" + content + b"\r\n--b--\r\n"
    return {"content": body, "headers": {"content-type": "multipart/form-data; boundary=b"}}


def _float_wav(peak: float, rate: int) -> bytes:
    """A 32-bit float WAV whose peak is ``peak`` (NaN: one sample is NaN)."""
    y = np.sin(np.arange(rate * 2) * 0.05)
    y = np.where(np.arange(y.size) == 100, np.nan, y) if np.isnan(peak) else y * peak
    buffer = io.BytesIO()
    sf.write(buffer, y.astype(np.float32), rate, format="WAV", subtype="FLOAT")
    return buffer.getvalue()


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_each_bad_input_gets_its_4xx_and_a_message_that_names_it(client, clip, case):
    build, status, message = BAD_INPUTS[case]
    response = client.post("/recommend", **build(clip[0]))
    assert response.status_code == status, response.text
    assert message in response.text


def test_an_embed_body_without_features_is_a_400_that_names_the_field(client):
    for body in (b"{}", b"[]", b"null"):
        response = client.post("/embed", content=body, headers={"content-type": "application/json"})
        assert response.status_code == 400, response.text
    assert "features" in client.post("/embed", json={}).text


def test_a_nan_array_is_refused_by_name(client):
    info = client.get("/model-info").json()
    rows, columns = info["limits"]["fused_shape"]
    array = json.dumps({"features": [[0.0] * columns] * rows}).replace("0.0", "NaN", 1)
    response = client.post("/recommend", content=array, headers={"content-type": "application/json"})
    assert response.status_code == 422 and "NaN" in response.text
    batch = json.dumps({"features": [[[0.0] * columns] * rows]}).replace("0.0", "NaN", 1)
    response = client.post("/embed", content=batch, headers={"content-type": "application/json"})
    assert response.status_code == 400 and "NaN" in response.text


def test_unknown_track_ids_are_named(client, clip):
    response = client.post("/similar", json={"track_id": "no-such-track"})
    assert response.status_code == 422 and "unknown track id 'no-such-track'" in response.text
    files = {"audio": ("clip.flac", clip[0], "audio/flac")}
    response = client.post("/match", files=files, data={"track_ids": json.dumps(["nope"])})
    assert response.status_code == 422 and "'nope'" in response.text


def test_filters_apply_before_top_k_over_http(client, clip):
    info = client.get("/model-info").json()
    files = {"audio": ("clip.flac", clip[0], "audio/flac")}
    everything = client.post("/recommend", files=files, data={"top_k": "100", "method": "match"}).json()
    assert info["index"]["bgm_tracks"] >= 6 and len(everything) == min(100, info["index"]["bgm_tracks"])
    style = everything[-1]["style"]  # the least fitting BGM's style: a filter must reach past the first k
    of_style = [r for r in everything if r["style"] == style]
    for method in ("match", "triplet"):
        data = {"top_k": "3", "method": method, "styles": json.dumps([style])}
        answer = client.post("/recommend", files=files, data=data)
        assert answer.status_code == 200, answer.text
        results = answer.json()
        assert len(results) == min(3, len(of_style) if method == "match" else 3)
        assert {r["style"] for r in results} == {style}, results
    used = [r["track_id"] for r in everything[:2]]
    data = {
        "top_k": "3",
        "exclude_ids": json.dumps(used),
        "exclude_styles": json.dumps([everything[2]["style"]]),
    }
    results = client.post("/recommend", files=files, data=data).json()
    assert len(results) == 3 and not {r["track_id"] for r in results} & set(used)
    assert everything[2]["style"] not in {r["style"] for r in results}
    near = client.post("/similar", json={"track_id": used[0], "top_k": 2, "min_duration_seconds": 1e6})
    assert near.status_code == 200 and near.json() == []  # no track is that long: none, not unfiltered


def test_min_fit_leaves_out_what_fits_less_and_nothing_fitting_is_an_empty_answer(client, clip):
    files = {"audio": ("clip.flac", clip[0], "audio/flac")}
    everything = client.post("/recommend", files=files, data={"top_k": "100"}).json()
    middle = everything[len(everything) // 2]["score"]
    above = client.post("/recommend", files=files, data={"top_k": "100", "min_fit": str(middle)}).json()
    assert above and all(r["score"] >= middle for r in above) and len(above) < len(everything)
    assert [r["track_id"] for r in above] == [r["track_id"] for r in everything[: len(above)]]
    nothing = client.post("/recommend", files=files, data={"min_fit": "1.0"})
    assert nothing.status_code == 200 and nothing.json() == []
    wrong = client.post("/recommend", files=files, data={"min_fit": "0.5", "method": "triplet"})
    assert wrong.status_code == 422 and "min_fit is a threshold on method A's fit" in wrong.text
    out_of_range = client.post("/recommend", files=files, data={"min_fit": "1.5"})
    assert out_of_range.status_code in (400, 422) and "min_fit" in out_of_range.text
    info = client.get("/model-info").json()
    assert info["index"]["calibration"].startswith("isotonic")


FILTER_ERRORS = {
    "unknown tag": ({"tags": ["calm"]}, "tags: unknown tags 'calm'; the library's tags: none"),
    "unknown style": ({"styles": ["polka"]}, "styles: unknown styles 'polka'; the library's styles: "),
    "unknown excluded style": ({"exclude_styles": ["polka"]}, "exclude_styles: unknown styles 'polka'"),
    "unknown excluded id": ({"exclude_ids": ["nope"]}, "exclude_ids: unknown track id 'nope'"),
    "negative duration": ({"min_duration_seconds": -1}, "min_duration_seconds must be a number >= 0, got -1"),
}


@pytest.mark.parametrize("case", FILTER_ERRORS, ids=list(FILTER_ERRORS))
def test_each_bad_filter_gets_a_422_that_names_it(client, clip, case):
    body, message = FILTER_ERRORS[case]
    response = client.post("/similar", json={"track_id": f"{clip[1]['work_id']}-bgm", "top_k": 3, **body})
    assert response.status_code == 422 and message in response.text, response.text
    files = {"audio": ("clip.flac", clip[0], "audio/flac")}
    form = {k: json.dumps(v) if isinstance(v, list) else str(v) for k, v in body.items()}
    response = client.post("/recommend", files=files, data=form)
    assert response.status_code == 422 and message in response.text, response.text


def test_the_service_refuses_an_index_built_from_other_versions(served_project, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{served_project / 'mlflow.db'}")
    catalogue = Catalogue.load(served_project / "models/index")
    versions = catalogue.versions()
    match, triplet = (load_version(name, str(v)) for name, v in versions.items())
    limits = Limits.from_params(load_params("package", PackageParams, served_project / "params.yaml"))
    Recommender(match, triplet, versions, catalogue, limits)  # the right versions load
    with pytest.raises(BgmfitError, match="index was built from .* but the models loaded are"):
        Recommender(
            match, triplet, {**versions, "bgmfit-match": versions["bgmfit-match"] + 1}, catalogue, limits
        )


@pytest.fixture(scope="module")
def live_service(served_project, tmp_path_factory):
    """A real `bentoml serve` on 127.0.0.1, stopped when the module is done: its URL and process id."""
    log = tmp_path_factory.mktemp("serve") / "bentoml-serve.log"
    with bentoml_serve(served_project, served_project / "models/serving.json", log) as (base, pid):
        yield base, pid


@pytest.fixture(scope="module")
def live_server(live_service) -> str:
    return live_service[0]


def test_a_real_bentoml_serve_answers_an_upload(live_server, clip):
    files = {"audio": ("clip.flac", clip[0], "audio/flac")}
    response = httpx.post(f"{live_server}/recommend", files=files, data={"top_k": "5"}, timeout=60)
    assert response.status_code == 200, response.text
    assert len(response.json()) == 5 and {"track_id", "style", "score", "distance"} <= set(response.json()[0])
    bad = httpx.post(f"{live_server}/recommend", files={"audio": ("x.wav", b"nonsense" * 10, "audio/wav")})
    assert bad.status_code == 415 and "not decodable as audio" in bad.text
    assert "bentoml_service_request_total" in httpx.get(f"{live_server}/metrics", timeout=10).text


def test_a_bounded_fuzz_campaign_gets_no_server_error_and_restarts_no_worker(live_service, clip):
    """300 cases of benchmarks/fuzz.py's campaign: Schemathesis from the OpenAPI schema, mutated
    audio in every accepted format, odd multipart and JSON. None may get a 5xx, hang or restart a worker."""
    from benchmarks.fuzz import run_campaign

    from bgmfit.audio import load_audio

    base, pid = live_service
    audio = load_audio(clip[0], 22050)[: 6 * 22050]
    report = run_campaign(base, pid, cases=300, seed=1, concurrency=2, timeout=120, audio=audio)
    print(report.summary())
    assert sum(report.statuses.values()) + len(report.hangs) == 300
    assert len(report.statuses) >= 4, "the campaign reached only a few kinds of answer"
    assert not report.server_errors and not report.hangs and report.restarts == 0, report.summary()
    assert httpx.get(f"{base}/readyz", timeout=10).status_code == 200


@pytest.mark.parametrize(
    ("fault", "message"),
    [("sleep:600", "took over 3 s and was stopped"), ("abort", "the decoder crashed on this file")],
    ids=["a decoder that hangs", "a decoder that crashes"],
)
def test_a_decoder_that_hangs_or_crashes_costs_one_request_not_the_server(
    served_project, tmp_path, clip, fault, message
):
    """The fault hook makes every decode sleep or abort; each upload gets 503 with the reason, in
    about the time limit, while the other endpoints answer and the worker stays the same process."""
    import time

    from benchmarks.fuzz import _workers

    config = json.loads((served_project / "models/serving.json").read_text())
    config["analysis"] = {**config["analysis"], "timeout_seconds": 3}
    serving = served_project / f"models/serving-fault-{fault.split(':')[0]}.json"
    serving.write_text(json.dumps(config))
    with bentoml_serve(served_project, serving, tmp_path / "serve.log", env={"BGMFIT_FAULT": fault}) as (
        base,
        pid,
    ):
        workers = _workers(pid)
        files = {"audio": ("clip.flac", clip[0], "audio/flac")}
        for _ in range(2):  # the pool is replaced after each fault, and faults again
            started = time.monotonic()
            response = httpx.post(f"{base}/recommend", files=files, timeout=60)
            assert response.status_code == 503, response.text
            assert message in response.json()[0]["error"]
            assert time.monotonic() - started < 30
        # An episode is decoded in an analysis process too: the job fails with the reason.
        job = "fa" * 16
        submit = httpx.post(f"{base}/timeline/submit", files=files, data={"job": job}, timeout=60)
        assert submit.status_code == 200, submit.text
        deadline = time.monotonic() + 60
        while httpx.get(f"{base}/jobs/{job}/progress").json().get("step") != "failed":
            assert time.monotonic() < deadline, "the timeline job did not fail"
            time.sleep(0.5)
        assert message in httpx.get(f"{base}/jobs/{job}/progress").json()["error"]
        info = httpx.get(f"{base}/model-info", timeout=10)
        assert info.status_code == 200
        fused = np.zeros(info.json()["limits"]["fused_shape"]).tolist()
        assert httpx.post(f"{base}/recommend", json={"features": fused}, timeout=30).status_code == 200
        assert _workers(pid) == workers, "a BentoML worker was restarted"


def _raw_request(base: str, head: str, chunks, timeout: float = 60.0) -> tuple[int, str]:
    """Send ``head`` and then body ``chunks`` on a raw socket, until the server answers (or the chunks end).

    A server that refuses a body early answers while the client is still sending; reading the
    answer as soon as it is there is what a well-behaved client does, and what this measures.
    """
    import select
    import socket

    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as conn:
        conn.sendall(head.encode())
        for chunk in chunks:
            if select.select([conn], [], [], 0)[0]:
                break
            try:
                conn.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer) < answer.find(b"\r\n\r\n") + 4 + 20:
            part = conn.recv(65536)
            if not part:
                break
            answer += part
    status = int(answer.split(b" ", 2)[1])
    return status, answer.decode("utf-8", "replace")


def _tree_rss_mb(pid: int) -> float:
    import psutil

    root = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]) / 2**20


GIB = 2**30
MIB_CHUNK = b"0" * 2**20


GIB_CASES = [
    ("/recommend", "multipart", True),
    ("/recommend", "multipart", False),
    ("/recommend", "json", True),
    ("/recommend", "json", False),
    # Every other endpoint that takes a body, the timeline's included, chunked (no length to refuse by).
    *[(path, "multipart", False) for path in ("/match", "/similar", "/timeline/submit")],
    *[(path, "json", False) for path in ("/embed", "/render/submit", "/timeline/submit")],
]


@pytest.mark.parametrize(
    ("path", "kind", "declared"),
    GIB_CASES,
    ids=[f"{p} {k} {'with length' if d else 'chunked'}" for p, k, d in GIB_CASES],
)
def test_a_1_gib_body_is_refused_as_it_streams_and_memory_stays_flat(live_service, path, kind, declared):
    """1 GiB bodies, declared up front or chunked: 413 naming the cap, the server grows < 50 MB."""
    boundary = "bgmfitboundary"
    if kind == "multipart":
        ctype = f"multipart/form-data; boundary={boundary}"
        first = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="audio"; filename="big.wav"\r\n'
            "Content-Type: audio/wav\r\n\r\n"
        ).encode()
    else:
        ctype, first = "application/json", b'{"features": ['
    length = f"Content-Length: {GIB}\r\n" if declared else "Transfer-Encoding: chunked\r\n"
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\n{length}\r\n"

    def body():
        pieces = [first, *([MIB_CHUNK] * (GIB // len(MIB_CHUNK)))]
        for piece in pieces:
            yield piece if declared else f"{len(piece):x}\r\n".encode() + piece + b"\r\n"

    live_server, pid = live_service
    before = _tree_rss_mb(pid)
    status, answer = _raw_request(live_server, head, body())
    grown = _tree_rss_mb(pid) - before
    print(f"{path} {kind}, {'declared' if declared else 'chunked'}: {status}, server grew {grown:.1f} MB")
    assert status == 413, answer[:500]
    assert "over the limit of 1,048,576 bytes" in answer
    assert grown < 50, f"the server grew by {grown:.0f} MB"
    # It still serves.
    assert httpx.get(f"{live_server}/readyz", timeout=10).status_code == 200


def test_a_text_audio_field_is_refused_and_nothing_is_fetched(live_server):
    import socket

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/episode.mp3"
        as_multipart = httpx.post(
            f"{live_server}/recommend", files={"audio": (None, url), "top_k": (None, "3")}, timeout=30
        )
        as_form = httpx.post(f"{live_server}/similar", data={"audio": url}, timeout=30)
        as_json = httpx.post(f"{live_server}/recommend", json={"audio": url}, timeout=30)
        for response in (as_multipart, as_form, as_json):
            assert 400 <= response.status_code < 500, response.text
        assert "audio: expected an uploaded file" in as_multipart.text + as_form.text
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody connected


def test_a_track_is_scored_by_its_best_window_and_says_where_it_starts(served_project, monkeypatch, clip):
    """A track of three windows (three BGMs' embeddings, at 0, 5 and 10 s) scores as its best one."""
    import dataclasses

    from bgmfit.index.catalogue import CosineIndex

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{served_project / 'mlflow.db'}")
    catalogue = Catalogue.load(served_project / "models/index")
    versions = catalogue.versions()
    match, triplet = (load_version(name, str(v)) for name, v in versions.items())
    limits = Limits.from_params(load_params("package", PackageParams, served_project / "params.yaml"))
    plain = Recommender(match, triplet, versions, catalogue, limits)
    query = plain.query_from_audio(clip[0])
    bgm = [catalogue.tracks[r]["track_id"] for r in catalogue.bgm_rows[:3]]
    singles = plain.match(query, bgm)
    windows = catalogue.windows_of(np.array([catalogue.row_of[t] for t in bgm]))[0]
    long_row = len(catalogue.tracks)
    longer = dataclasses.replace(
        catalogue,
        tracks=[*catalogue.tracks, {**catalogue.tracks[catalogue.bgm_rows[0]], "track_id": "long"}],
        window_track=np.r_[catalogue.window_track, [long_row] * 3],
        window_offset=np.r_[catalogue.window_offset, [0.0, 5.0, 10.0]].astype(np.float32),
        match_deep=np.vstack([catalogue.match_deep, catalogue.match_deep[windows]]),
        triplet=CosineIndex(np.vstack([catalogue.triplet.vectors, catalogue.triplet.vectors[windows]])),
    )
    recommender = Recommender(match, triplet, versions, longer, limits)
    (long,) = recommender.match(query, ["long"])
    best = int(np.argmax([s["score"] for s in singles]))
    assert long["score"] == pytest.approx(singles[best]["score"], abs=1e-5)
    assert long["offset_seconds"] == [0.0, 5.0, 10.0][best]
    # Method B: the track is as near as its nearest window, and is found there.
    near = {r["track_id"]: r for r in recommender.similar(query=query, top_k=len(longer.tracks))}
    nearest = int(np.argmin([near[t]["distance"] for t in bgm]))
    assert near["long"]["distance"] == pytest.approx(near[bgm[nearest]]["distance"], abs=1e-5)
    assert near["long"]["offset_seconds"] == [0.0, 5.0, 10.0][nearest]


@pytest.fixture(scope="module")
def open_server(served_project, tmp_path_factory):
    """A second real `bentoml serve` of the same models and index, with the default limits of params.yaml."""
    from tests.signals import REPO

    config = json.loads((served_project / "models/serving.json").read_text())
    defaults = Limits.from_params(load_params("package", PackageParams, REPO / "params.yaml"))
    config["limits"] = {**config["limits"], **vars(defaults)}
    serving = served_project / "models/serving-default-limits.json"
    serving.write_text(json.dumps(config))
    log = tmp_path_factory.mktemp("serve-open") / "bentoml-serve.log"
    with bentoml_serve(served_project, serving, log) as (base, _):
        yield base


def test_a_4_minute_wav_song_an_m4a_and_an_opus_file_are_answered_with_offsets(open_server, rng):
    from bgmfit.audio import encode
    from tests.signals import click_track, harmonic_tone

    def music(seconds: float, rate: int) -> np.ndarray:
        import soxr

        y = harmonic_tone(196.0, seconds) + 0.3 * click_track(96.0, seconds)
        y = y + 0.01 * rng.standard_normal(y.size).astype(np.float32)
        return soxr.resample(y, 22050, rate).astype(np.float32)

    song = io.BytesIO()
    sf.write(song, np.stack([music(240.0, 44100)] * 2, axis=1), 44100, format="WAV", subtype="PCM_16")
    opus = io.BytesIO()
    sf.write(opus, music(30.0, 48000), 48000, format="OGG", subtype="OPUS")
    uploads = {
        "song.wav": song.getvalue(),  # about 42 MB: over the old 20 MB cap
        "episode.m4a": encode(music(30.0, 44100), 44100, "ipod", "aac"),
        "episode.opus": opus.getvalue(),
        "episode.webm": encode(music(30.0, 48000), 48000, "webm", "libopus"),
    }
    info = httpx.get(f"{open_server}/model-info", timeout=10).json()
    assert {"m4a", "opus"} <= set(info["limits"]["formats"])
    for name, content in uploads.items():
        for method in ("match", "triplet"):
            response = httpx.post(
                f"{open_server}/recommend",
                files={"audio": (name, content, "application/octet-stream")},
                data={"top_k": "5", "method": method},
                timeout=120,
            )
            assert response.status_code == 200, f"{name}: {response.text}"
            results = response.json()
            assert len(results) == 5, name
            assert all(0.0 <= r["offset_seconds"] <= r["duration_seconds"] for r in results), results


def test_real_recordings_are_answered_and_keep_their_top_1_through_the_service(open_server):
    """30 s excerpts of recordings no one here wrote, through `bentoml serve`, as they are and changed."""
    from scripts.real_invariance import excerpts, measure

    from tests.integration.test_real_recordings import MUSIC

    if debian_program(MUSIC, "singularity-music") is None:
        pytest.skip("Debian's singularity-music is not installed, and installing it needs root and apt-get")
    clips = excerpts(MUSIC, 30.0, 32)  # all 13 files of the package
    table = measure(open_server, clips)  # every request answered 200, or it raises
    print(json.dumps(table, indent=1))
    for method, changes in table.items():
        for change, figures in changes.items():
            assert figures["held"] >= 0.9, (method, change, figures)


def _analysis_processes(pid: int) -> list:
    """The upload-analysis processes under the server ``pid`` (spawned by each BentoML worker)."""
    from benchmarks.fuzz import _tree

    return [p for p in _tree(pid) if any("multiprocessing.spawn" in part for part in p.cmdline())]


def _accepted_connections(pid: int, port: int) -> int:
    """TCP connections on ``port`` that the server ``pid`` or its children have accepted."""
    from benchmarks.fuzz import _tree

    return sum(
        connection.laddr.port == port and connection.status == "ESTABLISHED"
        for process in _tree(pid)
        for connection in process.net_connections("tcp")
    )


def _gone_within(processes: list, seconds: float) -> list:
    """Those of ``processes`` still running after ``seconds``."""
    import psutil

    _, alive = psutil.wait_procs(processes, timeout=seconds)
    return alive


def test_sigterm_lets_the_uploads_in_flight_finish_with_200(served_project, tmp_path, clip):
    """SIGTERM to `bentoml serve` while 8 uploads are in flight: each is answered 200, then it stops,
    and so do its analysis processes; its timeline jobs' folder goes with it."""
    import signal
    import tempfile
    import time
    from concurrent.futures import ThreadPoolExecutor

    def job_folders() -> set[Path]:
        return set(Path(tempfile.gettempdir()).glob("bgmfit-jobs-*"))

    files = {"audio": ("clip.flac", clip[0], "audio/flac")}
    before = job_folders()
    with bentoml_serve(served_project, served_project / "models/serving.json", tmp_path / "serve.log") as (
        base,
        pid,
    ):
        own = job_folders() - before
        assert own, "the server made no folder for its timeline jobs"
        analysis = _analysis_processes(pid)
        assert len(analysis) == 2, analysis  # package.analysis_workers
        port = int(base.rsplit(":", 1)[1])
        # One client for all eight: eight clients' setup alone can outlast a fixed wait on two cores, and
        # a connection the server has not yet accepted when SIGTERM comes is reset, not in flight.
        with httpx.Client(timeout=60) as client, ThreadPoolExecutor(8) as pool:
            answers = [pool.submit(client.post, f"{base}/recommend", files=files) for _ in range(8)]
            deadline = time.monotonic() + 30
            while _accepted_connections(pid, port) < 8 and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(0.3)  # sent, and being answered
            os.kill(pid, signal.SIGTERM)
            statuses = [answer.result().status_code for answer in answers]
        assert statuses == [200] * 8
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                httpx.get(f"{base}/readyz", timeout=2)
            except httpx.TransportError:
                break  # it stopped after answering them
            time.sleep(0.5)
        else:
            raise AssertionError("the server still answers 60 s after SIGTERM")
        assert not _gone_within(analysis, 10), "analysis processes outlived the server"
    # Each server's jobs hold decoded episodes (an hour is ~320 MB): none may outlive it in the temp folder.
    deadline = time.monotonic() + 10
    while (left := own & job_folders()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"left behind: {sorted(left)}"


def test_a_killed_server_leaves_no_analysis_process_behind(served_project, tmp_path):
    """kill -9 of the whole `bentoml serve` tree but its analysis processes (each in a group of
    its own, deaf to SIGTERM): they notice that their parent is gone and exit."""
    import signal

    from benchmarks.fuzz import _tree

    with bentoml_serve(served_project, served_project / "models/serving.json", tmp_path / "serve.log") as (
        _,
        pid,
    ):
        analysis = _analysis_processes(pid)
        assert analysis
        for process in _tree(pid):
            if process not in analysis:
                process.send_signal(signal.SIGKILL)
        assert not _gone_within(analysis, 10), "analysis processes outlived a killed server"


def test_fifty_clients_trickling_bodies_do_not_slow_a_normal_one(live_server):
    """50 connections each send a body at 1 byte/s; a normal client's fused-array request is answered
    in its usual time meanwhile (median of 10, against 10 before they connected)."""
    import socket
    import statistics
    import threading
    import time

    info = httpx.get(f"{live_server}/model-info", timeout=10).json()
    body = {"features": np.zeros(info["limits"]["fused_shape"]).tolist(), "top_k": 3}

    def latencies() -> list[float]:
        times = []
        for _ in range(10):
            started = time.perf_counter()
            assert httpx.post(f"{live_server}/recommend", json=body, timeout=30).status_code == 200
            times.append(time.perf_counter() - started)
        return times

    before = statistics.median(latencies())
    host, port = live_server.removeprefix("http://").split(":")
    stop = threading.Event()
    slow = [socket.create_connection((host, int(port)), timeout=30) for _ in range(50)]

    def trickle() -> None:
        for conn in slow:
            conn.sendall(b"POST /recommend HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n")
            conn.sendall(b"Content-Length: 100000\r\n\r\n")
        while not stop.wait(1.0):
            for conn in slow:
                try:
                    conn.sendall(b" ")
                except OSError:
                    pass

    sender = threading.Thread(target=trickle, daemon=True)
    sender.start()
    try:
        time.sleep(2)
        during = statistics.median(latencies())
    finally:
        stop.set()
        sender.join(5)
        for conn in slow:
            conn.close()
    print(f"median {before * 1000:.0f} ms before, {during * 1000:.0f} ms with 50 trickling clients")
    assert during < max(3 * before, before + 0.25), (before, during)
