"""Decoding, resampling, level measurement and loudness: the only module that opens audio files.

Decoding goes through libsndfile (``soundfile``) where it can, which reads WAV, FLAC,
OGG (Vorbis and Opus) and MP3 by content, not by file extension. What libsndfile
cannot open is offered to FFmpeg's own libraries (PyAV), which are kept for the
codecs libsndfile lacks: AAC and ALAC (M4A, MP4) and Opus outside OGG. soundfile
stays first because it is faster and leaner on what it reads (a 60-minute MP3: 2.2 s
against 7.0 s with PyAV, at a third of the memory).

Files are read in blocks, mixed down and resampled as they stream (soxr's HQ preset;
librosa's ``kaiser_*`` resamplers are 15-100x slower for no audible gain here), so
decoding never holds more than the mono result at the target rate.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from bgmfit.errors import AudioDecodeError, BgmfitError, UnsupportedAudioError, UnusableAudioError

#: Formats libsndfile reads for bgmfit, as it names them.
SNDFILE_FORMATS = ("WAV", "FLAC", "OGG", "MP3")
#: Codecs read through PyAV (FFmpeg) when libsndfile cannot open a file, with how users name them.
AV_CODECS = {"aac": "M4A/AAC", "alac": "M4A/ALAC", "opus": "Opus"}
#: Every accepted format, for messages and ``/model-info``.
ACCEPTED_FORMATS = ("wav", "flac", "ogg", "opus", "mp3", "m4a")
ACCEPTED_TEXT = "WAV, FLAC, OGG/Vorbis, Opus, MP3 or M4A/AAC"
_TRUNCATION_TOLERANCE = 0.9
_BLOCK_FRAMES = 1 << 18
#: The largest sample magnitude accepted: 60 dB over full scale. Float files may go past
#: ±1.0, never this far; at 3e38 resampling alone would overflow float32 to infinity.
MAX_PEAK = 1000.0


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
        Read at most this many seconds from the start.
    name:
        How to name the source in error messages; defaults to the path.

    Returns
    -------
    numpy.ndarray
        Shape ``(n_samples,)``, float32, nominally in [-1, 1].

    Raises
    ------
    AudioDecodeError
        If the source is missing, empty, not in an accepted format
        (:class:`~bgmfit.errors.UnsupportedAudioError`), truncated, or decodes to no
        samples or to non-finite ones. The message names the source.
    """
    pieces: list[np.ndarray] = []
    _decode(source, sample_rate, max_seconds, name, pieces.append)
    if len(pieces) == 1:
        return pieces[0]
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)


def decode_to_file(
    source: str | Path | bytes,
    target: Path,
    sample_rate: int,
    max_seconds: float | None = None,
    name: str | None = None,
) -> SampleFile:
    """Decode audio as :func:`load_audio` does, but into ``target`` as it streams, never held whole.

    ``target`` receives raw float32 samples (native byte order); an hour at 22,050 Hz is 318 MB
    on disk, and memory holds one decoded block (2^18 frames of the source: 6 s at 44.1 kHz).

    Returns
    -------
    SampleFile
        The decoded waveform, read back a block at a time.

    Raises
    ------
    AudioDecodeError
        As :func:`load_audio`.
    BgmfitError
        If ``target`` cannot be written (a full disk, say), naming it and why.

    ``target`` is left incomplete after either, for the caller to remove.
    """
    try:
        with open(target, "wb") as out:
            _decode(source, sample_rate, max_seconds, name, lambda piece: out.write(piece.data))
    except OSError as exc:
        raise BgmfitError(
            f"{target}: cannot write the decoded audio ({exc.strerror}); an hour takes ~320 MB there"
        ) from None
    return SampleFile(target)


