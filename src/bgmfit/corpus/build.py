"""Build the demo corpus: choose works, render stems and narration, reject silence."""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soxr

from bgmfit.audio import rms_dbfs, write_flac
from bgmfit.config import FetchParams
from bgmfit.corpus.narration import NarrationError, narrate
from bgmfit.corpus.render import render_voices
from bgmfit.corpus.scores import ParsedWork, ScoreError, parse_work
from bgmfit.corpus.works import STYLES, Style, WorkRef, discover_works
from bgmfit.errors import ConfigError

SCORE_LICENCE = (
    "public-domain composition; score encoding from the music21 corpus (music21 licence); "
    "rendered by bgmfit with TimGM6mb.sf2 (GPL-2.0)"
)
NARRATION_LICENCE = "public-domain lyrics of the work; speech synthesised with eSpeak NG (GPL-3.0)"

# Loudness every rendered clip is brought to, so that level cannot give a role away.
TARGET_DBFS = -20.0
PEAK_LIMIT = 0.99
# eSpeak NG speaker variants to draw from (files in espeak-ng-data/voices/!v).
NARRATOR_VARIANTS = ("m1", "m3", "f1", "f3", "Andy", "Annie")
# Enough words to fill a clip at the speaking rate below, with some to spare.
NARRATION_WORDS = 60
NARRATION_WPM = 150


@dataclass(frozen=True)
class Clip:
    """One rendered audio file of the demo corpus."""

    track_id: str
    role: str
    style: str
    work_id: str
    path: str
    duration: float
    instrument: str
    source: str
    licence: str


@dataclass(frozen=True)
class Rejection:
    """A clip or work that did not enter the corpus, and why."""

    work_id: str
    track_id: str
    reason: str


def select_works(params: FetchParams) -> list[WorkRef]:
    """Pick up to ``works_per_style`` works of each requested style, seeded.

    Raises
    ------
    ConfigError
        If a style is not one the demo corpus knows.
    """
    unknown = [s for s in params.styles if s not in STYLES]
    if unknown:
        raise ConfigError(
            f"params.yaml: fetch.styles: unknown style {unknown[0]!r} (known: {', '.join(STYLES)})"
        )
    chosen: list[WorkRef] = []
    for style in params.styles:
        candidates = discover_works(style)
        rng = np.random.default_rng([params.seed, zlib.crc32(style.encode())])
        take = min(params.works_per_style, len(candidates))
        picks = sorted(rng.choice(len(candidates), size=take, replace=False))
        chosen.extend(candidates[i] for i in picks)
    return chosen


def render_corpus(
    works: list[WorkRef], params: FetchParams, out_dir: Path, workers: int
) -> Iterator[tuple[list[Clip], list[Rejection]]]:
    """Render every work in parallel; yield each work's clips and rejections as it finishes."""
    jobs = [(work, params, out_dir) for work in works]
    if workers <= 1:
        yield from (render_work(*job) for job in jobs)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(_render_job, jobs, chunksize=4)


def _render_job(job: tuple[WorkRef, FetchParams, Path]) -> tuple[list[Clip], list[Rejection]]:
    return render_work(*job)


