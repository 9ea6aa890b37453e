"""The analysis pool's shares of an upload put back together equal the file analysed in one process."""

from __future__ import annotations

import io
import threading

import numpy as np
import soundfile as sf
from threadpoolctl import threadpool_limits

from bgmfit.features.windows import analyse_windows
from bgmfit.serving.isolation import AnalysisPool, decode_upload


def _analysed_here(content: bytes, params):
    # One BLAS thread, as in the workers (and the features stage): the same sums in the same order.
    with threadpool_limits(1):
        return analyse_windows(decode_upload(content, params.sample_rate, 3600), params)


def _upload(seconds: float, rate: int, rng: np.random.Generator) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    y = 0.2 * np.sin(2 * np.pi * 220 * t * (1 + 0.2 * np.sin(t))) + 0.01 * rng.standard_normal(t.size)
    buffer = io.BytesIO()
    sf.write(buffer, y.astype(np.float32), rate, format="FLAC")
    return buffer.getvalue()


def test_an_upload_shared_among_idle_workers_gives_the_windows_of_one_process(features_params, rng):
    params = features_params.model_copy(update=dict(window_hop_seconds=3.0))
    uploads = {seconds: _upload(seconds, 16_000, rng) for seconds in (4.0, 14.5, 23.0)}
    pool = AnalysisPool(params, workers=2, timeout_seconds=60, memory_mb=3072)
    try:
        for seconds, content in uploads.items():
            expected = _analysed_here(content, params)
            shared = pool.analyse(content, 3600)  # the pool is idle: both workers take a share
            assert shared.offsets.tolist() == expected.offsets.tolist(), seconds
            np.testing.assert_array_equal(shared.fused, expected.fused)
            np.testing.assert_array_equal(shared.mfcc_frames, expected.mfcc_frames)
            assert shared.duration == expected.duration
        # Two uploads at once (the second finds no idle worker, or one): each gets all of its windows.
        answers: dict[float, object] = {}
        threads = [
            threading.Thread(target=lambda s=s: answers.__setitem__(s, pool.analyse(uploads[s], 3600)))
            for s in (14.5, 23.0)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for seconds, windows in answers.items():
            expected = _analysed_here(uploads[seconds], params)
            np.testing.assert_array_equal(windows.fused, expected.fused)
        assert pool._busy == 0
    finally:
        pool.close()


_SERVER_KILLED_WHILE_ITS_WORKER_STARTS = """
import multiprocessing, os, sys
from concurrent.futures import ProcessPoolExecutor
from bgmfit.config import FeaturesParams, load_params
from bgmfit.serving import isolation

features = load_params("features", FeaturesParams, sys.argv[1])
pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                           initializer=isolation._start_worker, initargs=(os.getpid(), 3072, features))
pool.submit(isolation.time.sleep, 120)
print(*pool._processes, flush=True)
os._exit(0)  # killed, in effect: the worker is still importing
"""


def test_a_worker_whose_server_died_while_it_started_still_exits():
    """The server goes before its worker has run its initializer: the worker must not take its new
    parent (init, or a subreaper) for the server and live on. It exits once started, not after its task."""
    import subprocess
    import sys

    import psutil

    from tests.conftest import REPO

    server = subprocess.Popen(
        [sys.executable, "-c", _SERVER_KILLED_WHILE_ITS_WORKER_STARTS, str(REPO / "params.yaml")],
        stdout=subprocess.PIPE,
        text=True,
    )
    worker = psutil.Process(int(server.stdout.readline()))  # the worker keeps the pipe: read a line
    assert server.wait(timeout=60) == 0
    try:
        worker.wait(timeout=60)  # imports and warm-up take seconds; the task would take 120 s
    except psutil.TimeoutExpired:
        worker.kill()
        raise AssertionError("the worker outlived the server it was started for") from None
    finally:
        server.stdout.close()


def test_the_jobs_folder_of_a_killed_server_goes_when_the_next_one_starts(tmp_path):
    """A real process makes its jobs folder and is killed with SIGKILL, which leaves it (with a
    decoded episode in it); the next process's folder sweeps it away and keeps the living one's."""
    import os
    import signal
    import subprocess
    import sys

    from bgmfit.serving.jobs import remove_orphans

    make = (
        "import time; from bgmfit.serving.jobs import jobs_folder; folder = jobs_folder(); "
        "open(folder.name + '/episode.f32', 'wb').write(bytes(1000)); "
        "print(folder.name, flush=True); time.sleep(60)"
    )
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    server = subprocess.Popen([sys.executable, "-c", make], stdout=subprocess.PIPE, text=True, env=env)
    left = server.stdout.readline().strip()
    server.send_signal(signal.SIGKILL)
    server.wait(10)
    assert os.path.isfile(f"{left}/episode.f32"), "a killed process removed its folder after all"
    living = tmp_path / f"bgmfit-jobs-{os.getpid()}-abc"  # this test's process: alive
    living.mkdir()
    unrelated = tmp_path / "bgmfit-jobs-notes"  # not named by jobs_folder: never touched
    unrelated.mkdir()

    # The next server: it makes its own folder (removed when it exits normally) after the sweep.
    subprocess.run(
        [sys.executable, "-c", "from bgmfit.serving.jobs import jobs_folder; jobs_folder()"],
        env=env,
        check=True,
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([living.name, unrelated.name])
    assert remove_orphans(tmp_path) == []


def test_a_jobs_folder_that_cannot_take_an_episode_is_a_503_naming_why(rng):
    import pytest

    from bgmfit.errors import RequestError
    from bgmfit.serving.isolation import _decode_to

    buffer = io.BytesIO()
    sf.write(buffer, (0.3 * rng.standard_normal(2 * 22050)).astype(np.float32), 22050, format="WAV")
    with pytest.raises(
        RequestError, match=r"episode\.wav: /dev/full: cannot write the decoded audio"
    ) as info:
        _decode_to(buffer.getvalue(), 22050, 3600, "episode.wav", "/dev/full")
    assert info.value.status == 503
