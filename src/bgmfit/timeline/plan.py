"""Choose one BGM per scene, or none, by dynamic programming.

The plan maximises the summed fit of the chosen tracks minus ``switch_penalty`` for every
change from one track to another (Viterbi over the scenes, each candidate track a state). So
a track that fits two neighbouring scenes almost as well as each one's best carries across
both, and the music changes only at scene boundaries, only when it is worth it.

A scene gets no BGM when no candidate is allowed there: its best fit is under ``min_fit``,
or it is music already. A track may come back after other music at most ``max_runs`` times
(a run is consecutive scenes of one track): when the best plan uses it more often, it is
banned from its weakest runs and the plan is made again, until no track is over.
"""

from __future__ import annotations

import numpy as np

NONE = -1


def viterbi(fits: np.ndarray, allowed: np.ndarray, switch_penalty: float) -> list[int]:
    """A column per row (scene) of ``fits``: the best sum less penalties; ``NONE`` where none is allowed.

    Parameters
    ----------
    fits:
        ``(scenes, candidates)`` fit of each candidate track with each scene.
    allowed:
        Same shape, bool: which candidates a scene may take.
    """
    scenes, candidates = fits.shape
    value = np.where(allowed, fits, -np.inf)
    best = np.full((scenes, candidates), -np.inf)
    back = np.full((scenes, candidates), NONE, dtype=np.int64)
    for s in range(scenes):
        if not allowed[s].any():
            continue
        if s == 0 or not allowed[s - 1].any():  # a scene without BGM before: the plan starts afresh
            best[s] = value[s]
            continue
        previous = best[s - 1]
        switch_from = int(np.argmax(previous))
        stay = previous
        switch = previous[switch_from] - switch_penalty
        take_switch = switch > stay
        best[s] = np.where(take_switch, switch, stay) + value[s]
        back[s] = np.where(take_switch, switch_from, np.arange(candidates))
    plan = [NONE] * scenes
    s = scenes - 1
    current = NONE
    while s >= 0:
        if not allowed[s].any():
            current = NONE
            s -= 1
            continue
        if current == NONE:
            current = int(np.argmax(best[s]))
        plan[s] = current
        current = int(back[s, current])
        s -= 1
    return plan


def runs(plan: list[int]) -> list[tuple[int, int, int]]:
    """``(track, first scene, last scene + 1)`` of each run of one track, in order (no-BGM scenes skipped)."""
    out: list[tuple[int, int, int]] = []
    for s, track in enumerate(plan):
        if track == NONE:
            continue
        if out and out[-1][0] == track and out[-1][2] == s:
            out[-1] = (track, out[-1][1], s + 1)
        else:
            out.append((track, s, s + 1))
    return out


def choose(fits: np.ndarray, allowed: np.ndarray, switch_penalty: float, max_runs: int) -> list[int]:
    """The plan (see the module doc): a candidate column per scene, or ``NONE``."""
    allowed = allowed.copy()
    while True:
        plan = viterbi(fits, allowed, switch_penalty)
        by_track: dict[int, list[tuple[int, int]]] = {}
        for track, a, b in runs(plan):
            by_track.setdefault(track, []).append((a, b))
        over = {t: r for t, r in by_track.items() if len(r) > max_runs}
        if not over:
            return plan
        for track, spans in over.items():
            strength = sorted(spans, key=lambda ab: -fits[ab[0] : ab[1], track].sum())
            for a, b in strength[max_runs:]:
                allowed[a:b, track] = False
