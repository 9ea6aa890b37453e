"""Timelines measured: long-form episodes built from held-out works, whose right BGM is known.

Each episode strings together ``scenes`` scenes of test works, the style changing from work to
work. A scene is a passage of the work's narration (its lyrics, read by eSpeak NG), repeated to
at least ``SCENE_SECONDS``; a pause of ``PAUSE_SECONDS`` follows every scene. A work is read in
one passage or, as often, in two, the second starting half-way through its reading: a chapter
whose reader pauses, where a scene detector rightly cuts but the right music carries on. So the
right plan keeps one BGM across some boundaries and changes it at others, and smoothing is
measured where it matters. Melodies are left out: a timeline puts no BGM where the episode
already has music, and a melody is music. The library is every test BGM. A scene's right BGM
is its own work's; the right style, any BGM of its style.

Reported, over all episodes (``metrics/timeline.json``):

- ``scene_accuracy_work`` and ``scene_accuracy_style``: the BGM chosen where each true scene's
  middle falls is its own work's, or of its style;
- ``boundary_f1`` (and precision, recall) at ±3 s, ``mir_eval.segment.detection``;
- ``switches`` (changes of track) against ``true_switches`` (changes of work);
- the same for the **baseline**: each scene's top-1, no switch penalty, no limit on returns;
- ``abstention``: with every BGM of the first scene's style removed from the library, the
  share of that style's scenes that get no BGM (the right answer), and the share of the other
  scenes that lose theirs (``false_abstention``). Its own work's BGM alone is not removed: a
  BGM of its style is then the right answer, not silence.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import mir_eval
import numpy as np
import torch

from bgmfit.audio import load_audio
from bgmfit.config import TimelineParams
from bgmfit.data.store import FeatureStore, windows_of
from bgmfit.index.catalogue import TRACK_COLUMNS, Catalogue, CosineIndex
from bgmfit.metrics import fit_calibration
from bgmfit.timeline.episode import plan_scenes, score_scenes
from bgmfit.timeline.plan import NONE

SCENE_SECONDS = 25.0
PAUSE_SECONDS = 4.0


@dataclass
class Episode:
    audio: np.ndarray
    works: list[str]  # each true scene's work, in order (a work may span two scenes)
    styles: list[str]
    bounds: np.ndarray  # (scenes, 2) seconds; a pause belongs half to each side


def held_out_library(
    store: FeatureStore, match_model, features, norm_stats, calibration: dict | None, split: str = "test"
) -> Catalogue:
    """A split's BGM as a served library, embedded by ``match_model`` (method B is not needed)."""
    rows = store.bgms(split)
    windows, owner = windows_of(store.window_track, rows)
    with torch.no_grad():
        deep = match_model.embed(torch.from_numpy(store.window_fused[windows]), "bgm").numpy()
    tracks = []
    for r in rows:
        t = store.tracks[r]
        row = dict.fromkeys(TRACK_COLUMNS, "")
        row |= {"track_id": t.track_id, "path": t.path, "role": "bgm", "style": t.style, "work_id": t.work_id}
        row |= {"split": split, "duration_seconds": f"{store.duration[r]:.3f}"}
        tracks.append(row)
    return Catalogue(
        tracks=tracks,
        window_track=owner.astype(np.int64),
        window_offset=store.window_offset[windows].astype(np.float32),
        match_deep=deep.astype(np.float32),
        triplet=CosineIndex(np.zeros((len(windows), 1), np.float32)),
        features=features,
        norm_stats=norm_stats,
        stamp={"models": {}, "library": "demo", "calibration": calibration},
    )


def val_calibration(store: FeatureStore, match_model) -> dict | None:
    """``match_model``'s isotonic calibration on the validation split (as the index stage fits it)."""
    from bgmfit.evaluation.scoring import score_match

    try:
        val = score_match(store, match_model, seed=0, split="val")
    except ValueError:
        return None
    return fit_calibration(val.scores["model"].ravel(), val.relevance.ravel())


