"""An episode's scenes: boundaries from novelty in the fused features and from long pauses.

The novelty is Foote's (2000): a checkerboard kernel slid along the diagonal of the
self-similarity of the per-second fused features (cosine, over ``novelty_kernel_seconds``),
high where the seconds before are alike, the seconds after are alike, and the two differ. A
change of kind (speech, music, silence) held on both sides adds to it. It is z-scored over
the episode; its peaks above ``novelty_threshold`` are boundaries, strongest first, each at
least ``min_scene_seconds`` from the others. A silence of ``pause_seconds`` or more is a
boundary at its middle whatever the novelty. A scene still longer than ``max_scene_seconds``
is split at its strongest novelty that leaves both parts long enough.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import find_peaks

from bgmfit.config import TimelineParams


@dataclass(frozen=True)
class Span:
    """A scene: ``[start, end)`` seconds and its kind (the kind most of its seconds have)."""

    start: int
    end: int
    kind: str


def novelty(rows: np.ndarray, kernel_seconds: int) -> np.ndarray:
    """Foote's checkerboard novelty of ``(seconds, columns)`` feature rows, one value per second."""
    n = len(rows)
    unit = rows - rows.mean(axis=0)
    unit = unit / np.maximum(np.linalg.norm(unit, axis=1, keepdims=True), 1e-9)
    half = kernel_seconds // 2
    offsets = np.arange(-half, half) + 0.5
    taper = np.exp(-0.5 * (offsets / (0.5 * half)) ** 2)
    sign = np.sign(offsets)
    kernel = np.outer(sign, sign) * np.outer(taper, taper)  # + within a side, - across
    padded = np.concatenate([np.repeat(unit[:1], half, 0), unit, np.repeat(unit[-1:], half, 0)])
    out = np.zeros(n)
    for i in range(n):
        block = padded[i : i + 2 * half]
        out[i] = float(np.sum(kernel * (block @ block.T)))
    return out


def _kind_change(kinds: np.ndarray, half: int) -> np.ndarray:
    """1 where the kind most seconds have changes between the ``half`` seconds before and after."""
    n = len(kinds)
    codes = np.searchsorted(np.array(["music", "silence", "speech"]), kinds.astype(str))
    out = np.zeros(n)
    for i in range(1, n):
        before = np.bincount(codes[max(0, i - half) : i], minlength=3).argmax()
        after = np.bincount(codes[i : i + half], minlength=3).argmax()
        out[i] = float(before != after)
    return out


def pauses(kinds: np.ndarray, seconds: float) -> list[int]:
    """The middle second of each run of silence at least ``seconds`` long (not at either end)."""
    out, i, n = [], 0, len(kinds)
    while i < n:
        if kinds[i] != "silence":
            i += 1
            continue
        j = i
        while j < n and kinds[j] == "silence":
            j += 1
        if j - i >= seconds and i > 0 and j < n:
            out.append((i + j) // 2)
        i = j
    return out


def split_scenes(rows: np.ndarray, kinds: np.ndarray, params: TimelineParams) -> list[Span]:
    """Scenes of an episode from its per-second fused rows and kinds (see the module doc)."""
    n = len(rows)
    shortest, longest = int(np.ceil(params.min_scene_seconds)), int(params.max_scene_seconds)
    if n < 2 * shortest:
        return [_span(0, n, kinds)]
    score = novelty(rows, params.novelty_kernel_seconds)
    score = (score - score.mean()) / max(score.std(), 1e-9)
    score = score + 2.0 * _kind_change(kinds, params.novelty_kernel_seconds // 2)
    score[:shortest] = score[n - shortest + 1 :] = -np.inf  # no scene shorter than min at either end

    cuts = [p for p in pauses(kinds, params.pause_seconds) if shortest <= p <= n - shortest]
    kept: list[int] = []
    for p in cuts:  # pauses first, in order, spaced
        if all(abs(p - q) >= shortest for q in kept):
            kept.append(p)
    peaks, _ = find_peaks(np.nan_to_num(score, neginf=-1e9), height=params.novelty_threshold)
    for p in sorted(peaks, key=lambda p: -score[p]):
        if all(abs(p - q) >= shortest for q in kept):
            kept.append(int(p))
    bounds = [0, *sorted(kept), n]

    done = False
    while not done:  # split what is still too long, at its strongest admissible novelty
        done = True
        for a, b in zip(bounds, bounds[1:], strict=False):
            if b - a > longest:
                inner = np.arange(a + shortest, b - shortest + 1)
                bounds = sorted([*bounds, int(inner[np.argmax(score[inner])])])
                done = False
                break
    return [_span(a, b, kinds) for a, b in zip(bounds, bounds[1:], strict=False)]


def _span(start: int, end: int, kinds: np.ndarray) -> Span:
    values, counts = np.unique(kinds[start:end].astype(str), return_counts=True)
    return Span(start, end, str(values[np.argmax(counts)]))
