"""A campaign of malformed requests against a real ``bentoml serve``: no answer may be a 5xx.

Three sources, interleaved across every endpoint:

- **Schemathesis** draws requests from the running service's OpenAPI schema
  (``/docs.json``), many examples per operation;
- **mutated real audio** in every accepted format (WAV 16-bit and float, FLAC,
  OGG/Vorbis, MP3, M4A/AAC, Opus), cut from the demo corpus or a given file:
  truncations, bit flips, overwritten runs, wrong magic, WAV header lies (sizes,
  rates, channel counts, sample widths), non-finite and overflowing samples, and
  FLAC files of a few hundred kB that decode to hours of silence;
- **odd multipart and JSON**: parts that name two fields, no or a wrong boundary,
  garbage after it, 1,100 fields, non-UTF-8 names and values, numbers of
  thousands of digits, deep nesting, bodies that lie about their type.

It reports the answers by status class, the server's peak memory (the whole
process tree), whether a worker was restarted (its process ids changed), and
saves every 5xx or hang (no answer in ``--timeout`` seconds) under ``--out``
with its request, so that each is a reproducer.

    .venv/bin/python -m benchmarks.fuzz --cases 10000     # starts its own server (after make run)
    .venv/bin/python -m benchmarks.fuzz --url http://127.0.0.1:3000 --pid 1234 --cases 500
"""

from __future__ import annotations

import argparse
import collections
import csv
import io
import json
import os
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import psutil
import soundfile as sf
import soxr

from bgmfit.audio import encode

#: A request: method, path, headers and raw body, as sent on the wire.
Request = tuple[str, str, dict[str, str], bytes]
UPLOAD_PATHS = ("/recommend", "/similar", "/match", "/timeline/submit")
JSON_PATHS = ("/recommend", "/similar", "/match", "/embed", "/render", "/render/submit", "/timeline/submit")
RATE = 22050
REQUESTS_ARGS = ("method", "url", "headers", "params", "json", "data", "files", "cookies")


# -- the seeds: real audio in every accepted format ---------------------------------------------


def seed_audio(manifest: Path = Path("data/raw/manifest.csv"), seconds: float = 6.0) -> np.ndarray:
    """A few seconds of one rendered demo-corpus BGM, mono at 22,050 Hz."""
    with open(manifest, newline="") as f:
        row = next(r for r in csv.DictReader(f) if r["role"] == "bgm")
    y, rate = sf.read(manifest.parent / row["path"], dtype="float32", always_2d=True)
    return soxr.resample(y.mean(axis=1), rate, RATE)[: int(seconds * RATE)].astype(np.float32)


def encoded_seeds(y: np.ndarray) -> dict[str, tuple[str, bytes]]:
    """``y`` in each accepted format: name -> (file name, bytes)."""

    def sndfile(fmt: str, subtype: str | None = None, data=y) -> bytes:
        buffer = io.BytesIO()
        sf.write(buffer, data, RATE, format=fmt, subtype=subtype)
        return buffer.getvalue()

    stereo = np.stack([y, y[::-1]], axis=1)
    return {
        "wav16": ("a.wav", sndfile("WAV", "PCM_16")),
        "wav-float-stereo": ("a.wav", sndfile("WAV", "FLOAT", stereo)),
        "flac": ("a.flac", sndfile("FLAC")),
        "ogg": ("a.ogg", sndfile("OGG", "VORBIS")),
        "mp3": ("a.mp3", encode(y, RATE, "mp3", "libmp3lame")),
        "m4a": ("a.m4a", encode(y, RATE, "ipod", "aac")),
        "opus": ("a.opus", encode(soxr.resample(y, RATE, 16000), 16000, "ogg", "libopus")),
    }


def hours_of_silence(hours: float) -> bytes:
    """A FLAC file of ``hours`` of digital silence at 8 kHz: a few hundred kB that decode to hours."""
    buffer = io.BytesIO()
    block = np.zeros(8000 * 60, dtype=np.int16)
    with sf.SoundFile(buffer, "w", 8000, 1, format="FLAC", subtype="PCM_16") as f:
        for _ in range(int(hours * 60)):
            f.write(block)
    return buffer.getvalue()


