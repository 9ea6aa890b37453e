import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bgmfit.audio import load_audio, probe_audio, rms_dbfs
from bgmfit.errors import AudioDecodeError
from tests.signals import SR, sine


@pytest.mark.parametrize(
    ("fmt", "subtype", "suffix"),
    [
        ("WAV", "PCM_16", ".wav"),
        ("FLAC", "PCM_16", ".flac"),
        ("OGG", "VORBIS", ".ogg"),
        ("MP3", "MPEG_LAYER_III", ".mp3"),
    ],
)
def test_each_accepted_format_decodes_to_mono_at_the_target_rate(tmp_path: Path, fmt, subtype, suffix):
    t = np.arange(2 * 44100) / 44100
    stereo = np.stack([0.5 * np.sin(2 * np.pi * 440 * t), 0.3 * np.sin(2 * np.pi * 440 * t)], axis=1)
    path = tmp_path / f"clip{suffix}"
    sf.write(path, stereo, 44100, format=fmt, subtype=subtype)
    y = load_audio(path, SR)
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(y.size - 2.0 * SR) < 0.05 * SR  # MP3 adds a little encoder padding
    # The channels are averaged: a 0.4-amplitude sine is -10.97 dBFS.
    assert abs(rms_dbfs(y) - 20 * np.log10(0.4 / np.sqrt(2))) < 0.5


def test_format_is_read_from_content_not_extension(tmp_path: Path):
    path = tmp_path / "actually_flac.wav"
    sf.write(path, sine(440.0, 1.0), SR, format="FLAC")
    assert load_audio(path, SR).size == SR


def test_max_seconds_reads_only_the_start(tmp_path: Path):
    sf.write(tmp_path / "long.wav", sine(440.0, 5.0), SR)
    assert load_audio(tmp_path / "long.wav", SR, max_seconds=1.5).size == int(1.5 * SR)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty file"),
        (b"this is not audio at all, just text" * 10, "not decodable as audio"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", "not decodable as audio"),
    ],
)
def test_bad_bytes_raise_a_clear_error_naming_the_file(tmp_path: Path, content, message):
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    with pytest.raises(AudioDecodeError, match=message) as info:
        load_audio(path, SR)
    assert str(path) in str(info.value)
    with pytest.raises(AudioDecodeError):
        load_audio(content, SR)


def test_missing_file_is_named(tmp_path: Path):
    with pytest.raises(AudioDecodeError, match="file not found"):
        probe_audio(tmp_path / "gone.flac")


def test_probe_reads_duration_and_rate(tmp_path: Path):
    sf.write(tmp_path / "a.flac", sine(440.0, 2.5), SR)
    duration, rate = probe_audio(tmp_path / "a.flac")
    assert rate == SR and abs(duration - 2.5) < 1e-3


def test_rms_dbfs_of_full_scale_sine_is_minus_three():
    assert abs(rms_dbfs(sine(440.0, 1.0, 1.0)) + 3.01) < 0.02
    assert rms_dbfs(np.zeros(100, dtype=np.float32)) == float("-inf")


@pytest.mark.parametrize(
    ("fmt", "suffix"), [("WAV", ".wav"), ("FLAC", ".flac"), ("MP3", ".mp3"), ("OGG", ".ogg")]
)
def test_truncated_file_is_reported_not_half_read(tmp_path: Path, rng, fmt, suffix):
    path = tmp_path / f"cut{suffix}"
    sf.write(path, (0.3 * rng.standard_normal(3 * SR)).astype(np.float32), SR, format=fmt)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    with pytest.raises(AudioDecodeError, match=r"truncated|not decodable|no samples") as info:
        load_audio(path, SR)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("container", "codec", "rate"),
    [("ipod", "aac", 44100), ("webm", "libopus", 48000), ("ipod", "alac", 44100)],
)
def test_formats_libsndfile_lacks_are_decoded_through_ffmpeg(tmp_path: Path, container, codec, rate):
    from bgmfit.audio import encode

    t = np.arange(3 * rate) / rate
    content = encode((0.4 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), rate, container, codec)
    path = tmp_path / "named_wrong.wav"  # judged by content, not by extension
    path.write_bytes(content)
    for source in (path, content):
        y = load_audio(source, SR)
        assert y.dtype == np.float32 and abs(y.size - 3.0 * SR) < 0.05 * SR
        assert abs(rms_dbfs(y) - 20 * np.log10(0.4 / np.sqrt(2))) < 0.5
        duration, native = probe_audio(source)
        assert native == rate and abs(duration - 3.0) < 0.1
    assert load_audio(content, SR, max_seconds=1.0).size == SR


