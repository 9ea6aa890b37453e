"""Decoding and analysis of uploads in worker processes with a time and a memory limit.

An upload is the one input of the service that runs third-party C code on bytes a
client chose: libsndfile, FFmpeg, soxr. A decoder that hangs or crashes on such
bytes, or a file that decodes to more samples than memory holds, must cost that
one request, never the server. :class:`AnalysisPool` runs each upload's decode and
feature analysis in a small pool of processes (deaf to SIGTERM, so that a
graceful stop of the server lets them finish), each capped with
``RLIMIT_DATA``, and waits at most ``timeout_seconds`` for the answer:

- a decode or analysis error comes back as the :class:`RequestError` it maps to;
- a worker over its memory cap ends the request with 413;
- a worker that crashes, or that does not answer in time, is killed with its pool,
  which is replaced; the request gets 503 with the reason, and the others carry on.

An episode for a timeline is decoded the same way (:meth:`AnalysisPool.decode_to`).
An upload's windows are shared out among the workers that are idle when it arrives;
each decodes the file and analyses its share. So one client's 30 s query uses every
core, and under load each upload keeps to one worker. The windows come out the same.

``BGMFIT_FAULT=sleep:SECONDS`` or ``BGMFIT_FAULT=abort``, set in the server's
environment, makes every decode hang or crash: the tests inject both faults with it.
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import signal
import threading
import time
from concurrent.futures import BrokenExecutor, ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from bgmfit.audio import ACCEPTED_TEXT, decode_to_file, load_audio, probe_audio
from bgmfit.config import FeaturesParams
from bgmfit.errors import (
    AudioDecodeError,
    BgmfitError,
    RequestError,
    UnsupportedAudioError,
    UnusableAudioError,
)
from bgmfit.features.fusion import analyse
from bgmfit.features.windows import TrackWindows, analyse_windows, window_starts

FAULT = "BGMFIT_FAULT"


def decode_upload(
    content: bytes, sample_rate: int, max_seconds: float, name: str = "upload", target: Path | None = None
) -> np.ndarray | None:
    """Decode an upload whole, mono at ``sample_rate``, after its header's duration is checked.

    With ``target``, the samples stream into that file instead (raw float32,
    :func:`~bgmfit.audio.decode_to_file`), so that an episode is never in memory whole, and
    nothing is returned.

    Raises
    ------
    RequestError
        413 over ``max_seconds``; 415 not audio in an accepted format; 422 samples that are
        not finite or far past full scale; 400 empty, truncated or otherwise undecodable.
    """
    try:
        seconds, _ = probe_audio(content, name)
        if seconds > max_seconds:
            raise RequestError(413, f"{name}: {seconds:.1f} s is over the limit of {max_seconds:g} s")
        if target is not None:
            decode_to_file(content, target, sample_rate, name=name)
            return None
        return load_audio(content, sample_rate, name=name)
    except UnsupportedAudioError as exc:
        message = str(exc) if ACCEPTED_TEXT in str(exc) else f"{exc}; send {ACCEPTED_TEXT}"
        raise RequestError(415, message) from None
    except UnusableAudioError as exc:
        raise RequestError(422, str(exc)) from None
    except AudioDecodeError as exc:
        raise RequestError(400, str(exc)) from None


def _inject_fault() -> None:
    fault = os.environ.get(FAULT, "")
    if fault == "abort":
        os.abort()
    if fault.startswith("sleep:"):
        time.sleep(float(fault.split(":", 1)[1]))


def _analyse(
    content: bytes, features: FeaturesParams, max_seconds: float, name: str, part: int, parts: int
) -> TrackWindows | None:
    """Decode an upload and analyse every ``parts``-th of its windows, from the ``part``-th
    (None when that share is empty: a short upload has fewer windows than workers)."""
    _inject_fault()
    try:
        y = decode_upload(content, features.sample_rate, max_seconds, name)
        length = int(round(features.clip_seconds * features.sample_rate))
        starts = window_starts(y.size, features)[part::parts]
        tracks = [analyse(y[s : s + length], features) for s in starts]
    except MemoryError:
        raise RequestError(413, f"{name}: decoding it needs more memory than an upload may use") from None
    if not tracks:
        return None
    return TrackWindows(
        fused=np.stack([t.fused for t in tracks]),
        mfcc_frames=np.stack([t.mfcc_frames for t in tracks]),
        offsets=(starts / features.sample_rate).astype(np.float32),
        duration=y.size / features.sample_rate,
    )


def _decode_to(content: bytes, sample_rate: int, max_seconds: float, name: str, target: str) -> None:
    """Decode an upload into ``target``, a file of raw float32 samples."""
    _inject_fault()
    try:
        decode_upload(content, sample_rate, max_seconds, name, Path(target))
    except MemoryError:
        raise RequestError(413, f"{name}: decoding it needs more memory than an upload may use") from None
    except RequestError:
        raise
    except BgmfitError as exc:  # the job's folder cannot take the samples: the server's state, not the upload
        raise RequestError(503, f"{name}: {exc}") from None


def _merge(shares: list[TrackWindows | None]) -> TrackWindows:
    """The windows of every share, back in the file's order (share ``i`` holds windows ``i::parts``)."""
    shares = [s for s in shares if s is not None]
    if len(shares) == 1:
        return shares[0]
    order = np.argsort(np.concatenate([s.offsets for s in shares]), kind="stable")
    return TrackWindows(
        fused=np.concatenate([s.fused for s in shares])[order],
        mfcc_frames=np.concatenate([s.mfcc_frames for s in shares])[order],
        offsets=np.concatenate([s.offsets for s in shares])[order],
        duration=shares[0].duration,
    )


