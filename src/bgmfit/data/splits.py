"""Deterministic train/val/test splits by work, so that no work straddles two splits."""

from __future__ import annotations

import zlib
from collections import defaultdict

import numpy as np

SPLITS = ("train", "val", "test")


def assign_splits(
    work_styles: dict[str, str], val_fraction: float, test_fraction: float, seed: int
) -> dict[str, str]:
    """Assign every work to one split, stratified by style.

    Within each style the works are sorted, shuffled with a generator seeded by
    ``seed`` and the style name, and cut into test, val and train. The result
    depends only on the set of works and the arguments, never on input order.
    A style with at least three works gets at least one work in each split whose
    fraction is positive.

    Parameters
    ----------
    work_styles:
        ``work_id -> style``.
    val_fraction, test_fraction:
        Share of each style's works for validation and test.
    seed:
        Seed for the shuffle.

    Returns
    -------
    dict
        ``work_id -> "train" | "val" | "test"``.
    """
    by_style: dict[str, list[str]] = defaultdict(list)
    for work, style in work_styles.items():
        by_style[style].append(work)
    assignment: dict[str, str] = {}
    for style, works in by_style.items():
        works.sort()
        rng = np.random.default_rng([seed, zlib.crc32(style.encode())])
        order = [works[i] for i in rng.permutation(len(works))]
        n = len(order)
        n_test = _share(n, test_fraction)
        n_val = _share(n, val_fraction)
        while n_test + n_val >= n and (n_test or n_val):  # always keep a training work
            if n_val >= n_test:
                n_val -= 1
            else:
                n_test -= 1
        for i, work in enumerate(order):
            assignment[work] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    return assignment


def _share(n: int, fraction: float) -> int:
    count = int(round(n * fraction))
    return max(count, 1) if fraction > 0 and n >= 3 else count