def render_work(work: WorkRef, params: FetchParams, out_dir: Path) -> tuple[list[Clip], list[Rejection]]:
    """Render one work's clips: foreground + BGM (+ narration), or one music track.

    Every clip is seeded from ``params.seed`` and the work id, so a rebuild is
    identical. A clip whose level is below ``params.silence_dbfs`` is rejected.

    Returns
    -------
    tuple
        ``(clips written under out_dir, rejections)``.
    """
    style = STYLES[work.style]
    rng = np.random.default_rng([params.seed, zlib.crc32(work.work_id.encode())])
    try:
        parsed = parse_work(work, tempo_scale=float(rng.uniform(0.92, 1.08)))
    except ScoreError as exc:
        return [], [Rejection(work.work_id, "", str(exc))]
    if style.polyphonic and len(parsed.voices) < style.min_parts:
        return [], [
            Rejection(
                work.work_id,
                "",
                f"{len(parsed.voices)} voice(s); a {style.name} needs at least {style.min_parts}",
            )
        ]
    start = _window_start(parsed, params.clip_seconds, rng)
    rejections: list[Rejection] = []
    renders: list[tuple[str, np.ndarray, str, str]] = []  # (role, audio, instrument, licence)
    lead = int(rng.choice(style.lead_programs))
    if style.polyphonic:
        accompaniment = [int(rng.choice(style.accompaniment_programs)) for _ in parsed.voices[1:]]
        renders.append(
            (
                "foreground",
                render_voices([(parsed.voices[0], lead)], start, params.clip_seconds, params.sample_rate),
                f"gm{lead}",
                SCORE_LICENCE,
            )
        )
        renders.append(
            (
                "bgm",
                render_voices(
                    list(zip(parsed.voices[1:], accompaniment, strict=True)),
                    start,
                    params.clip_seconds,
                    params.sample_rate,
                ),
                "+".join(f"gm{p}" for p in accompaniment),
                SCORE_LICENCE,
            )
        )
        if params.narration and style.language and parsed.lyrics:
            variant = str(rng.choice(NARRATOR_VARIANTS))
            try:
                speech = _narration(parsed.lyrics, style, variant, params)
            except NarrationError as exc:
                rejections.append(
                    Rejection(work.work_id, f"{work.work_id}-narration", f"narration failed: {exc}")
                )
            else:
                renders.append(
                    ("narration", speech, f"espeak-ng:{style.language}+{variant}", NARRATION_LICENCE)
                )
    else:
        voices = [(voice, lead) for voice in parsed.voices]
        renders.append(
            (
                "music",
                render_voices(voices, start, params.clip_seconds, params.sample_rate),
                f"gm{lead}",
                SCORE_LICENCE,
            )
        )

    clips = []
    for role, audio, instrument, licence in renders:
        track_id = f"{work.work_id}-{role}"
        level = rms_dbfs(audio)
        if level < params.silence_dbfs:
            rejections.append(
                Rejection(
                    work.work_id,
                    track_id,
                    f"silent render: {level:.1f} dBFS < fetch.silence_dbfs {params.silence_dbfs}",
                )
            )
            continue
        rel = Path("audio") / work.style / f"{track_id}.flac"
        write_flac(out_dir / rel, _level(audio, level), params.sample_rate)
        source = work.source + (" (lyrics)" if role == "narration" else "")
        clips.append(
            Clip(
                track_id,
                role,
                work.style,
                work.work_id,
                rel.as_posix(),
                round(audio.size / params.sample_rate, 3),
                instrument,
                source,
                licence,
            )
        )
    return clips, rejections


def _window_start(parsed: ParsedWork, clip_seconds: float, rng: np.random.Generator) -> float:
    """Seconds into the work where the clip starts: a seeded note onset of the top voice."""
    latest = parsed.seconds - clip_seconds
    if latest <= 0:
        return 0.0
    onsets = parsed.voices[0].onsets
    candidates = onsets[onsets <= latest]
    return float(rng.choice(candidates)) if candidates.size else 0.0


def _narration(lyrics: str, style: Style, variant: str, params: FetchParams) -> np.ndarray:
    text = " ".join(lyrics.split()[:NARRATION_WORDS])
    speech, rate = narrate(text, style.language or "", variant, NARRATION_WPM)
    if speech.size and rate != params.sample_rate:
        speech = soxr.resample(speech, rate, params.sample_rate, quality="HQ").astype(np.float32)
    return speech[: int(params.clip_seconds * params.sample_rate)]


def _level(audio: np.ndarray, level_dbfs: float) -> np.ndarray:
    gain = 10.0 ** ((TARGET_DBFS - level_dbfs) / 20.0)
    out = audio * gain
    peak = float(np.abs(out).max())
    return out * (PEAK_LIMIT / peak) if peak > PEAK_LIMIT else out