class SampleFile:
    """A mono float32 waveform in a file of raw samples, sliced like an array but read per slice.

    ``wave[a:b]`` reads those samples from disk (the page cache), so a long episode is never in
    the process's memory whole; ``np.asarray(wave)`` reads all of it, for what needs it whole
    (the preview mix). ``size`` and ``len()`` are the number of samples.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.size = self.path.stat().st_size // 4

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, where: slice) -> np.ndarray:
        if not isinstance(where, slice) or where.step not in (None, 1):
            raise TypeError("a SampleFile is read by contiguous slices, wave[a:b]")
        start, stop, _ = where.indices(self.size)
        count = max(0, stop - start)
        return np.fromfile(self.path, dtype=np.float32, count=count, offset=4 * start)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        whole = self[:]
        return whole if dtype is None else whole.astype(dtype)


#: A mono waveform: in memory, or on disk and read by slices (what the timeline's steps take).
Waveform = np.ndarray | SampleFile


def _decode(
    source: str | Path | bytes,
    sample_rate: int,
    max_seconds: float | None,
    name: str | None,
    write: Callable[[np.ndarray], object],
) -> None:
    """Decode ``source`` mono at ``sample_rate``, handing each resampled block to ``write`` in order."""
    label, handle = _open(source, name)
    try:
        f = sf.SoundFile(handle)
    except sf.LibsndfileError:
        # Not a format libsndfile knows: FFmpeg may (M4A/AAC, Opus in WebM or Matroska).
        _load_with_av(handle, label, sample_rate, max_seconds, write)
        return
    with f:
        if f.format not in SNDFILE_FORMATS:
            raise UnsupportedAudioError(label, f"unsupported format {f.format}; accepted: {ACCEPTED_TEXT}")
        _check_wav_length(f, label)
        frames = -1 if max_seconds is None else int(round(max_seconds * f.samplerate))
        expected = f.frames if frames < 0 else min(frames, f.frames)
        try:
            decoded = _resampled(_sndfile_blocks(f, frames, label), f.samplerate, sample_rate, write)
        except (RuntimeError, ValueError) as exc:
            raise AudioDecodeError(label, f"not decodable as audio ({_short_reason(exc)})") from None
        native_rate = f.samplerate
    _check_decoded(label, decoded, expected, native_rate)


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
    label, handle = _open(path, name)
    try:
        f = sf.SoundFile(handle)
    except sf.LibsndfileError:
        return _probe_with_av(handle, label)
    with f:
        info_format, frames, rate = f.format, f.frames, f.samplerate
        _check_wav_length(f, label)
    if info_format not in SNDFILE_FORMATS:
        raise UnsupportedAudioError(label, f"unsupported format {info_format}; accepted: {ACCEPTED_TEXT}")
    if frames <= 0:
        raise AudioDecodeError(label, "decodes to no samples")
    return frames / rate, rate


def _open(source: str | Path | bytes, name: str | None) -> tuple[str, io.BytesIO | str]:
    """The label for messages and something both decoders can open; missing and empty sources refused."""
    label = name or (str(source) if not isinstance(source, bytes) else "upload")
    if isinstance(source, bytes):
        if not source:
            raise AudioDecodeError(label, "empty file (0 bytes)")
        return label, io.BytesIO(source)
    path = Path(source)
    if not path.is_file():
        raise AudioDecodeError(label, "file not found")
    if path.stat().st_size == 0:
        raise AudioDecodeError(label, "empty file (0 bytes)")
    return label, str(path)


def _sndfile_blocks(f: sf.SoundFile, frames: int, label: str):
    """Mono blocks: up to ``frames`` frames, or all when negative (an MP3 header only estimates).

    Not ``SoundFile.blocks``: on a short read (a truncated file) it yields its whole
    preallocated buffer, uninitialised memory included, so a cut file would look complete.
    """
    left = frames if frames >= 0 else float("inf")
    while left > 0:
        block = f.read(int(min(_BLOCK_FRAMES, left)), dtype="float32", always_2d=True)
        if block.shape[0] == 0:
            return
        left -= block.shape[0]
        yield _mono(block, label)


def _mono(block: np.ndarray, label: str) -> np.ndarray:
    # Averaging channels by hand: librosa's to_mono costs ~20x more for the same result. In
    # float64, so that two channels near float32's maximum do not add up to infinity.
    mono = block[:, 0] if block.shape[1] == 1 else block.mean(axis=1, dtype=np.float64).astype(np.float32)
    peak = float(np.max(np.abs(mono), initial=0.0))
    if not np.isfinite(peak):
        raise UnusableAudioError(label, "contains NaN or infinite samples")
    if peak > MAX_PEAK:
        raise UnusableAudioError(
            label, f"samples reach {peak:.3g}, more than 60 dB over full scale (1.0): not a recorded level"
        )
    return mono


def _resampled(blocks, native_rate: int, sample_rate: int, write: Callable[[np.ndarray], object]) -> int:
    """Resample mono blocks as they come and hand each piece to ``write``; the native frames decoded."""
    stream = None
    if native_rate != sample_rate:
        stream = soxr.ResampleStream(native_rate, sample_rate, 1, dtype="float32", quality="HQ")
    decoded = 0
    for mono in blocks:
        decoded += mono.size
        piece = mono.copy() if stream is None else stream.resample_chunk(mono)
        if piece.size:
            write(np.ascontiguousarray(piece, dtype=np.float32))
    if stream is not None:
        piece = stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
        if piece.size:
            write(np.ascontiguousarray(piece, dtype=np.float32))
    return decoded


def _check_decoded(label: str, decoded: int, expected: int, native_rate: int) -> None:
    if decoded == 0:
        raise AudioDecodeError(label, "decodes to no samples")
    # MP3 and AAC headers only estimate their length, hence the tolerance.
    if 0 < expected and decoded < _TRUNCATION_TOLERANCE * expected:
        raise AudioDecodeError(
            label,
            f"truncated: the header promises {expected / native_rate:.2f} s "
            f"but only {decoded / native_rate:.2f} s decode",
        )


def _av_stream(handle: io.BytesIO | str, label: str):
    """Open ``handle`` with PyAV; its container and first audio stream, if the codec is accepted."""
    import av  # here: only files libsndfile cannot open need FFmpeg

    if isinstance(handle, io.BytesIO):
        handle.seek(0)
    try:
        container = av.open(handle, mode="r")
    except (av.FFmpegError, ValueError, OSError) as exc:
        raise UnsupportedAudioError(label, f"not decodable as audio ({_short_reason(exc)})") from None
    audio = container.streams.audio
    # A stream of a codec FFmpeg does not know has no codec context.
    codec = getattr(audio[0].codec_context, "name", None) if audio else None
    if codec not in AV_CODECS:
        container.close()
        what = (
            f"FFmpeg reads it as {container.format.name}/{codec}"
            if codec
            else "no audio stream it can decode"
        )
        raise UnsupportedAudioError(
            label, f"not decodable as audio in an accepted format ({what}); accepted: {ACCEPTED_TEXT}"
        )
    return container, audio[0]


def _av_frames(container, stream) -> int:
    """The stream's length in frames as its header declares it (0 when it does not say)."""
    if stream.duration is not None and stream.time_base is not None:
        return int(stream.duration * stream.time_base * stream.rate)
    if container.duration is not None:
        return int(container.duration / 1_000_000 * stream.rate)
    return 0