# -- mutations -----------------------------------------------------------------------------------

MAGIC = (
    b"RIFF",
    b"fLaC",
    b"OggS",
    b"ID3\x03",
    b"\xff\xfb\x90\x00",
    b"\x00\x00\x00\x20",
    b"RIFX",
    b"\0\0\0\0",
)


def _wav_lie(data: bytes, rng: random.Random) -> bytes:
    """One WAV header field (sizes, channels, rate, byte rate, alignment, width) set to a lie."""
    out = bytearray(data)
    offsets = {"riff size": (4, 4), "channels": (22, 2), "rate": (24, 4), "byte rate": (28, 4)}
    offsets |= {"align": (32, 2), "bits": (34, 2)}
    at = data.find(b"data")
    if at > 0:
        offsets["data size"] = (at + 4, 4)
    offset, width = offsets[rng.choice(sorted(offsets))]
    value = rng.choice([0, 1, 3, 7, 255, 65535, 2**31 - 1, 2**32 - 1, rng.randrange(2 ** (8 * width))])
    out[offset : offset + width] = (value % 2 ** (8 * width)).to_bytes(width, "little")
    return bytes(out)


def mutate(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    """One random mutation of an encoded file: its name and the new bytes."""
    kind = rng.choice(["truncate", "flip", "overwrite", "magic", "lie", "duplicate"])
    if kind == "truncate":
        return kind, data[: rng.randrange(len(data))]
    if kind == "flip":
        out = bytearray(data)
        for _ in range(rng.randint(1, 64)):
            out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
        return kind, bytes(out)
    if kind == "overwrite":
        start = rng.randrange(len(data))
        size = rng.randint(1, 512)
        return kind, data[:start] + rng.randbytes(size) + data[start + size :]
    if kind == "magic":
        return kind, rng.choice(MAGIC) + data[4:]
    if kind == "lie" and data[:4] == b"RIFF":
        return kind, _wav_lie(data, rng)
    start = rng.randrange(len(data))
    return "duplicate", data[:start] + data[start : start + 4096] * rng.randint(2, 50) + data[start:]


def float_wav(rng: random.Random) -> tuple[str, bytes]:
    """A float WAV with non-finite or overflowing samples."""
    y = (0.3 * np.sin(np.arange(RATE * 3) * 0.05)).astype(np.float64)
    kind = rng.choice(["nan", "inf", "3e38", "1e18", "denormal", "all-inf"])
    if kind in ("nan", "inf"):
        y[rng.randrange(y.size)] = np.nan if kind == "nan" else np.inf
    elif kind == "all-inf":
        y[:] = -np.inf
    else:
        y *= {"3e38": 3.3e38 / 0.3, "1e18": 1e18, "denormal": 1e-40}[kind]
    buffer = io.BytesIO()
    sf.write(
        buffer,
        y,
        rng.choice([8000, RATE, 44100, 48000]),
        format="WAV",
        subtype=rng.choice(["FLOAT", "DOUBLE"]),
    )
    return kind, buffer.getvalue()


# -- requests ------------------------------------------------------------------------------------


def multipart(parts: list[tuple[bytes, bytes]], boundary: bytes = b"fuzzboundary") -> tuple[dict, bytes]:
    """A multipart body from (Content-Disposition value, content) pairs."""
    body = b"".join(
        b"--" + boundary + b"\r\nContent-Disposition: " + disposition + b"\r\n\r\n" + content + b"\r\n"
        for disposition, content in parts
    )
    body += b"--" + boundary + b"--\r\n"
    return {"content-type": f"multipart/form-data; boundary={boundary.decode()}"}, body


def upload(path: str, filename: str, content: bytes, rng: random.Random) -> Request:
    extra = []
    if path == "/match":
        extra.append((b'form-data; name="track_ids"', b'["no-such-track"]'))
    if rng.random() < 0.3:
        extra.append((b'form-data; name="top_k"', rng.choice([b"5", b"0", b"-1", b"1e400", b"x"])))
    disposition = f'form-data; name="audio"; filename="{filename}"'.encode()
    headers, body = multipart([(disposition, content), *extra])
    return "POST", path, headers, body


def odd_request(rng: random.Random, audio: bytes) -> tuple[str, Request]:
    """One odd multipart or JSON request: its kind, and the request."""
    path = rng.choice(JSON_PATHS)
    file_part = (b'form-data; name="audio"; filename="a.wav"', audio)
    kind = rng.choice(
        [
            "two names",
            "no boundary",
            "wrong boundary",
            "garbage after boundary",
            "1100 fields",
            "non-UTF-8 name",
            "non-UTF-8 value",
            "huge number",
            "5000 digits",
            "text for file",
            "deep json",
            "json types",
            "json tokens",
            "json lies multipart",
            "empty body",
            "binary as json",
            "urlencoded",
        ]
    )
    json_headers = {"content-type": "application/json"}
    if kind == "two names":
        headers, body = multipart([(b'form-data; name="audio"; name="top_k"; filename="a.wav"', audio)])
    elif kind == "no boundary":
        _, body = multipart([file_part])
        headers = {"content-type": "multipart/form-data"}
    elif kind == "wrong boundary":
        headers, body = multipart([file_part])
        headers = {"content-type": "multipart/form-data; boundary=other"}
    elif kind == "garbage after boundary":
        headers, body = multipart([file_part])
        body = body.replace(b"--fuzzboundary\r\n", b"--fuzzboundary" + rng.randbytes(8) + b"\r\n", 1)
    elif kind == "1100 fields":
        headers, body = multipart(
            [file_part, *[(f'form-data; name="f{i}"'.encode(), b"1") for i in range(1100)]]
        )
    elif kind == "non-UTF-8 name":
        headers, body = multipart([(b'form-data; name="\xff\xfe\xfd"', b"1"), file_part])
    elif kind == "non-UTF-8 value":
        headers, body = multipart([(b'form-data; name="top_k"', b"\xff\xfe"), file_part])
    elif kind == "huge number":
        headers, body = multipart([(b'form-data; name="top_k"', b"55555555555555555555"), file_part])
    elif kind == "5000 digits":
        headers, body = multipart([(b'form-data; name="top_k"', b"5" * 5000), file_part])
    elif kind == "text for file":
        headers, body = multipart([(b'form-data; name="audio"', b"http://127.0.0.1:9/a.wav")])
    elif kind == "deep json":
        depth = rng.choice([100, 10_000, 100_000])
        headers, body = json_headers, b'{"features": ' + b"[" * depth + b"]" * depth + b"}"
    elif kind == "json types":
        value = rng.choice(['{"features": "x"}', '{"features": [[null]]}', '{"top_k": 1e999}', '{"job": 5}'])
        headers, body = json_headers, value.encode()
    elif kind == "json tokens":
        headers, body = json_headers, rng.choice([b"{}", b"[]", b"null", b"1", b'"x"', b"{", b"NaN"])
    elif kind == "json lies multipart":
        headers, body = {"content-type": "multipart/form-data; boundary=x"}, b'{"features": [[1.0]]}'
    elif kind == "empty body":
        headers, body = (
            rng.choice([json_headers, {"content-type": "multipart/form-data; boundary=x"}, {}]),
            b"",
        )
    elif kind == "binary as json":
        headers, body = json_headers, audio[:4096]
    else:
        headers, body = {"content-type": "application/x-www-form-urlencoded"}, b"top_k=3&styles=%ff"
    return kind, ("POST", path, headers, body)


def schemathesis_requests(base: str, per_operation: int, seed: int) -> Iterator[tuple[str, Request]]:
    """Requests drawn by Schemathesis from the server's OpenAPI schema."""
    import requests
    import schemathesis
    from hypothesis import HealthCheck, given, settings

    schema = schemathesis.openapi.from_url(f"{base}/docs.json")
    for result in schema.get_all_operations():
        operation = result.ok()
        label, drawn = operation.label, []

        @given(operation.as_strategy())
        @settings(
            max_examples=per_operation,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        def draw(case) -> None:
            kwargs = case.as_transport_kwargs(base_url=base)
            kwargs = {k: v for k, v in kwargs.items() if k in REQUESTS_ARGS}
            built = requests.Request(**kwargs).prepare()  # the exact bytes Schemathesis would send
            body = built.body or b""
            body = body.encode() if isinstance(body, str) else body
            request = (built.method, built.path_url, dict(built.headers), body)
            drawn.append((f"schemathesis {label}", request))  # noqa: B023 - drawn before the next loop

        draw()
        yield from drawn


def campaign_requests(base: str, cases: int, seed: int, audio: np.ndarray) -> list[tuple[str, Request]]:
    """``cases`` requests: a third each from Schemathesis, mutated audio, and odd multipart/JSON."""
    rng = random.Random(seed)
    seeds = encoded_seeds(audio)
    wav = seeds["wav16"][1]
    operations = 12  # the service's operations in its schema, roughly
    drawn = list(schemathesis_requests(base, max(5, cases // 3 // operations), seed))[: cases // 3]
    silence = {hours: hours_of_silence(hours) for hours in (0.5, 2.9, 3.5)}
    while len(drawn) < cases:
        roll = rng.random()
        path = rng.choices(UPLOAD_PATHS, weights=(6, 3, 3, 1))[0]
        if roll < 0.45:
            name, (filename, data) = rng.choice(sorted(seeds.items()))
            kind, mutated = mutate(data, rng)
            drawn.append((f"{name} {kind}", upload(path, filename, mutated, rng)))
        elif roll < 0.55:
            kind, data = float_wav(rng)
            drawn.append((f"float wav {kind}", upload(path, "a.wav", data, rng)))
        elif roll < 0.56:  # to the endpoints that answer at once (a timeline job of hours takes minutes)
            hours, path = rng.choice(sorted(silence)), rng.choice(UPLOAD_PATHS[:3])
            drawn.append((f"{hours} h of silence", upload(path, "a.flac", silence[hours], rng)))
        else:
            kind, request = odd_request(rng, wav)
            drawn.append((kind, request))
    rng.shuffle(drawn)
    return drawn


# -- the run -------------------------------------------------------------------------------------


@dataclass
class Report:
    statuses: collections.Counter = field(default_factory=collections.Counter)
    server_errors: list[tuple[str, int, str]] = field(default_factory=list)
    hangs: list[str] = field(default_factory=list)
    peak_mb: float = 0.0
    start_mb: float = 0.0
    restarts: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        classes = collections.Counter()
        for status, count in self.statuses.items():
            classes[f"{status // 100}xx"] += count
        lines = [
            f"cases: {sum(self.statuses.values()) + len(self.hangs)} in {self.seconds:.0f} s",
            "by class: " + ", ".join(f"{k} {v}" for k, v in sorted(classes.items())),
            "by status: " + ", ".join(f"{k} {v}" for k, v in sorted(self.statuses.items())),
            f"5xx: {len(self.server_errors)}, hangs: {len(self.hangs)}, worker restarts: {self.restarts}",
            f"server memory (process tree RSS): {self.start_mb:.0f} MB at start, peak {self.peak_mb:.0f} MB",
        ]
        lines += [f"  5xx {status} {kind}: {text}" for kind, status, text in self.server_errors[:20]]
        return "\n".join(lines)


def _tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def _workers(pid: int) -> set[int]:
    """BentoML's worker processes under ``pid`` (not the decoding processes, which are replaced by design)."""
    found = set()
    for process in _tree(pid):
        try:
            if any("_bentoml_impl.worker" in part for part in process.cmdline()):
                found.add(process.pid)
        except psutil.Error:
            continue
    return found


def _non_finite(response: httpx.Response) -> bool:
    """Whether a JSON answer carries NaN or infinity (Python's json writes them; JSON has no such numbers)."""
    if "json" not in response.headers.get("content-type", ""):
        return False
    found = []
    try:
        json.loads(response.content, parse_constant=found.append)
    except ValueError:
        return False
    return bool(found)


def saved_requests(folder: Path) -> list[tuple[str, Request]]:
    """The reproducers a campaign saved in ``folder``, to send again (``--replay``)."""
    cases = []
    for meta in sorted(folder.glob("case-*.json")):
        case = json.loads(meta.read_text())
        body = meta.with_suffix(".body").read_bytes()
        cases.append((case["kind"], (case["method"], case["path"], case["headers"], body)))
    return cases


def run_campaign(
    base: str,
    pid: int,
    cases: int,
    seed: int = 0,
    concurrency: int = 4,
    timeout: float = 120.0,
    out: Path | None = None,
    audio: np.ndarray | None = None,
    progress: Callable[[int], None] | None = None,
    requests: list[tuple[str, Request]] | None = None,
) -> Report:
    """Send the campaign's requests (or ``requests``) to ``base``, a server whose root process is ``pid``."""
    if requests is None:
        requests = campaign_requests(base, cases, seed, seed_audio() if audio is None else audio)
    report = Report()
    workers_before = _workers(pid)
    report.start_mb = report.peak_mb = sum(p.memory_info().rss for p in _tree(pid)) / 2**20
    done = threading.Event()

    def watch_memory() -> None:
        while not done.wait(0.25):
            try:
                rss = sum(p.memory_info().rss for p in _tree(pid)) / 2**20
            except psutil.Error:
                continue
            report.peak_mb = max(report.peak_mb, rss)

    lock = threading.Lock()

    def send(numbered: tuple[int, tuple[str, Request]]) -> None:
        number, (kind, (method, path, headers, body)) = numbered
        try:
            with httpx.Client(timeout=timeout) as client:
                response = client.request(method, base + path, headers=headers, content=body)
            status, text = response.status_code, response.text[:300]
            bad = status >= 500 or _non_finite(response)
        except httpx.TimeoutException:
            status, text, bad = None, "no answer", True
        except httpx.TransportError as exc:
            status, text, bad = None, f"connection failed: {exc}", True
        with lock:
            if status is not None:
                report.statuses[status] += 1
            if status is None:
                report.hangs.append(f"{kind} {path}: {text}")
            elif bad:
                report.server_errors.append((kind, status, f"{path}: {text}"))
            if bad and out is not None:
                out.mkdir(parents=True, exist_ok=True)
                (out / f"case-{number:05d}.json").write_text(
                    json.dumps(
                        {"kind": kind, "method": method, "path": path, "headers": headers, "status": status}
                    )
                )
                (out / f"case-{number:05d}.body").write_bytes(body)
            if progress:
                progress(1)

    watcher = threading.Thread(target=watch_memory, daemon=True)
    watcher.start()
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(send, enumerate(requests)))
    report.seconds = time.perf_counter() - started
    done.set()
    report.restarts = len(_workers(pid) - workers_before)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", type=int, default=10_000, help="requests to send (default 10,000)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the campaign (default 0)")
    parser.add_argument("--concurrency", type=int, default=4, help="clients at once (default 4)")
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="seconds before a request counts as a hang"
    )
    parser.add_argument("--url", help="a running server to fuzz (default: start bentoml serve here)")
    parser.add_argument(
        "--pid", type=int, help="with --url: the server's root process id, for memory and restarts"
    )
    parser.add_argument("--out", type=Path, default=Path("build/fuzz"), help="where 5xx and hangs are saved")
    parser.add_argument("--replay", type=Path, help="send the reproducers saved in this folder instead")
    args = parser.parse_args()
    from tqdm import tqdm

    from benchmarks.machine import describe

    server = None
    if args.url:
        if args.pid is None:
            parser.error("--url needs --pid (the server's root process id)")
        base, pid = args.url.rstrip("/"), args.pid
    else:
        from benchmarks.serve import start_server

        server, base = start_server()
        pid = server.pid
    print(describe())
    replayed = saved_requests(args.replay) if args.replay else None
    try:
        with tqdm(total=len(replayed) if replayed else args.cases, unit="req", desc="fuzz") as bar:
            report = run_campaign(
                base,
                pid,
                args.cases,
                args.seed,
                args.concurrency,
                args.timeout,
                None if replayed else args.out,
                progress=bar.update,
                requests=replayed,
            )
    finally:
        if server is not None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(60)
    print(report.summary())
    if report.server_errors or report.hangs or report.restarts:
        if not replayed:
            print(f"reproducers saved in {args.out}/")
        raise SystemExit(1)


if __name__ == "__main__":
    main()
