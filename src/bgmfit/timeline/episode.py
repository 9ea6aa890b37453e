"""Score a whole episode: scenes, a fit per scene for every library BGM, and the plan.

The steps, each in its own module:

1. the episode is cut into consecutive windows (one network input each, 10 s; the last one
   ends at the end) and each is analysed as every training clip is, in ``workers`` processes,
   a block at a time (:func:`analyse_episode`);
2. each second is speech, music or silence (:mod:`bgmfit.timeline.activity`), and the
   episode is split into scenes (:mod:`bgmfit.timeline.scenes`);
3. every library BGM is fitted to each scene by method A, window by window, as ``/recommend``
   fits a query (the mean over the scene's windows; a track's best window gives its offset);
4. one track (or none) is chosen per scene (:mod:`bgmfit.timeline.plan`). A track carried
   across scenes plays on: each later scene's offset continues where the last one ended.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from bgmfit.audio import Waveform
from bgmfit.config import FeaturesParams, TimelineParams
from bgmfit.features.fusion import NormStats, analyse
from bgmfit.index import Catalogue
from bgmfit.timeline.activity import second_kinds
from bgmfit.timeline.plan import NONE, choose, runs
from bgmfit.timeline.scenes import Span, split_scenes

#: Windows analysed per block: what a block holds at once is its own audio and features.
BLOCK_WINDOWS = 32
ALTERNATIVES = 3


@dataclass
class Analysis:
    """An episode's normalised fused features: per window, and per second (for the scenes)."""

    fused: np.ndarray  # (windows, n_segments, columns)
    starts: np.ndarray  # (windows,) seconds
    rows: np.ndarray  # (seconds, columns): the fused row of each second
    duration: float


@dataclass
class Scene:
    """One scene of a timeline, as the JSON has it."""

    index: int
    start_seconds: float
    end_seconds: float
    kind: str
    track: dict | None
    offset_seconds: float | None
    fit: float | None
    alternatives: list[dict] = field(default_factory=list)
    bgm_level_lu: float | None = None  # the BGM against the voice, before ducking
    ducking_db: float | None = None  # preview only: the sidechain compressor's gain over the scene, dB
    bgm_under_voice_db: float | None = None  # preview only: the ducked BGM against the voice, dB RMS
    note: str = ""


def _analyse_block(job: tuple[list[np.ndarray], FeaturesParams]) -> list[np.ndarray]:
    clips, params = job
    return [analyse(c, params).fused for c in clips]


def analyse_episode(
    y: Waveform,
    features: FeaturesParams,
    norm: NormStats,
    workers: int,
    progress: Callable[[int], None] | None = None,
) -> Analysis:
    """The fused features of every consecutive window of a waveform at ``features.sample_rate``."""
    rate = features.sample_rate
    length = int(round(features.clip_seconds * rate))
    starts = window_starts(y.size, length)
    blocks = [starts[i : i + BLOCK_WINDOWS] for i in range(0, len(starts), BLOCK_WINDOWS)]
    jobs = (([y[s : s + length].copy() for s in block], features) for block in blocks)
    fused: list[np.ndarray] = []
    if workers <= 1:
        results = map(_analyse_block, jobs)
    else:
        pool = ProcessPoolExecutor(max_workers=workers)
        results = _bounded_map(pool, _analyse_block, jobs, ahead=workers * 2)
    try:
        for block in results:
            fused.extend(block)
            if progress:
                progress(len(block))
    finally:
        if workers > 1:
            pool.shutdown(cancel_futures=True)
    windows = norm.normalise_fused(np.stack(fused))
    seconds = max(1, int(np.ceil(y.size / rate)))
    per_segment = features.segment_seconds
    rows = np.zeros((seconds, windows.shape[2]), dtype=np.float32)
    for window, start in zip(windows, starts / rate, strict=True):
        first = int(round(start))
        for j, row in enumerate(window):
            second = first + int(j * per_segment)
            if second < seconds:
                rows[second] = row
    return Analysis(windows, (starts / rate).astype(np.float32), rows, y.size / rate)


def window_starts(n_samples: int, length: int) -> np.ndarray:
    """First sample of each consecutive window of ``length``; the last one ends at the end."""
    last = max(0, n_samples - length)
    starts = np.arange(0, last + 1, length, dtype=np.int64)
    return starts if starts[-1] == last else np.append(starts, last)


def _bounded_map(pool, fn, jobs, ahead: int):
    """``pool.map`` that keeps at most ``ahead`` jobs in flight (``map`` submits every job at once)."""
    from collections import deque

    pending = deque()
    for job in jobs:
        pending.append(pool.submit(fn, job))
        if len(pending) >= ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


@dataclass
class ScoredScenes:
    """An episode's scenes, and every library BGM's calibrated fit with each (``(scenes, bgm)``)."""

    spans: list[Span]
    fit: np.ndarray  # (scenes, BGM tracks): method A's fit, calibrated
    window: np.ndarray  # (scenes, BGM tracks): each track's best window, where to play it from
    duration: float


