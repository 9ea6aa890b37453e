"""A preview mix of a timeline: the episode over its BGM, ducked under speech, at podcast loudness.

Each run of one track (consecutive scenes) is read from its offset, looped if it ends first,
brought ``bed_db`` LU under the voice (pyloudnorm), and crossfaded (equal power,
``crossfade_seconds``) into the next run or into a scene without BGM. The bed is then ducked
under the voice by FFmpeg's ``sidechaincompress`` (through PyAV), keyed by the episode itself,
and the sum is brought to ``preview_lufs`` (-16 LUFS, the podcast norm) and its peaks held
by pedalboard's limiter.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction

import numpy as np

from bgmfit.audio import Waveform, normalise_loudness
from bgmfit.config import TimelineParams
from bgmfit.timeline.activity import episode_gain

BLOCK_SECONDS = 1
PASS_BLOCK_SECONDS = 60  # the blocks of the passes over the whole episode


def sidechain_duck(
    bed: np.ndarray, key: np.ndarray, sample_rate: int, params: TimelineParams, out: np.ndarray | None = None
) -> np.ndarray:
    """``bed`` compressed whenever ``key`` (the voice) is loud: FFmpeg's ``sidechaincompress``.

    Into ``out``, which may be ``bed`` itself: a block is copied into the filter before the
    filter's output, never ahead of its input, is written back.
    """
    import av

    threshold = 10.0 ** (params.duck_threshold_db / 20.0)
    graph = av.filter.Graph()
    sources = [
        graph.add_abuffer(
            format="flt", sample_rate=sample_rate, layout="mono", time_base=Fraction(1, sample_rate)
        )
        for _ in range(2)
    ]
    compressor = graph.add(
        "sidechaincompress", f"threshold={threshold:.6f}:ratio={params.duck_ratio:g}:attack=20:release=400"
    )
    sink = graph.add("abuffersink")
    sources[0].link_to(compressor, 0, 0)
    sources[1].link_to(compressor, 0, 1)
    compressor.link_to(sink)
    graph.configure()
    out = np.zeros_like(bed) if out is None else out
    written = 0
    block = BLOCK_SECONDS * sample_rate

    def drain() -> None:
        nonlocal written
        while True:
            try:
                frame = sink.pull()
            except (av.BlockingIOError, av.EOFError):
                return
            samples = frame.to_ndarray().reshape(-1)
            out[written : written + samples.size] = samples[: out.size - written]
            written += samples.size

    for start in range(0, bed.size, block):
        for source, signal in zip(sources, (bed, key), strict=True):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(signal[None, start : start + block], dtype=np.float32),
                format="flt",
                layout="mono",
            )
            frame.sample_rate = sample_rate
            frame.pts = start
            frame.time_base = Fraction(1, sample_rate)
            source.push(frame)
        drain()
    for source in sources:
        source.push(None)
    drain()
    return out


def _looped(track: np.ndarray, offset: int, length: int, sample_rate: int) -> np.ndarray:
    """``length`` samples of ``track`` from ``offset``, from its start again (50 ms fade) when it ends."""
    if track.size == 0:
        return np.zeros(length, dtype=np.float32)
    out = track[offset : offset + length]
    fade = min(int(0.05 * sample_rate), track.size // 4)
    while out.size < length:
        rest = track[: length - out.size + fade]
        if fade and out.size >= fade and rest.size >= fade:
            ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
            joined = out[-fade:] * (1 - ramp) + rest[:fade] * ramp
            out = np.concatenate([out[:-fade], joined, rest[fade:]])
        else:
            out = np.concatenate([out, rest])
    return out[:length].astype(np.float32)


def render_preview(
    episode: Waveform,
    sample_rate: int,
    scenes: list[dict],
    track_audio: Callable[[str], np.ndarray],
    params: TimelineParams,
) -> tuple[np.ndarray, list[dict]]:
    """The mix, and per scene its BGM's levels as mixed (``None`` without BGM), dB RMS over the scene:
    ``ducking_db`` (the compressor's gain) and ``bgm_under_voice_db`` (the ducked BGM against the voice).

    ``track_audio(track_id)`` gives a library track, mono at ``sample_rate``.
    """
    # Read a block at a time when the episode is on disk (a SampleFile), so that it is never whole here.
    gain = np.float32(episode_gain(episode, sample_rate, params.preview_lufs))
    voice = np.empty(episode.size, dtype=np.float32)
    block = PASS_BLOCK_SECONDS * sample_rate
    for start in range(0, episode.size, block):
        np.multiply(episode[start : start + block], gain, out=voice[start : start + block])
    bed = np.zeros_like(voice)
    fade = int(params.crossfade_seconds * sample_rate)
    cache: dict[str, np.ndarray] = {}
    for first, last in _runs(scenes):
        track_id = scenes[first]["track"]["track_id"]
        if track_id not in cache:
            cache[track_id] = normalise_loudness(
                track_audio(track_id), sample_rate, params.preview_lufs - params.bed_db
            )
        start = int(scenes[first]["start_seconds"] * sample_rate)
        end = min(voice.size, int(scenes[last]["end_seconds"] * sample_rate))
        lead = min(fade // 2, start)
        tail = min(fade // 2, voice.size - end)
        offset = int(scenes[first]["offset_seconds"] * sample_rate)
        part = _looped(cache[track_id], max(0, offset - lead), end - start + lead + tail, sample_rate)
        if lead:
            part[: 2 * lead] *= np.sin(np.linspace(0, np.pi / 2, 2 * lead, dtype=np.float32))[: part.size]
        if tail:
            part[-2 * tail :] *= np.cos(np.linspace(0, np.pi / 2, 2 * tail, dtype=np.float32))
        bed[start - lead : end + tail] += part
    cache.clear()
    # The mix holds two episode-long arrays, the voice and the bed: the bed is ducked in place and
    # then added into the voice, and the limiter runs a block at a time.
    spans = [
        (int(s["start_seconds"] * sample_rate), int(s["end_seconds"] * sample_rate)) if s["track"] else None
        for s in scenes
    ]
    bed_rms = [None if span is None else _rms(bed, *span) for span in spans]
    ducked = sidechain_duck(bed, voice, sample_rate, params, out=bed)
    levels = []
    for span, before in zip(spans, bed_rms, strict=True):
        if span is None:
            levels.append({"ducking_db": None, "bgm_under_voice_db": None})
            continue
        after = _rms(ducked, *span)
        levels.append(
            {
                "ducking_db": round(20 * np.log10(after / before), 1),
                "bgm_under_voice_db": round(20 * np.log10(after / _rms(voice, *span)), 1),
            }
        )
    from pedalboard import Limiter

    mix = voice
    mix += ducked
    del bed, ducked
    mix *= np.float32(episode_gain(mix, sample_rate, params.preview_lufs))
    limiter = Limiter(threshold_db=-1.0, release_ms=100.0)
    for start in range(0, mix.size, block):
        part = mix[None, start : start + block]
        mix[start : start + block] = limiter.process(part, sample_rate, reset=start == 0)[0]
    # The limiter changes the loudness (its make-up gain); bring it back to the target.
    mix *= np.float32(episode_gain(mix, sample_rate, params.preview_lufs))
    return np.clip(mix, -1.0, 1.0, out=mix), levels


def _rms(x: np.ndarray, a: int, b: int) -> float:
    part = x[a:b]
    return float(np.sqrt(np.dot(part, part) / max(1, part.size))) + 1e-10


def _runs(scenes: list[dict]) -> list[tuple[int, int]]:
    """``(first, last)`` scene of each run of one track over adjacent scenes."""
    out: list[tuple[int, int]] = []
    for i, scene in enumerate(scenes):
        if scene["track"] is None:
            continue
        same = (
            out and out[-1][1] == i - 1 and scenes[i - 1]["track"]["track_id"] == scene["track"]["track_id"]
        )
        if same:
            out[-1] = (out[-1][0], i)
        else:
            out.append((i, i))
    return out
