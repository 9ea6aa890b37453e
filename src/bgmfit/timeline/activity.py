"""Speech, music and silence over an episode, second by second.

Speech is silero-vad's (its weights ship inside its wheel; no download). The network reads
32 ms frames at 16 kHz one after another, carrying a state; an hour is 112,500 frames. So the
episode is cut into lanes of about 15 s that are read side by side as one batch, each lane
with its own state: the same network and frames, a hundred times fewer steps. A lane's first
frames start from a fresh state, as the start of any file does.

A second is *speech* when at least ``timeline.speech_share`` of its frames are speech, else
*silence* when its RMS level (after levelling) is under ``timeline.silence_dbfs``, else
*music* (any other sound: music, effects, noise).

Levelling an hour-long episode through pyloudnorm at once would hold several float64 copies of
it; :func:`episode_gain` measures it 10 minutes at a time instead, and everything here reads
the episode a block at a time with that gain applied.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import soxr
import torch

from bgmfit.audio import Waveform
from bgmfit.config import TimelineParams

VAD_RATE = 16000
FRAME = 512  # silero-vad's frame at 16 kHz: 32 ms
LANE_FRAMES = 480  # about 15 s per lane


@cache
def _vad():
    from silero_vad import load_silero_vad

    return load_silero_vad()


BLOCK_SECONDS = 600  # a whole number of 32 ms frames at 16 kHz


def episode_gain(y: Waveform, sample_rate: int, target_lufs: float) -> float:
    """The gain that brings ``y`` to ``target_lufs``, from its loudness measured a block at a time.

    Each 10-minute block's integrated loudness (ITU-R BS.1770, pyloudnorm) is combined by
    energy, weighted by length; the relative gate applies within blocks, not across them. 1.0
    for silence and for clips too short to measure.
    """
    import pyloudnorm

    meter, block = pyloudnorm.Meter(sample_rate), BLOCK_SECONDS * sample_rate
    energy, seconds = 0.0, 0.0
    for start in range(0, y.size, block):
        part = np.asarray(y[start : start + block], dtype=np.float64)
        if part.size < int(0.4 * sample_rate):
            continue
        loudness = meter.integrated_loudness(part)
        if np.isfinite(loudness):
            energy += part.size * 10 ** (loudness / 10)
            seconds += part.size
    if seconds == 0:
        return 1.0
    return float(10 ** ((target_lufs - 10 * np.log10(energy / seconds)) / 20))


def speech_probability(y: Waveform, sample_rate: int, gain: float = 1.0) -> np.ndarray:
    """silero-vad's speech probability of every 32 ms frame of a mono waveform, times ``gain``.

    Read 10 minutes at a time, so that an episode's 16 kHz copy is never held whole.
    """
    block = BLOCK_SECONDS * sample_rate
    parts = [
        _block_probability(np.asarray(y[i : i + block], dtype=np.float32) * np.float32(gain), sample_rate)
        for i in range(0, max(1, y.size), block)
    ]
    return np.concatenate(parts)


@torch.no_grad()
def _block_probability(y: np.ndarray, sample_rate: int) -> np.ndarray:
    x = soxr.resample(y, sample_rate, VAD_RATE).astype(np.float32) if y.size else y
    n = max(1, -(-x.size // FRAME))
    lanes = max(1, -(-n // LANE_FRAMES))
    steps = -(-n // lanes)
    padded = np.zeros(lanes * steps * FRAME, dtype=np.float32)
    padded[: x.size] = x
    batch = torch.from_numpy(padded.reshape(lanes, steps, FRAME))
    model = _vad()
    model.reset_states()
    out = np.empty((lanes, steps), dtype=np.float32)
    for step in range(steps):
        out[:, step] = model(batch[:, step], VAD_RATE).numpy().reshape(-1)
    model.reset_states()
    return out.reshape(-1)[:n]


def second_kinds(y: Waveform, sample_rate: int, params: TimelineParams, target_lufs: float) -> np.ndarray:
    """``speech``, ``music`` or ``silence`` for each whole second of a mono waveform levelled to
    ``target_lufs`` (the last, partial second included)."""
    seconds = max(1, -(-y.size // sample_rate))
    gain = episode_gain(y, sample_rate, target_lufs)
    probability = speech_probability(y, sample_rate, gain)
    # each frame counts for the second it starts in
    owner = np.minimum((np.arange(probability.size) * FRAME) // VAD_RATE, seconds - 1)
    speech = np.bincount(owner, probability >= params.speech_threshold, seconds)
    counts = np.maximum(np.bincount(owner, minlength=seconds), 1)
    level = second_levels(y, sample_rate) + 20 * np.log10(gain)
    kinds = np.where(level < params.silence_dbfs, "silence", "music").astype(object)
    kinds[speech / counts >= params.speech_share] = "speech"
    return kinds


def second_levels(y: Waveform, sample_rate: int) -> np.ndarray:
    """RMS level, dBFS, of each whole second (the last one padded with silence), a block at a time."""
    seconds = max(1, -(-y.size // sample_rate))
    level = np.empty(seconds)
    for first in range(0, seconds, BLOCK_SECONDS):
        last = min(seconds, first + BLOCK_SECONDS)
        block = np.zeros((last - first) * sample_rate, dtype=np.float32)
        part = y[first * sample_rate : last * sample_rate]
        block[: part.size] = part
        rms = np.sqrt(np.mean(block.reshape(last - first, sample_rate) ** 2, axis=1))
        level[first:last] = 20 * np.log10(np.maximum(rms, 1e-10))
    return level
