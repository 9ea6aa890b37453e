"""The one short-time Fourier transform that every feature dimension shares."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache, cached_property

import librosa
import numpy as np
import scipy.fft
import scipy.signal

#: Floor of the log-mel spectrogram below its peak, in dB (as librosa's ``top_db``).
TOP_DB = 80.0


@dataclass(frozen=True)
class Spectrum:
    """A track's STFT and what derives directly from it.

    Frames are rows (time first) so that every per-frame reduction walks
    contiguous memory.

    Attributes
    ----------
    samples:
        ``(n_samples,)`` the mono float32 waveform the STFT was taken of.
    frames:
        ``(n_frames, n_fft)`` raw, unwindowed samples of each centred frame.
    power:
        ``(n_frames, n_fft // 2 + 1)`` power spectrum of the Hann-windowed frames.
    magnitude:
        Square root of ``power``.
    mel_db:
        ``(n_frames, n_mels)`` log-mel power in dB, floored at ``TOP_DB`` below its peak.
    freqs:
        ``(n_fft // 2 + 1,)`` bin centre frequencies in Hz.
    sample_rate, n_fft, hop_length:
        Rate in Hz, window and hop in samples.
    """

    samples: np.ndarray
    frames: np.ndarray
    power: np.ndarray
    magnitude: np.ndarray
    mel_db: np.ndarray
    freqs: np.ndarray
    sample_rate: int
    n_fft: int
    hop_length: int

    @property
    def n_frames(self) -> int:
        """Number of STFT frames."""
        return self.power.shape[0]

    @cached_property
    def rms(self) -> np.ndarray:
        """``(n_frames,)`` root-mean-square amplitude of each raw frame (a sine of amplitude A gives
        A/sqrt(2)); computed once, as both energy and prosody read it."""
        return np.sqrt(np.mean(np.square(self.frames), axis=1))


@cache
def _hann(n_fft: int) -> np.ndarray:
    return scipy.signal.get_window("hann", n_fft, fftbins=True).astype(np.float32)


@cache
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """``(n_bins, n_mels)`` Slaney mel filterbank (librosa's default), transposed for ``power @ fb``."""
    return np.ascontiguousarray(librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels).T)


def compute_spectrum(y: np.ndarray, sample_rate: int, n_fft: int, hop_length: int, n_mels: int) -> Spectrum:
    """STFT a mono waveform once, with frames centred as librosa centres them.

    Parameters
    ----------
    y:
        Mono float32 waveform.
    sample_rate:
        Its rate in Hz.
    n_fft, hop_length:
        Window and hop in samples.
    n_mels:
        Mel bands of ``mel_db``.

    Returns
    -------
    Spectrum
        ``1 + len(y) // hop_length`` frames.
    """
    y = np.asarray(y, dtype=np.float32)
    padded = np.pad(y, n_fft // 2)
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop_length][: 1 + y.size // hop_length]
    frames = np.ascontiguousarray(frames)
    # scipy.fft is several times faster than numpy's FFT on float32 in numpy 2.x.
    spectrum = scipy.fft.rfft(frames * _hann(n_fft), axis=1, workers=1)
    power = (spectrum.real**2 + spectrum.imag**2).astype(np.float32)
    mel = power @ mel_filterbank(sample_rate, n_fft, n_mels)
    mel_db = 10.0 * np.log10(np.maximum(mel, 1e-10))
    mel_db = np.maximum(mel_db, mel_db.max() - TOP_DB)
    return Spectrum(
        samples=y,
        frames=frames,
        power=power,
        magnitude=np.sqrt(power),
        mel_db=mel_db.astype(np.float32),
        freqs=np.fft.rfftfreq(n_fft, 1.0 / sample_rate).astype(np.float32),
        sample_rate=sample_rate,
        n_fft=n_fft,
        hop_length=hop_length,
    )


def mfcc(spec: Spectrum, n_mfcc: int) -> np.ndarray:
    """``(n_frames, n_mfcc)`` MFCCs: the orthonormal DCT-II of the log-mel rows (as librosa)."""
    return scipy.fft.dct(spec.mel_db, type=2, norm="ortho", axis=1, workers=1)[:, :n_mfcc]


def segment_bounds(n_frames: int, frames_per_segment: float, n_segments: int) -> list[tuple[int, int]]:
    """Frame index ranges ``[start, end)`` of consecutive segments; each holds at least one frame."""
    bounds = []
    for i in range(n_segments):
        start = min(int(round(i * frames_per_segment)), n_frames - 1)
        end = max(start + 1, min(int(round((i + 1) * frames_per_segment)), n_frames))
        bounds.append((start, end))
    return bounds