@pytest.mark.parametrize(
    ("container", "codec", "rate"),
    [("mp3", "libmp3lame", 22050), ("ipod", "aac", 22050), ("ogg", "libopus", 24000)],
)
def test_what_encode_writes_decodes_in_time_with_its_input(rng, container, codec, rate):
    # A preview (MP3, Ogg Opus) must sit on the episode's clock: a codec's start-up delay is
    # signalled in the file and removed on decoding, not left as a lag (AAC was 1,024 samples late).
    from bgmfit.audio import encode

    y = (0.3 * rng.standard_normal(5 * rate)).astype(np.float32)
    decoded = load_audio(encode(y, rate, container, codec), rate)
    lags = np.arange(-2000, 2001)
    window = slice(4000, 4000 + rate)
    lag = max(lags, key=lambda k: float(y[window] @ decoded[4000 + k : 4000 + k + rate]))
    assert lag == 0


def test_opus_in_ogg_is_read_by_libsndfile(tmp_path: Path):
    t = np.arange(2 * 48000) / 48000
    sf.write(tmp_path / "a.opus", 0.4 * np.sin(2 * np.pi * 440 * t), 48000, format="OGG", subtype="OPUS")
    assert abs(load_audio(tmp_path / "a.opus", SR).size - 2.0 * SR) < 0.05 * SR


def test_media_ffmpeg_reads_but_that_is_not_accepted_audio_is_refused_by_name():
    from bgmfit.audio import encode

    content = encode(sine(440.0, 1.0), SR, "ipod", "aac")
    with pytest.raises(AudioDecodeError, match="truncated|not decodable") as cut:
        load_audio(content[: len(content) // 3], SR, name="cut.m4a")
    assert "cut.m4a" in str(cut.value)
    import matplotlib.image

    picture = io.BytesIO()
    matplotlib.image.imsave(picture, np.zeros((8, 8)), format="png")
    png = picture.getvalue()
    with pytest.raises(AudioDecodeError, match="not decodable as audio"):
        load_audio(png, SR, name="picture.png")


def test_a_damaged_file_gets_ffmpegs_reason_not_its_placeholder_name():
    buffer = io.BytesIO()
    sf.write(buffer, sine(440.0, 5.0), SR, format="OGG", subtype="VORBIS")
    damaged = buffer.getvalue()[:3000] + b"\0" * 5000  # the header, then nothing FFmpeg can read
    with pytest.raises(AudioDecodeError) as raised:
        load_audio(damaged, SR, name="library/damaged.ogg")
    assert str(raised.value).startswith("library/damaged.ogg: not decodable as audio (")
    assert "<none>" not in str(raised.value), raised.value


@pytest.mark.parametrize(
    ("source", "rate"),
    [("wav", SR), ("mp3", 44100), ("m4a", 44100)],
)
def test_decoding_into_a_file_gives_the_samples_decoding_in_memory_gives(tmp_path: Path, rng, source, rate):
    from bgmfit.audio import SampleFile, decode_to_file, encode

    y = (0.2 * rng.standard_normal(7 * rate)).astype(np.float32)
    path = tmp_path / f"episode.{source}"
    if source == "wav":
        sf.write(path, y, rate)
    elif source == "mp3":
        sf.write(path, y, rate, format="MP3")
    else:
        path.write_bytes(encode(y, rate, "ipod", "aac"))
    wave = decode_to_file(path, tmp_path / "episode.f32", SR)
    whole = load_audio(path, SR)
    assert isinstance(wave, SampleFile) and wave.size == len(wave) == whole.size
    np.testing.assert_array_equal(np.asarray(wave), whole)
    np.testing.assert_array_equal(wave[SR : 3 * SR], whole[SR : 3 * SR])
    np.testing.assert_array_equal(wave[-100:], whole[-100:])
    assert wave[whole.size : whole.size + 10].size == 0
    with pytest.raises(TypeError, match="contiguous slices"):
        wave[::2]


def test_a_truncated_file_decoded_into_a_file_is_refused_as_in_memory(tmp_path: Path, rng):
    from bgmfit.audio import decode_to_file

    path = tmp_path / "cut.flac"
    sf.write(path, (0.3 * rng.standard_normal(3 * SR)).astype(np.float32), SR, format="FLAC")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    with pytest.raises(AudioDecodeError, match=r"truncated|not decodable|no samples") as info:
        decode_to_file(path, tmp_path / "cut.f32", SR)
    assert str(path) in str(info.value)


def test_a_full_disk_while_decoding_into_a_file_is_one_message_naming_the_file(tmp_path: Path, rng):
    from bgmfit.audio import decode_to_file
    from bgmfit.errors import BgmfitError

    path = tmp_path / "episode.wav"
    sf.write(path, (0.3 * rng.standard_normal(3 * SR)).astype(np.float32), SR)
    # /dev/full takes the open and refuses every write with ENOSPC: a real full disk.
    with pytest.raises(
        BgmfitError, match=r"^/dev/full: cannot write the decoded audio \(No space left on device\)"
    ):
        decode_to_file(path, Path("/dev/full"), SR)
