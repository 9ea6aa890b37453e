"""Speech prosody: pitch (f0) statistics and how much of the audio is voiced.

Pitch comes from the real cepstrum of the shared STFT (Noll, 1967): a voiced
sound's harmonics repeat every f0 Hz along the spectrum, which puts a peak in
the cepstrum at quefrency 1/f0. This costs one inverse FFT of frames already
transformed, where a time-domain tracker (YIN, pYIN) would start from the
waveform again. For music the same numbers describe the melody's register.
"""

from __future__ import annotations

import numpy as np
import scipy.fft

from bgmfit.features.spectrum import Spectrum

COLUMNS = ["voiced_ratio", "f0_semitones_mean", "f0_semitones_std", "f0_semitones_range"]
MIN_F0_HZ, MAX_F0_HZ = 60.0, 400.0
#: Cepstral peak above which a frame counts as voiced; white noise peaks near 0.05,
#: a voiced vowel or a harmonic tone at 0.1-0.35.
VOICING_THRESHOLD = 0.1
#: Frames quieter than this below the loudest frame are treated as silence (dB).
SILENCE_BELOW_PEAK_DB = 40.0
REFERENCE_HZ = 100.0  # f0 is expressed in semitones relative to this


def cepstral_pitch(spec: Spectrum) -> tuple[np.ndarray, np.ndarray]:
    """Per frame: f0 in Hz and whether the frame is voiced.

    Returns
    -------
    tuple
        ``(f0 of shape (n_frames,), voiced boolean mask of shape (n_frames,))``.
        ``f0`` is meaningful only where ``voiced`` is true.
    """
    cepstrum = scipy.fft.irfft(np.log(spec.magnitude + 1e-6), axis=1, workers=1)
    low = int(spec.sample_rate / MAX_F0_HZ)
    high = min(int(spec.sample_rate / MIN_F0_HZ), spec.n_fft // 2 - 1)
    window = cepstrum[:, low : high + 1]
    peak_index = window.argmax(axis=1)
    peak = window[np.arange(window.shape[0]), peak_index]
    f0 = spec.sample_rate / (low + peak_index)
    rms = spec.rms
    loud = rms > rms.max() * 10 ** (-SILENCE_BELOW_PEAK_DB / 20) if rms.size else rms.astype(bool)
    return f0.astype(np.float32), (peak > VOICING_THRESHOLD) & loud


def prosody(spec: Spectrum, bounds: list[tuple[int, int]]) -> np.ndarray:
    """Per segment: voiced ratio, and over voiced frames the mean, spread and
    10th-90th percentile range of f0 in semitones above 100 Hz (zeros when none is voiced).

    Returns
    -------
    numpy.ndarray
        ``(n_segments, 4)``, columns as :data:`COLUMNS`.
    """
    f0, voiced = cepstral_pitch(spec)
    semitones = 12.0 * np.log2(f0 / REFERENCE_HZ)
    rows = []
    for s, e in bounds:
        pitched = semitones[s:e][voiced[s:e]]
        if pitched.size:
            spread = np.percentile(pitched, 90) - np.percentile(pitched, 10)
            rows.append((pitched.size / (e - s), pitched.mean(), pitched.std(), spread))
        else:
            rows.append((0.0, 0.0, 0.0, 0.0))
    return np.array(rows, dtype=np.float32)
