"""Copies of a training track as other copies of the same music sound: the variation a network must ignore.

Each copy draws, from a generator seeded by ``features.augment.seed`` and the file's
content hash (so the same file always gets the same copies):

- a later start, up to ``max_offset_seconds``;
- a gain from ``+-gain_db`` and an EQ tilt (a low shelf at 300 Hz up by t, a high shelf at
  3 kHz down by t, t from ``+-tilt_db``), by pedalboard;
- a short room reverb on ``reverb_probability`` of the copies, by pedalboard;
- white noise at an SNR drawn from ``snr_db``;
- a re-encode with one of ``codecs``: MP3 (pedalboard's LAME, VBR quality 2-6) or
  Ogg Vorbis (libsndfile, quality 0.3-0.7), decoded again.

Only the ``features`` stage makes copies, only of training tracks; they are analysed like any
file and levelled like any window, so the gain survives only where it clips.
"""

from __future__ import annotations

import io

import numpy as np
import pedalboard
import soundfile as sf

from bgmfit.audio import load_audio
from bgmfit.config import AugmentParams


def augmented_copies(
    y: np.ndarray, sample_rate: int, params: AugmentParams, content_key: str
) -> list[np.ndarray]:
    """``params.copies`` changed copies of the mono float32 waveform ``y``.

    ``content_key`` (the file's content hash, hex) seeds the copies with ``params.seed``.
    """
    rng = np.random.default_rng([params.seed, int(content_key[:15], 16)])
    return [_copy(y, sample_rate, params, rng) for _ in range(params.copies)]


def _copy(y: np.ndarray, sample_rate: int, params: AugmentParams, rng: np.random.Generator) -> np.ndarray:
    start = int(rng.uniform(0.0, params.max_offset_seconds) * sample_rate)
    y = np.asarray(y[start:] if start < y.size else y, dtype=np.float32)
    tilt = float(rng.uniform(-params.tilt_db, params.tilt_db))
    board = pedalboard.Pedalboard(
        [
            pedalboard.Gain(float(rng.uniform(-params.gain_db, params.gain_db))),
            pedalboard.LowShelfFilter(cutoff_frequency_hz=300.0, gain_db=tilt),
            pedalboard.HighShelfFilter(cutoff_frequency_hz=3000.0, gain_db=-tilt),
        ]
    )
    if rng.random() < params.reverb_probability:
        room, wet = float(rng.uniform(0.05, 0.3)), float(rng.uniform(0.05, 0.25))
        board.append(pedalboard.Reverb(room_size=room, wet_level=wet, dry_level=1.0 - wet))
    y = board(y, sample_rate)
    power = float(np.mean(np.square(y, dtype=np.float64)))
    if power > 0:
        snr_db = float(rng.uniform(*params.snr_db))
        noise = rng.standard_normal(y.size).astype(np.float32)
        y = y + noise * np.float32(np.sqrt(power / 10 ** (snr_db / 10)))
    y = np.clip(y, -1.0, 1.0).astype(np.float32)
    codec = params.codecs[int(rng.integers(len(params.codecs)))]
    if codec == "mp3":
        y = pedalboard.MP3Compressor(vbr_quality=float(rng.uniform(2.0, 6.0)))(y, sample_rate)
    elif codec == "vorbis":
        buffer = io.BytesIO()
        level = float(rng.uniform(0.3, 0.7))
        sf.write(buffer, y, sample_rate, format="OGG", subtype="VORBIS", compression_level=level)
        y = load_audio(buffer.getvalue(), sample_rate, name="vorbis copy")
    return np.asarray(y, dtype=np.float32)
