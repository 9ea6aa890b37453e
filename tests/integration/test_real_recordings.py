"""Recordings that no one here wrote: the OGG soundtrack of Debian's ``singularity-music``.

Installed by the test itself (as the browser check installs Chromium), or skipped with the reason.
"""

from __future__ import annotations

import glob
import io

import numpy as np
import pytest
import soundfile as sf

from bgmfit.audio import load_audio, rms_dbfs
from bgmfit.features.fusion import analyse
from tests.system import debian_program

pytestmark = pytest.mark.slow

MUSIC = "/usr/share/games/singularity/music/*.ogg"


@pytest.fixture(scope="module")
def recordings() -> list[str]:
    if debian_program(MUSIC, "singularity-music") is None:
        pytest.skip("Debian's singularity-music is not installed, and installing it needs root and apt-get")
    return sorted(glob.glob(MUSIC))[:6]


def _flac(y: np.ndarray, sample_rate: int, gain_db: float) -> bytes:
    """``y`` at ``gain_db`` as a 16-bit FLAC file: a quieter copy of the recording, as a user has it."""
    buffer = io.BytesIO()
    sf.write(buffer, y * 10 ** (gain_db / 20), sample_rate, format="FLAC", subtype="PCM_16")
    return buffer.getvalue()


def test_a_quieter_copy_of_a_real_recording_gives_the_same_features(recordings, features_params):
    rate, seconds = features_params.sample_rate, features_params.clip_seconds
    originals, quieter = [], []
    for path in recordings:
        y = load_audio(path, rate, max_seconds=seconds, name=path)
        loud, soft = (load_audio(_flac(y, rate, g), rate, max_seconds=seconds) for g in (0.0, -12.0))
        assert rms_dbfs(soft) == pytest.approx(rms_dbfs(loud) - 12.0, abs=0.1), "the copy is 12 dB quieter"
        originals.append(analyse(loud, features_params))
        quieter.append(analyse(soft, features_params))
    # In units of each column's spread over these recordings, as the networks see z-scores.
    fused = np.stack([f.fused for f in originals])
    scale = np.maximum(fused.reshape(-1, fused.shape[2]).std(axis=0), 1e-6)
    gap = np.abs(np.stack([f.fused for f in quieter]) - fused) / scale
    frames = np.stack([f.mfcc_frames for f in originals])
    frames_gap = np.abs(np.stack([f.mfcc_frames for f in quieter]) - frames) / frames.std(axis=(0, 1))
    # Measured on 2026-12-01: fused mean gap 0.006-0.012 per file, MFCC frames max 0.11. What remains
    # is the 16-bit noise floor 12 dB closer, which moves the top band's spectral contrast and the pitch
    # tracker's spread. Without the loudness step, rms_mean alone moves by a factor of 4.
    assert gap.mean() < 0.03, gap.mean()
    assert frames_gap.mean() < 0.005 and frames_gap.max() < 0.25, (frames_gap.mean(), frames_gap.max())
