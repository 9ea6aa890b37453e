"""Tonality: chroma, how strongly and in which mode it implies a key, and which key."""

from __future__ import annotations

import warnings
from functools import cache, lru_cache

import librosa
import librosa.core.constantq
import numpy as np
import scipy.sparse

from bgmfit.features.pooling import pool
from bgmfit.features.spectrum import Spectrum

PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
#: The 24 keys of :func:`key_correlations`, in its order: 12 major, then 12 minor.
KEYS = [f"{p}_major" for p in PITCH_CLASSES] + [f"{p}_minor" for p in PITCH_CLASSES]
COLUMNS = [f"chroma_{p}" for p in PITCH_CLASSES] + ["key_strength", "mode"] + [f"key_corr_{k}" for k in KEYS]
#: Constant-Q settings of the whole-clip key profile: librosa's chroma_cqt defaults (36 bins
#: per octave from C1) at a coarser hop, since only the average over the clip is kept.
KEY_HOP, KEY_FMIN_HZ, KEY_OCTAVES = 2048, 32.70, 7

# Krumhansl & Kessler (1982) probe-tone ratings for C major and C minor.
MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


@cache
def _chroma_filterbank(sample_rate: int, n_fft: int) -> np.ndarray:
    # tuning=0: librosa would otherwise estimate tuning per call, which costs more
    # than the chroma itself; the corpus and most produced music is at A440.
    return np.ascontiguousarray(librosa.filters.chroma(sr=sample_rate, n_fft=n_fft, tuning=0.0).T)


def chroma(spec: Spectrum) -> np.ndarray:
    """``(n_frames, 12)`` chroma from the power spectrum, each frame scaled to a peak of 1."""
    energy = spec.power @ _chroma_filterbank(spec.sample_rate, spec.n_fft)
    return energy / np.maximum(energy.max(axis=1, keepdims=True), 1e-10)


@cache
def _key_profiles() -> np.ndarray:
    rows = [np.roll(MAJOR_PROFILE, k) for k in range(12)] + [np.roll(MINOR_PROFILE, k) for k in range(12)]
    profiles = np.array(rows)
    profiles = profiles - profiles.mean(axis=1, keepdims=True)
    return profiles / np.linalg.norm(profiles, axis=1, keepdims=True)


def key_correlations(chroma_profile: np.ndarray) -> np.ndarray:
    """Pearson correlation of a 12-bin chroma profile with the 24 keys (12 major, then 12 minor)."""
    centred = chroma_profile - chroma_profile.mean()
    norm = np.linalg.norm(centred)
    return _key_profiles() @ centred / norm if norm > 0 else np.zeros(24)


class _FilterBank(scipy.sparse.csr_matrix):
    """One octave's constant-Q filters, which ``librosa.vqt`` rescales with ``bank[:] *= factor``.

    On a plain ``csr_matrix`` that is a copy, a multiply and a sparse assignment of the copy
    back, which cost more than the octave's filtering. Here the full slice is the bank itself,
    so the same multiply runs in place on its values and the assignment back is skipped.
    """

    def __getitem__(self, key):
        return self if _whole(key) else super().__getitem__(key)

    def __setitem__(self, key, value) -> None:
        if not (_whole(key) and value is self):
            super().__setitem__(key, value)


def _whole(key) -> bool:
    return isinstance(key, slice) and key == slice(None)


def _memoise_cqt_filters() -> None:
    """Build librosa's constant-Q filters once per process, not on every call.

    ``librosa.cqt`` rebuilds the same frequency-domain filter bank for each octave of
    every call (librosa can memoise it only on disk, through ``LIBROSA_CACHE_DIR``), which
    took 70 of the key profile's 100 ms per 10 s clip. The wrapped builder keeps each bank
    in memory and hands out a copy, a :class:`_FilterBank`, because ``librosa.vqt`` rescales
    the bank it gets in place; the output is bit for bit the same.
    """
    module = librosa.core.constantq
    build = module.__dict__["__vqt_filter_fft"]
    if getattr(build, "memoised", False):
        return

    @lru_cache(maxsize=64)
    def cached(sr, freqs, filter_scale, norm, sparsity, hop_length, window, gamma, dtype, alpha):
        basis, n_fft, lengths = build(
            sr,
            np.frombuffer(freqs),
            filter_scale,
            norm,
            sparsity,
            hop_length=hop_length,
            window=window,
            gamma=gamma,
            dtype=dtype,
            alpha=None if alpha is None else np.frombuffer(alpha),
        )
        return _FilterBank(basis), n_fft, lengths

    def memoised(
        sr,
        freqs,
        filter_scale,
        norm,
        sparsity,
        hop_length=None,
        window="hann",
        gamma=0.0,
        dtype=np.complex64,
        alpha=None,
    ):
        as_bytes = None if alpha is None else np.asarray(alpha, dtype=np.float64).tobytes()
        basis, n_fft, lengths = cached(
            float(sr),
            np.asarray(freqs, dtype=np.float64).tobytes(),
            filter_scale,
            norm,
            sparsity,
            hop_length,
            window,
            gamma,
            dtype,
            as_bytes,
        )
        return basis.copy(), n_fft, lengths.copy()

    memoised.memoised, memoised.original = True, build
    module.__dict__["__vqt_filter_fft"] = memoised


def key_profile(spec: Spectrum) -> np.ndarray:
    """``(24,)`` correlations of the whole clip's constant-Q chroma with the 24 :data:`KEYS`.

    Which key a piece is in is what a melody shares with the chords under it,
    although the two sound different pitch classes at any moment. The STFT
    chroma of :func:`chroma` cannot tell it reliably: at ``n_fft`` 2048 and
    22,050 Hz its bins are 10.8 Hz apart, wider than a semitone below about
    190 Hz, so the bass line, which carries the key of an accompaniment,
    smears over neighbouring pitch classes. A constant-Q transform resolves
    every octave alike.
    """
    if not np.any(spec.samples):
        return np.zeros(len(KEYS))
    # The top bin must stay below Nyquist: 7 octaves above C1 needs 8.4 kHz or more.
    octaves = min(KEY_OCTAVES, int(np.log2(spec.sample_rate / 2 / KEY_FMIN_HZ)))
    _memoise_cqt_filters()
    with warnings.catch_warnings():
        # A clip shorter than the lowest filter is analysed all the same; librosa warns about it.
        warnings.filterwarnings("ignore", message="n_fft=.* is too large", category=UserWarning)
        cqt_chroma = librosa.feature.chroma_cqt(
            y=spec.samples,
            sr=spec.sample_rate,
            hop_length=KEY_HOP,
            fmin=KEY_FMIN_HZ,
            n_octaves=octaves,
            tuning=0.0,
        )
    return key_correlations(cqt_chroma.mean(axis=1))


def tonality(spec: Spectrum, bounds: list[tuple[int, int]]) -> np.ndarray:
    """Per segment: mean chroma, key strength (best key correlation) and mode
    (best major minus best minor correlation); and for the whole clip its
    :func:`key_profile` (the same in every segment).

    Returns
    -------
    numpy.ndarray
        ``(n_segments, 38)``, columns as :data:`COLUMNS`.
    """
    profiles = pool(chroma(spec), bounds, "mean")
    keys = np.stack([key_correlations(p) for p in profiles])
    key_strength = keys.max(axis=1)
    mode = keys[:, :12].max(axis=1) - keys[:, 12:].max(axis=1)
    clip_key = np.tile(key_profile(spec), (len(bounds), 1))
    return np.hstack([profiles, key_strength[:, None], mode[:, None], clip_key]).astype(np.float32)