def _passage(reading: np.ndarray, start: int, least: int) -> np.ndarray:
    """Whole readings of ``reading``, at least ``least`` samples, from sample ``start`` of it on."""
    repeats = -(-least // reading.size)
    return np.tile(reading, repeats + 1)[start : start + repeats * reading.size]


def build_episodes(
    store: FeatureStore, raw_dir: Path, rate: int, count: int, scenes: int, seed: int, split: str = "test"
) -> list[Episode]:
    """``count`` episodes of ``scenes`` held-out works of ``split`` (see the module doc), at ``rate`` Hz."""
    rng = np.random.default_rng(seed)
    by_work: dict[str, dict] = {}
    for r in store.select(split):
        t = store.tracks[r]
        entry = by_work.setdefault(t.work_id, {"style": t.style, "voices": [], "bgm": False})
        if t.role == "narration":
            entry["voices"].append(t.path)
        entry["bgm"] |= t.role == "bgm"
    works = sorted(w for w, e in by_work.items() if e["bgm"] and e["voices"])
    pause = np.zeros(int(PAUSE_SECONDS * rate), np.float32)
    episodes = []
    for _ in range(count):
        scene_works: list[str] = []
        for w in rng.permutation(works):  # distinct works, the style changing from work to work
            if len(scene_works) == scenes:
                break
            if not scene_works or by_work[w]["style"] != by_work[scene_works[-1]]["style"]:
                scene_works += [str(w)] * min(int(rng.integers(1, 3)), scenes - len(scene_works))
        parts, bounds, now = [], [], 0.0
        for i, w in enumerate(scene_works):
            second = i > 0 and scene_works[i - 1] == w
            if not second:  # a work's second passage reads what its first one loaded
                reading = np.concatenate(
                    [load_audio(raw_dir / p, rate) for p in sorted(by_work[w]["voices"])]
                )
            scene = _passage(reading, reading.size // 2 if second else 0, int(SCENE_SECONDS * rate))
            bounds.append([now, now + scene.size / rate])
            parts += [scene, pause]
            now += (scene.size + pause.size) / rate
        bounds = np.array(bounds)
        bounds[1:, 0] = bounds[:-1, 1] = (bounds[:-1, 1] + bounds[1:, 0]) / 2
        bounds[-1, 1] = now
        styles = [by_work[w]["style"] for w in scene_works]
        episodes.append(Episode(np.concatenate(parts), scene_works, styles, bounds))
    return episodes


def evaluate_timelines(
    store: FeatureStore,
    raw_dir: Path,
    match_model,
    features,
    norm_stats,
    params: TimelineParams,
    episodes: int,
    scenes: int,
    seed: int,
    split: str = "test",
    variants: dict[str, TimelineParams] | None = None,
) -> dict:
    """The long-form metrics of the module doc, for ``match_model`` and the unsmoothed baseline.

    ``split`` chooses the works and the library: ``test`` in the evaluate stage, ``val`` to
    choose the timeline params (``scripts/val_timeline.py``). ``variants`` (name -> params)
    plans the same scored scenes each way; by default the timeline and the unsmoothed baseline.
    """
    catalogue = held_out_library(
        store, match_model, features, norm_stats, val_calibration(store, match_model)
    )
    work_of = np.array([t["work_id"] for t in catalogue.tracks])
    style_of = np.array([t["style"] for t in catalogue.tracks])
    baseline = params.model_copy(update={"switch_penalty": 0.0, "max_runs": 10**6})
    variants = variants or {"timeline": params, "baseline": baseline}
    keys = ("work", "style", "switches", "f1", "precision", "recall", "abstained", "kept")
    totals = {name: {k: [] for k in keys} for name in variants}
    true_switches = []
    for e, episode in enumerate(
        build_episodes(store, raw_dir, features.sample_rate, episodes, scenes, seed, split)
    ):
        print(f"evaluate: timeline episode {e + 1}/{episodes}", file=sys.stderr)
        scored = score_scenes(episode.audio, catalogue, match_model, params)
        found = np.array([[s.start, s.end] for s in scored.spans], dtype=float)
        found[-1, 1] = episode.bounds[-1, 1]
        p, r, f1 = mir_eval.segment.detection(episode.bounds, found, window=3.0, trim=True)
        true_switches.append(sum(a != b for a, b in zip(episode.works, episode.works[1:], strict=False)))
        middles = episode.bounds.mean(axis=1)
        scene_of = [min(int(np.searchsorted(found[:, 1], m, side="right")), len(found) - 1) for m in middles]
        gone = episode.styles[0]  # for abstention: every BGM of the first scene's style removed
        for name, variant in variants.items():
            block = totals[name]
            picked = [plan_scenes(scored, variant)[s] for s in scene_of]
            block["work"] += [
                c != NONE and work_of[c] == w for c, w in zip(picked, episode.works, strict=True)
            ]
            block["style"] += [
                c != NONE and style_of[c] == s for c, s in zip(picked, episode.styles, strict=True)
            ]
            tracks = [c for c in plan_scenes(scored, variant) if c != NONE]
            block["switches"].append(sum(a != b for a, b in zip(tracks, tracks[1:], strict=False)))
            block["f1"].append(f1)
            block["precision"].append(p)
            block["recall"].append(r)
            without = plan_scenes(scored, variant, excluded=style_of == gone)
            for c, style in zip([without[s] for s in scene_of], episode.styles, strict=True):
                block["abstained" if style == gone else "kept"].append(c == NONE)
    out = {}
    for name, block in totals.items():
        out[name] = {
            "scene_accuracy_work": float(np.mean(block["work"])),
            "scene_accuracy_style": float(np.mean(block["style"])),
            "switches": float(np.mean(block["switches"])),
            "boundary_f1": float(np.mean(block["f1"])),
            "boundary_precision": float(np.mean(block["precision"])),
            "boundary_recall": float(np.mean(block["recall"])),
            "abstention": float(np.mean(block["abstained"])),
            "false_abstention": float(np.mean(block["kept"])),
        }
    out["true_switches"] = float(np.mean(true_switches))
    out["episodes"], out["scenes_per_episode"] = episodes, scenes
    out["scenes"] = len(next(iter(totals.values()))["work"])
    return out