def _end_with_parent(parent: int, every_seconds: float = 1.0) -> None:
    """Exit once ``parent`` is gone. A spawned worker holds both ends of its call queue's pipe, so
    it never reads end-of-file when the server stops or is killed; without this it lives on."""
    while os.getppid() == parent:
        time.sleep(every_seconds)
    os._exit(0)


def _start_worker(parent: int, memory_mb: int, features: FeaturesParams) -> None:
    # A graceful stop of `bentoml serve` signals the worker's children (and its group) as well:
    # the decodes of requests the server is still answering must finish. A worker ends at the
    # pool's shutdown, or within a second of its parent's end, however that came. ``parent`` is
    # the server's pid as the server saw it: a worker still starting when the server was killed
    # already has another parent, and os.getppid() here would wait on that one for ever.
    os.setpgrp()
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_end_with_parent, args=(parent,), daemon=True).start()
    # One thread each: the workers share the cores, and BLAS threads beside them only spin.
    threadpool_limits(1)
    limit = memory_mb * 2**20
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    # Compile and load the analysis path once, so that the first upload does not pay for it.
    analyse_windows(
        np.random.default_rng(0).normal(0, 0.1, features.sample_rate).astype(np.float32), features
    )


class AnalysisPool:
    """``workers`` processes that decode and analyse uploads (see the module's docstring).

    Parameters
    ----------
    features:
        The feature settings the index was built with.
    workers:
        Processes in the pool: uploads analysed at once.
    timeout_seconds:
        How long one upload may take, queueing included, before its worker is killed.
    memory_mb:
        Each worker's cap on its data segment (heap and anonymous maps).
    """

    def __init__(
        self, features: FeaturesParams, workers: int, timeout_seconds: float, memory_mb: int
    ) -> None:
        self.features, self.workers = features, workers
        self.timeout_seconds, self.memory_mb = timeout_seconds, memory_mb
        self._lock = threading.Lock()
        self._busy = 0  # workers counted by _reserve and not yet done
        self._pool = self._start()

    def _start(self) -> ProcessPoolExecutor:
        # spawn: a clean process, not a fork of this one with its threads and models; and each
        # worker's parent is this process (a forkserver would die with the server's group).
        pool = ProcessPoolExecutor(
            self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker,
            initargs=(os.getpid(), self.memory_mb, self.features),
        )
        # Start every worker now, each warming up, rather than at the first uploads: until each has
        # answered, one warm worker can take every task while another is still importing.
        started: set[int] = set()
        while True:
            started.update(f.result() for f in [pool.submit(os.getpid) for _ in range(self.workers)])
            if len(started) == self.workers:
                return pool
            time.sleep(0.1)  # not a busy loop beside the workers still importing

    def analyse(self, content: bytes, max_seconds: float, name: str = "upload") -> TrackWindows:
        """Every window's features of an upload, decoded in one worker or shared among the idle ones.

        Raises
        ------
        RequestError
            The decode's own refusal (400, 413, 415, 422); 413 for a worker over its memory
            cap; 503 for a worker that crashed or took over ``timeout_seconds``.
        """
        parts = self._reserve(self.workers)
        jobs = [(_analyse, content, self.features, max_seconds, name, part, parts) for part in range(parts)]
        return _merge(self._run(jobs, name))

    def decode_to(self, content: bytes, max_seconds: float, target: Path, name: str = "upload") -> None:
        """Decode an upload in a worker, mono at the features' rate, into ``target`` (raw float32).
        An episode's waveform goes by file, not through the pipe.

        Raises
        ------
        RequestError
            As :meth:`analyse`.
        """
        rate = self.features.sample_rate
        self._reserve(1)
        self._run([(_decode_to, content, rate, max_seconds, name, str(target))], name)

    def _reserve(self, most: int) -> int:
        """Count up to ``most`` idle workers (at least one) as busy: how many."""
        with self._lock:
            count = max(1, min(most, self.workers - self._busy))
            self._busy += count
            return count

    def _run(self, jobs: list[tuple], name: str) -> list:
        """Run each ``(function, *args)`` of ``jobs`` at once, on workers that :meth:`_reserve`
        counted; their answers in order."""
        pool = self._pool
        deadline = time.monotonic() + self.timeout_seconds
        try:
            futures = [pool.submit(*job) for job in jobs]
            return [f.result(timeout=max(0.0, deadline - time.monotonic())) for f in futures]
        except FutureTimeout:
            self._replace(pool)
            raise RequestError(
                503, f"{name}: decoding and analysis took over {self.timeout_seconds:g} s and was stopped"
            ) from None
        except BrokenExecutor:
            self._replace(pool)
            raise RequestError(
                503, f"{name}: the decoder crashed on this file; it was not analysed"
            ) from None
        finally:
            with self._lock:
                self._busy -= len(jobs)

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        """Kill ``broken``'s workers (a hung decode cannot be cancelled) and start a new pool."""
        with self._lock:
            if self._pool is not broken:
                return  # another request replaced it already
            for process in list(getattr(broken, "_processes", {}).values()):
                process.kill()
            broken.shutdown(wait=False, cancel_futures=True)
            self._pool = self._start()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
