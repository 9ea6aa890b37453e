"""``features.executor: ray``: a small library through a local Ray instance equals the local executor.

The library is real recordings (Debian's ``singularity-music``, OGG; installed by the test or
skipped with the reason), one WAV cut from one of them, and a corrupt file. Ray is started by
the code under test (``ray.init`` on this machine, 127.0.0.1) and stopped by it.
"""

from __future__ import annotations

import glob
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bgmfit.audio import load_audio
from bgmfit.features.extract import extract_many
from tests.integration.test_real_recordings import MUSIC
from tests.system import debian_program

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> list[str]:
    pytest.importorskip("ray", reason="Ray is the optional extra bgmfit[ray]; make venv installs it")
    if debian_program(MUSIC, "singularity-music") is None:
        pytest.skip("Debian's singularity-music is not installed, and installing it needs root and apt-get")
    folder = tmp_path_factory.mktemp("ray-library")
    recordings = sorted(glob.glob(MUSIC))[:3]
    excerpt = load_audio(Path(recordings[0]).read_bytes(), 22050)[: 22050 * 25]
    sf.write(folder / "excerpt.wav", excerpt, 22050)
    (folder / "corrupt.ogg").write_bytes(b"OggS" + bytes(range(256)) * 8)
    return [*recordings, str(folder / "excerpt.wav"), str(folder / "corrupt.ogg")]


def _run(paths: list[str], params, executor: str, cache: Path) -> list:
    params = params.model_copy(update=dict(executor=executor, cache_dir=str(cache)))
    augment = [i == 1 for i in range(len(paths))]  # one training track: its augmented copies too
    return list(extract_many(paths, params, workers=2, augment=augment))


def test_ray_executor_equals_local_and_shares_its_cache(library, features_params, tmp_path):
    local = _run(library, features_params, "local", tmp_path / "local-cache")
    started = time.time()
    on_ray = _run(library, features_params, "ray", tmp_path / "ray-cache")
    session = Path("/tmp/ray/session_latest")  # Ray's default temp folder: a Ray instance did run
    assert session.exists() and session.resolve().stat().st_mtime >= started - 1

    assert [r.path for r in on_ray] == library  # input order, paths as given
    assert [r.error for r in on_ray] == [r.error for r in local]
    assert on_ray[-1].error and on_ray[-1].features is None  # the corrupt file, reported by both
    for mine, theirs in zip(local[:-1], on_ray[:-1], strict=True):
        assert not theirs.cached and theirs.features is not None
        for name in ("fused", "mfcc_frames", "offsets"):
            np.testing.assert_array_equal(getattr(theirs.features, name), getattr(mine.features, name))
        assert theirs.features.duration == mine.features.duration
    assert on_ray[1].copies_computed and on_ray[1].copies is not None
    np.testing.assert_array_equal(on_ray[1].copies.fused, local[1].copies.fused)
    assert len(on_ray[0].features.offsets) > 1  # whole recordings, in windows

    # What Ray wrote is the local executor's cache: read back, nothing is analysed again.
    again = _run(library, features_params, "local", tmp_path / "ray-cache")
    assert [r.cached for r in again[:-1]] == [True] * (len(library) - 1)
    assert not any(r.copies_computed for r in again)
    np.testing.assert_array_equal(again[2].features.fused, local[2].features.fused)
