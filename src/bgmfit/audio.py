"""Decoding, resampling, level measurement and loudness: the only module that opens audio files.

Decoding goes through libsndfile (``soundfile``), which reads WAV, FLAC, OGG/Vorbis
and MP3 by content, not by file extension. Resampling uses soxr's HQ preset;
librosa's ``kaiser_*`` resamplers are 15-100x slower for no audible gain here.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from bgmfit.errors import AudioDecodeError, UnsupportedAudioError

#: Formats accepted everywhere bgmfit reads audio, as libsndfile names them.
ACCEPTED_FORMATS = ("WAV", "FLAC", "OGG", "MP3")
_TRUNCATION_TOLERANCE = 0.9


def load_audio(
    source: str | Path | bytes,
    sample_rate: int,
    max_seconds: float | None = None,
    name: str | None = None,
) -> np.ndarray:
    """Decode audio to mono float32 at ``sample_rate``.

    Parameters
    ----------
    source:
        A file path, or the raw bytes of an encoded file (an upload).
    sample_rate:
        Target rate in Hz; the audio is resampled with soxr HQ if it differs.
    max_seconds:
        Read at most this many seconds from the start (cheap for WAV, FLAC and MP3).
    name:
        How to name the source in error messages; defaults to the path.

    Returns
    -------
    numpy.ndarray
        Shape ``(n_samples,)``, float32, nominally in [-1, 1].

    Raises
    ------
    AudioDecodeError
        If the source is missing, empty, not one of :data:`ACCEPTED_FORMATS`,
        truncated, or decodes to no samples. The message names the source.
    """
    label = name or (str(source) if not isinstance(source, bytes) else "upload")
    if isinstance(source, bytes):
        if not source:
            raise AudioDecodeError(label, "empty file (0 bytes)")
        handle: io.BytesIO | str = io.BytesIO(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise AudioDecodeError(label, "file not found")
        if path.stat().st_size == 0:
            raise AudioDecodeError(label, "empty file (0 bytes)")
        handle = str(path)
    try:
        with sf.SoundFile(handle) as f:
            if f.format not in ACCEPTED_FORMATS:
                raise UnsupportedAudioError(
                    label, f"unsupported format {f.format}; accepted: {', '.join(ACCEPTED_FORMATS)}"
                )
            native_rate = f.samplerate
            declared = f.frames
            _check_wav_length(f, label)
            frames = -1 if max_seconds is None else int(round(max_seconds * native_rate))
            data = f.read(frames=frames, dtype="float32", always_2d=True)
    except AudioDecodeError:
        raise
    except sf.LibsndfileError as exc:
        # libsndfile could not open it at all: its bytes are not a format it knows.
        raise UnsupportedAudioError(label, f"not decodable as audio ({_short_reason(exc)})") from None
    except (RuntimeError, ValueError) as exc:
        raise AudioDecodeError(label, f"not decodable as audio ({_short_reason(exc)})") from None
    if data.shape[0] == 0:
        raise AudioDecodeError(label, "decodes to no samples")
    expected = declared if frames < 0 else min(frames, declared)
    # MP3 headers only estimate their length, hence the tolerance.
    if 0 < expected and data.shape[0] < _TRUNCATION_TOLERANCE * expected:
        raise AudioDecodeError(
            label,
            f"truncated: the header promises {expected / native_rate:.2f} s "
            f"but only {data.shape[0] / native_rate:.2f} s decode",
        )
    # Averaging channels by hand: librosa's to_mono costs ~20x more for the same result.
    mono = data[:, 0] if data.shape[1] == 1 else data.mean(axis=1, dtype=np.float32)
    if not np.all(np.isfinite(mono)):
        raise AudioDecodeError(label, "contains NaN or infinite samples")
    if native_rate != sample_rate:
        mono = soxr.resample(mono, native_rate, sample_rate, quality="HQ").astype(np.float32, copy=False)
    return np.ascontiguousarray(mono, dtype=np.float32)


def probe_audio(path: str | Path | bytes, name: str | None = None) -> tuple[float, int]:
    """Read only the header of an audio file (or of an upload's bytes).

    Returns
    -------
    tuple
        ``(duration in seconds, sample rate in Hz)``.

    Raises
    ------
    AudioDecodeError
        If the header cannot be read or the format is not accepted
        (:class:`~bgmfit.errors.UnsupportedAudioError`).
    """
    label = name or (str(path) if not isinstance(path, bytes) else "upload")
    if isinstance(path, bytes):
        if not path:
            raise AudioDecodeError(label, "empty file (0 bytes)")
        handle: io.BytesIO | str = io.BytesIO(path)
    elif not Path(path).is_file():
        raise AudioDecodeError(label, "file not found")
    else:
        handle = str(path)
    try:
        with sf.SoundFile(handle) as f:
            info_format, frames, rate = f.format, f.frames, f.samplerate
            _check_wav_length(f, label)
    except sf.LibsndfileError as exc:
        raise UnsupportedAudioError(label, f"not decodable as audio ({_short_reason(exc)})") from None
    except RuntimeError as exc:
        raise AudioDecodeError(label, f"not decodable as audio ({_short_reason(exc)})") from None
    if info_format not in ACCEPTED_FORMATS:
        raise UnsupportedAudioError(
            label, f"unsupported format {info_format}; accepted: {', '.join(ACCEPTED_FORMATS)}"
        )
    if frames <= 0:
        raise AudioDecodeError(label, "decodes to no samples")
    return frames / rate, rate


def rms_dbfs(y: np.ndarray) -> float:
    """Root-mean-square level of a waveform in dB relative to full scale (1.0).

    Returns ``-inf`` for an empty or all-zero signal.
    """
    if y.size == 0:
        return float("-inf")
    power = float(np.mean(np.square(y, dtype=np.float64)))
    return 10.0 * np.log10(power) if power > 0 else float("-inf")


def normalise_loudness(y: np.ndarray, sample_rate: int, target_lufs: float) -> np.ndarray:
    """``y`` scaled so that its integrated loudness (ITU-R BS.1770, K-weighted and gated) is ``target_lufs``.

    This is what makes features independent of a file's gain: every waveform bgmfit analyses
    passes through here (``features.fusion.analyse``). pyloudnorm measures; the gain is applied
    as one factor. A clip shorter than one 400 ms gating block, or one whose every block is
    below the absolute gate (-70 LUFS, silence), has no integrated loudness and is returned as it is.
    """
    import pyloudnorm  # here: only analysis needs it, and it imports scipy.signal

    if y.size < int(0.4 * sample_rate):
        return y
    loudness = pyloudnorm.Meter(sample_rate).integrated_loudness(np.asarray(y, dtype=np.float64))
    if not np.isfinite(loudness):
        return y
    return (y * np.float32(10.0 ** ((target_lufs - loudness) / 20.0))).astype(np.float32)


def write_flac(path: Path, y: np.ndarray, sample_rate: int) -> None:
    """Write mono float audio as 16-bit FLAC, creating parent folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.clip(y, -1.0, 1.0), sample_rate, format="FLAC", subtype="PCM_16")


_WAV_DATA_SIZE = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)


def _check_wav_length(f: sf.SoundFile, label: str) -> None:
    # libsndfile quietly shortens a WAV whose data chunk runs past the end of the file,
    # so the frame count cannot reveal the cut; its header log still does.
    if f.format != "WAV":
        return
    cut = _WAV_DATA_SIZE.search(f.extra_info)
    if cut and int(cut.group(2)) < _TRUNCATION_TOLERANCE * int(cut.group(1)):
        raise AudioDecodeError(
            label,
            f"truncated: the WAV header promises {int(cut.group(1))} bytes of audio "
            f"but only {int(cut.group(2))} are in the file",
        )


def _short_reason(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
    # libsndfile prefixes messages with the file name, which we already print.
    return text.split(": ", 1)[-1] if ": " in text else text