@torch.no_grad()
def score_scenes(
    y: Waveform,
    catalogue: Catalogue,
    match_model: torch.nn.Module,
    params: TimelineParams,
    workers: int = 1,
    progress: Callable[[str, float], None] | None = None,
) -> ScoredScenes:
    """Steps 1-3 of the module doc: windows, kinds, scenes, and each BGM's fit with each scene."""
    features = catalogue.features
    rate = features.sample_rate
    n_windows = len(window_starts(y.size, int(round(features.clip_seconds * rate))))
    report = progress or (lambda step, fraction: None)
    bar = tqdm(total=n_windows, desc="timeline: analysis", unit="window", file=sys.stderr, disable=None)

    def analysed(count: int) -> None:
        bar.update(count)
        report("analysis", bar.n / n_windows)

    analysis = analyse_episode(y, features, catalogue.norm_stats, workers, analysed)
    bar.close()
    report("speech", 0.0)
    kinds = second_kinds(y, rate, params, features.loudness_lufs)
    spans = split_scenes(analysis.rows, kinds, params)

    foreground = match_model.embed(torch.from_numpy(analysis.fused), "foreground")
    centres = analysis.starts + features.clip_seconds / 2
    fit = np.zeros((len(spans), len(catalogue.bgm_rows)), dtype=np.float32)
    window = np.zeros((len(spans), len(catalogue.bgm_rows)), dtype=np.int64)
    for s, span in enumerate(
        tqdm(spans, desc="timeline: scenes", unit="scene", file=sys.stderr, disable=None)
    ):
        inside = np.flatnonzero((centres >= span.start) & (centres < span.end))
        if inside.size == 0:
            inside = np.array([int(np.argmin(np.abs(centres - (span.start + span.end) / 2)))])
        fit[s], _, window[s] = catalogue.fits(match_model, foreground[inside])
        report("fits", (s + 1) / len(spans))
    return ScoredScenes(spans, fit, window, analysis.duration)


def plan_scenes(
    scored: ScoredScenes, params: TimelineParams, excluded: np.ndarray | None = None
) -> list[int]:
    """Step 4: a BGM (its column in ``catalogue.bgm_rows``) or ``NONE`` per scene.

    ``excluded`` (a bool per BGM) takes tracks out of the library, as if they were not in it.
    """
    fit = scored.fit if excluded is None else np.where(excluded[None, :], -np.inf, scored.fit)
    top = np.argsort(-fit, axis=1, kind="stable")[:, : params.candidates]
    columns = np.unique(top)  # candidate BGMs: each scene's best, together
    allowed = np.zeros((len(scored.spans), len(columns)), dtype=bool)
    for s, span in enumerate(scored.spans):
        allowed[s] = np.isin(columns, top[s]) & (fit[s, columns] >= params.min_fit) & (span.kind != "music")
    plan = choose(
        np.nan_to_num(fit[:, columns], neginf=-1.0), allowed, params.switch_penalty, params.max_runs
    )
    return [NONE if p == NONE else int(columns[p]) for p in plan]


def plan_episode(
    y: Waveform,
    catalogue: Catalogue,
    match_model: torch.nn.Module,
    params: TimelineParams,
    workers: int = 1,
    name: str = "episode",
    progress: Callable[[str, float], None] | None = None,
) -> dict:
    """The timeline of a mono waveform at the index's ``features.sample_rate`` (see the module doc).

    ``progress(step, fraction)`` is told how far each step is, for a page that shows it.

    Returns
    -------
    dict
        ``episode``, ``duration_seconds``, ``scenes`` (:class:`Scene` as dicts), ``switches``
        and ``tracks_used``; the caller adds the models and params it ran with.
    """
    scored = score_scenes(y, catalogue, match_model, params, workers, progress)
    plan = plan_scenes(scored, params)
    fit, window, bgm = scored.fit, scored.window, catalogue.bgm_rows
    scenes = []
    offsets = _offsets(plan, scored, catalogue)
    for s, span in enumerate(scored.spans):
        chosen = None if plan[s] == NONE else plan[s]
        others = [int(c) for c in np.argsort(-fit[s], kind="stable") if int(c) != chosen][:ALTERNATIVES]
        note = ""
        if chosen is None:
            note = (
                "the episode has music here"
                if span.kind == "music"
                else f"no track fits above timeline.min_fit ({params.min_fit:g})"
            )
        scenes.append(
            Scene(
                index=s,
                start_seconds=float(span.start),
                end_seconds=float(min(span.end, scored.duration)),
                kind=span.kind,
                track=None if chosen is None else _track(catalogue, bgm[chosen]),
                offset_seconds=None if chosen is None else round(offsets[s], 2),
                fit=None if chosen is None else round(float(fit[s, chosen]), 4),
                alternatives=[
                    _track(catalogue, bgm[c])
                    | {
                        "fit": round(float(fit[s, c]), 4),
                        "offset_seconds": round(float(catalogue.window_offset[window[s, c]]), 2),
                    }
                    for c in others
                ],
                bgm_level_lu=None if chosen is None else -params.bed_db,
                note=note,
            )
        )
    used = runs(plan)
    return {
        "episode": name,
        "duration_seconds": round(scored.duration, 2),
        "scenes": [asdict(s) for s in scenes],
        "switches": max(0, len(used) - 1),
        "tracks_used": len({t for t, _, _ in used}),
    }


def _offsets(plan: list[int], scored: ScoredScenes, catalogue: Catalogue) -> dict[int, float]:
    """Where each scene's track plays from: a run starts at its first scene's best window and plays on."""
    offsets: dict[int, float] = {}
    spans = scored.spans
    for column, a, b in runs(plan):
        start = float(catalogue.window_offset[scored.window[a, column]])
        length = max(float(catalogue.durations[catalogue.bgm_rows[column]]), 1e-3)
        for s in range(a, b):
            offsets[s] = (start + spans[s].start - spans[a].start) % length
    return offsets


def _track(catalogue: Catalogue, row: int) -> dict:
    t = catalogue.tracks[int(row)]
    return {
        "track_id": t["track_id"],
        "title": t["title"],
        "artist": t["artist"],
        "style": t["style"],
        "licence": t["licence"],
        "duration_seconds": round(float(t["duration_seconds"]), 2),
    }
