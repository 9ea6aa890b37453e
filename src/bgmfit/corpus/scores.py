"""Turn a score of the music21 corpus into timed note lists, one per voice."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from bgmfit.corpus.works import STYLES, WorkRef


@dataclass(frozen=True)
class Voice:
    """One voice (part) of a work as parallel arrays of notes.

    Attributes
    ----------
    onsets, durations:
        Note start and length in seconds from the start of the work.
    pitches:
        MIDI note numbers.
    velocities:
        MIDI velocities (1-127).
    """

    onsets: np.ndarray
    durations: np.ndarray
    pitches: np.ndarray
    velocities: np.ndarray

    @property
    def end(self) -> float:
        """Time in seconds when the last note ends (0 for an empty voice)."""
        return float((self.onsets + self.durations).max()) if self.onsets.size else 0.0


@dataclass(frozen=True)
class ParsedWork:
    """A work ready to render.

    Attributes
    ----------
    voices:
        Non-empty voices, the top voice (highest mean pitch) first.
    quarter_bpm:
        The tempo used, in quarter notes per minute.
    lyrics:
        The top voice's lyrics as running text ('' when there are none).
    title:
        The score's title, or '' when it has none.
    """

    voices: list[Voice]
    quarter_bpm: float
    lyrics: str
    title: str

    @property
    def seconds(self) -> float:
        """Length of the work in seconds."""
        return max(v.end for v in self.voices)


class ScoreError(Exception):
    """A score that music21 cannot read, or that has no notes."""


def parse_work(work: WorkRef, tempo_scale: float = 1.0) -> ParsedWork:
    """Parse a work and time its notes.

    Parameters
    ----------
    work:
        The work to parse.
    tempo_scale:
        Multiplies the tempo (e.g. 1.05 plays 5% faster).

    Raises
    ------
    ScoreError
        If music21 cannot parse the score or it holds no pitched notes.
    """
    from music21 import converter, tempo, text

    style = STYLES[work.style]
    try:
        with warnings.catch_warnings():
            # music21 warns about every ABC quirk it recovers from; those are not ours to fix.
            warnings.simplefilter("ignore")
            if work.abc_tune is not None:
                score = converter.parse(work.abc_tune, format="abc")
            else:
                score = converter.parse(work.path)
    except Exception as exc:  # music21 raises many unrelated types on bad input
        raise ScoreError(f"music21 could not parse {work.source}: {exc}") from None

    quarter_bpm = style.quarter_bpm
    marks = score.flatten().getElementsByClass(tempo.MetronomeMark)
    if marks:
        stated = marks[0].getQuarterBPM()
        if stated is not None and 30.0 <= stated <= 300.0:
            quarter_bpm = float(stated)
    quarter_bpm *= tempo_scale
    seconds_per_quarter = 60.0 / quarter_bpm

    parts = list(score.parts) if score.parts else [score]
    voices: list[tuple[float, Voice, object]] = []
    for part in parts:
        onsets, durations, pitches, velocities = [], [], [], []
        # Tied notes are merged here rather than with music21's stripTies(), which
        # deep-copies the part and took 80% of the corpus build time.
        held: dict[int, int] = {}  # MIDI key -> index of the note a tie extends
        for element in part.flatten().notes:
            quarters = float(element.duration.quarterLength)
            if quarters <= 0:  # grace notes carry no time of their own
                continue
            tie = element.tie.type if element.tie is not None else None
            velocity = element.volume.velocity or 80
            for pitch in element.pitches:
                key = int(pitch.midi)
                if tie in ("stop", "continue") and key in held:
                    durations[held[key]] += quarters * seconds_per_quarter
                    if tie == "stop":
                        del held[key]
                    continue
                onsets.append(float(element.offset) * seconds_per_quarter)
                durations.append(quarters * seconds_per_quarter)
                pitches.append(key)
                velocities.append(int(velocity))
                if tie in ("start", "continue"):
                    held[key] = len(onsets) - 1
        if onsets:
            voice = Voice(np.array(onsets), np.array(durations), np.array(pitches), np.array(velocities))
            voices.append((float(np.mean(pitches)), voice, part))
    if not voices:
        raise ScoreError(f"{work.source} has no pitched notes")
    voices.sort(key=lambda item: -item[0])
    top_part = voices[0][2]
    lyrics = " ".join(text.assembleLyrics(top_part).split()) if style.language else ""
    title = (score.metadata.title or score.metadata.movementName or "") if score.metadata else ""
    return ParsedWork([v for _, v, _ in voices], quarter_bpm, lyrics, str(title))
