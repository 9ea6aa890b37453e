"""Graded (foreground, BGM, fit) pairs for method A, balanced across the three grades."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from bgmfit.data.store import FeatureStore

#: Fit grades from structure: the BGM of the foreground's own work, of another
#: work in the same style, of another style.
SAME_WORK, SAME_STYLE, OTHER_STYLE = 1.0, 0.5, 0.0


def sample_pairs(store: FeatureStore, split: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One pair of each grade per foreground of ``split``, BGMs from the same split.

    A foreground's own-work pair uses its manifest ``label`` when one is given,
    else 1.0. A grade with no candidate (e.g. a style with one work) is left out
    for that foreground rather than filled with another grade.

    Returns
    -------
    tuple
        ``(pairs, grades)``: ``(k, 2)`` row indices (foreground, bgm) and ``(k,)`` float32.
    """
    bgms = store.bgms(split)
    by_work: dict[str, list[int]] = defaultdict(list)
    by_style: dict[str, list[int]] = defaultdict(list)
    for i in bgms:
        by_work[store.tracks[i].work_id].append(int(i))
        by_style[store.tracks[i].style].append(int(i))
    pairs: list[tuple[int, int]] = []
    grades: list[float] = []
    for f in store.foregrounds(split):
        track = store.tracks[f]
        own = by_work.get(track.work_id, [])
        if own:
            pairs.append((int(f), int(rng.choice(own))))
            grades.append(float(track.label) if track.label else SAME_WORK)
        same_style = [b for b in by_style.get(track.style, []) if store.tracks[b].work_id != track.work_id]
        if same_style:
            pairs.append((int(f), int(rng.choice(same_style))))
            grades.append(SAME_STYLE)
        other_style = [int(b) for b in bgms if store.tracks[b].style != track.style]
        if other_style:
            pairs.append((int(f), int(rng.choice(other_style))))
            grades.append(OTHER_STYLE)
    return np.array(pairs, dtype=np.int64).reshape(-1, 2), np.array(grades, dtype=np.float32)


def fit_grade(store: FeatureStore, foreground: int, bgm: int) -> float:
    """The structural fit grade of any (foreground, BGM) pair of rows."""
    fg, bg = store.tracks[foreground], store.tracks[bgm]
    if fg.work_id == bg.work_id:
        return float(fg.label) if fg.label else SAME_WORK
    return SAME_STYLE if fg.style == bg.style else OTHER_STYLE


def all_pairs(store: FeatureStore, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Every (foreground, BGM) pair of ``split`` with its structural grade, as the evaluation ranks them.

    Returns
    -------
    tuple
        ``(pairs, grades)`` as for :func:`sample_pairs`.
    """
    foregrounds, bgms = store.foregrounds(split), store.bgms(split)
    pairs = np.array([(f, b) for f in foregrounds for b in bgms], dtype=np.int64).reshape(-1, 2)
    grades = np.array([fit_grade(store, f, b) for f, b in pairs], dtype=np.float32)
    return pairs, grades
