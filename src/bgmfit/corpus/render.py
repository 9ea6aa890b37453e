"""Offline rendering of timed notes with a General MIDI SoundFont.

The synthesiser is TinySoundFont (the ``tinysoundfont`` wheel) playing
``TimGM6mb.sf2``, the General MIDI SoundFont that ``pretty_midi`` ships. Nothing
is played live, so tinysoundfont's optional pyaudio dependency is not needed.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np

from bgmfit.corpus.scores import Voice

_DRUM_CHANNEL = 9
_MELODIC_CHANNELS = [c for c in range(16) if c != _DRUM_CHANNEL]
_FLUSH_SECONDS = 0.25


def soundfont_path() -> Path:
    """Path of the General MIDI SoundFont bundled with ``pretty_midi``."""
    import pretty_midi

    return Path(pretty_midi.__file__).parent / "TimGM6mb.sf2"


@cache
def _synth(sample_rate: int):
    import tinysoundfont

    synth = tinysoundfont.Synth(samplerate=sample_rate)
    sfid = synth.sfload(str(soundfont_path()))
    return synth, sfid


def render_voices(
    voices: list[tuple[Voice, int]], start: float, seconds: float, sample_rate: int
) -> np.ndarray:
    """Render a window of several voices, each on its own General MIDI program.

    Parameters
    ----------
    voices:
        ``(voice, program)`` pairs; ``program`` is a 0-based General MIDI number.
    start:
        Window start in seconds from the start of the work.
    seconds:
        Window length in seconds; notes still sounding at the end are cut.
    sample_rate:
        Output rate in Hz.

    Returns
    -------
    numpy.ndarray
        Mono float32 of exactly ``round(seconds * sample_rate)`` samples.
    """
    synth, sfid = _synth(sample_rate)
    # "All sound off" still lets voices fade for a few milliseconds; render that
    # fade into the void so that no tail of the previous clip leaks into this one.
    synth.sounds_off()
    _generate(synth, int(_FLUSH_SECONDS * sample_rate))
    events: list[tuple[int, int, int, int, int]] = []  # (sample, is_on, channel, key, velocity)
    end = start + seconds
    for index, (voice, program) in enumerate(voices):
        channel = _MELODIC_CHANNELS[index % len(_MELODIC_CHANNELS)]
        synth.program_select(channel, sfid, 0, program)
        inside = (voice.onsets >= start) & (voice.onsets < end)
        for onset, duration, key, velocity in zip(
            voice.onsets[inside],
            voice.durations[inside],
            voice.pitches[inside],
            voice.velocities[inside],
            strict=True,
        ):
            on = int((onset - start) * sample_rate)
            off = int((min(onset + duration, end) - start) * sample_rate)
            events.append((on, 1, channel, int(key), int(velocity)))
            events.append((off, 0, channel, int(key), 0))
    # At equal times, note-offs go first so that a repeated key is re-struck.
    events.sort(key=lambda e: (e[0], e[1]))
    total = int(round(seconds * sample_rate))
    stereo = np.zeros((total, 2), dtype=np.float32)
    cursor = 0
    for sample, is_on, channel, key, velocity in events:
        sample = min(sample, total)
        if sample > cursor:
            stereo[cursor:sample] = _generate(synth, sample - cursor)
            cursor = sample
        if is_on:
            synth.noteon(channel, key, max(1, min(127, velocity)))
        else:
            synth.noteoff(channel, key)
    if cursor < total:
        stereo[cursor:] = _generate(synth, total - cursor)
    return 0.5 * (stereo[:, 0] + stereo[:, 1])


def _generate(synth, n_samples: int) -> np.ndarray:
    buffer = synth.generate_simple(n_samples)
    return np.frombuffer(buffer, dtype=np.float32).reshape(-1, 2)
