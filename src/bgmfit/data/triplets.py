"""Style-balanced batches for method B's in-batch triplet mining."""

from __future__ import annotations

from collections import defaultdict

import numpy as np


def style_batches(
    rows: np.ndarray,
    styles: list[str],
    styles_per_batch: int,
    tracks_per_style: int,
    n_batches: int,
    rng: np.random.Generator,
) -> list[np.ndarray]:
    """Draw batches of ``styles_per_batch`` styles x ``tracks_per_style`` tracks.

    Every batch then holds positives (same style) for each anchor and negatives
    (other styles) to mine from. A style with fewer tracks than asked gives all
    it has; styles with a single track cannot give a positive and are not drawn.

    Parameters
    ----------
    rows:
        Candidate row indices.
    styles:
        Style label of each candidate, aligned with ``rows``.

    Returns
    -------
    list of numpy.ndarray
        ``n_batches`` arrays of row indices.
    """
    by_style: dict[str, list[int]] = defaultdict(list)
    for row, style in zip(rows, styles, strict=True):
        by_style[style].append(int(row))
    usable = sorted(s for s, members in by_style.items() if len(members) >= 2)
    if len(usable) < 2:
        raise ValueError(f"triplets need at least two styles with two tracks each; found {usable}")
    per_batch = min(styles_per_batch, len(usable))
    batches = []
    for _ in range(n_batches):
        chosen = rng.choice(len(usable), size=per_batch, replace=False)
        batch = []
        for s in chosen:
            members = by_style[usable[s]]
            take = min(tracks_per_style, len(members))
            batch.extend(rng.choice(members, size=take, replace=False).tolist())
        batches.append(np.array(batch, dtype=np.int64))
    return batches