def _probe_with_av(handle: io.BytesIO | str, label: str) -> tuple[float, int]:
    container, stream = _av_stream(handle, label)
    with container:
        frames, rate = _av_frames(container, stream), stream.rate
    if frames <= 0:
        raise AudioDecodeError(label, "the header declares no duration")
    return frames / rate, rate


def _load_with_av(
    handle: io.BytesIO | str,
    label: str,
    sample_rate: int,
    max_seconds: float | None,
    write: Callable[[np.ndarray], object],
) -> None:
    import av

    container, stream = _av_stream(handle, label)
    with container:
        native_rate = stream.rate
        limit = None if max_seconds is None else int(round(max_seconds * native_rate))
        expected = (
            _av_frames(container, stream) if limit is None else min(limit, _av_frames(container, stream))
        )
        mixdown = av.AudioResampler(format="flt", layout="mono", rate=native_rate)

        def blocks():
            taken = 0
            try:
                for frame in container.decode(stream):
                    for out in mixdown.resample(frame):
                        mono = out.to_ndarray().reshape(-1)
                        if limit is not None:
                            mono = mono[: limit - taken]
                        taken += mono.size
                        yield _mono(mono[:, None], label)
                    if limit is not None and taken >= limit:
                        return
            except av.FFmpegError:
                return  # a damaged stream ends here; the length check below reports it

        decoded = _resampled(blocks(), native_rate, sample_rate, write)
    _check_decoded(label, decoded, expected, native_rate)


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


def encode(y: np.ndarray, sample_rate: int, container: str, codec: str, bitrate: int = 128_000) -> bytes:
    """Mono float audio encoded by FFmpeg (PyAV): MP3 ``("mp3", "libmp3lame")``, M4A ``("ipod", "aac")``.

    Fed to the encoder a second at a time, so that an hour's preview is not copied whole.
    """
    import av

    buffer = io.BytesIO()
    y = np.asarray(y, np.float32)
    with av.open(buffer, "w", format=container) as out:
        stream = out.add_stream(codec, rate=sample_rate, layout="mono")
        stream.bit_rate = bitrate
        for start in range(0, y.size, sample_rate):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(y[None, start : start + sample_rate]), format="flt", layout="mono"
            )
            frame.sample_rate = sample_rate
            frame.pts = start
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return buffer.getvalue()


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
    if isinstance(getattr(exc, "strerror", None), str):  # FFmpeg's: the reason, not '<none>' for a name
        return exc.strerror
    text = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
    # libsndfile prefixes messages with the file name, which we already print.
    return text.split(": ", 1)[-1] if ": " in text else text
