"""Invariance: answers that depend on the music, not on the copy of it.

Each held-out query is decoded from its file, changed as two copies of the same audio
ordinarily differ, and answered again, exactly as the service answers an upload (every
window, levelled, normalised, combined by the same rules). Two figures per change:

- ``top1_unchanged``: the share of queries whose first answer stays the same;
- ``top10_overlap``: the mean share of the first ten answers that stay among the first ten.

Method A ranks every BGM of the corpus by fit with a foreground or narration query; method B
ranks every piece of music (the query's own track left out) by style distance.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from bgmfit.audio import encode, load_audio
from bgmfit.config import FeaturesParams
from bgmfit.data.store import FeatureStore
from bgmfit.errors import AudioDecodeError, BgmfitError
from bgmfit.features.fusion import NormStats
from bgmfit.features.windows import TrackWindows, analyse_windows
from bgmfit.index.catalogue import unit_mean
from bgmfit.models.match_module import MatchModule
from bgmfit.models.triplet_module import TripletModule


def _pcm16(y: np.ndarray) -> np.ndarray:
    # What a 16-bit file of the changed audio holds: clipped at full scale, rounded.
    return (np.round(np.clip(y, -1.0, 1.0) * 32767.0) / 32767.0).astype(np.float32)


#: The changes a copy of the same audio ordinarily carries, by the name the metrics use.
CHANGES: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {
    "gain_plus_6db": lambda y, sr: _pcm16(y * np.float32(10 ** (6 / 20))),
    "gain_minus_6db": lambda y, sr: _pcm16(y * np.float32(10 ** (-6 / 20))),
    "mp3_128k": lambda y, sr: load_audio(encode(y, sr, "mp3", "libmp3lame", 128_000), sr),
    "start_1s_later": lambda y, sr: y[sr:],
}


def _versions(job: tuple[str, FeaturesParams]) -> dict[str, TrackWindows]:
    """The windows of a file as it is and under every change."""
    path, params = job
    y = load_audio(path, params.sample_rate)
    versions = {"original": y} | {name: change(y, params.sample_rate) for name, change in CHANGES.items()}
    return {name: analyse_windows(v, params) for name, v in versions.items()}


def _init_worker() -> None:
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


def _analysed(paths: list[str], params: FeaturesParams, workers: int) -> list[dict[str, TrackWindows]]:
    jobs = [(p, params) for p in paths]
    bar = tqdm(total=len(jobs), desc="invariance", unit="query", file=sys.stderr, disable=None)
    out = []
    try:
        if workers <= 1:
            for job in jobs:
                out.append(_versions(job))
                bar.update()
        else:
            with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker) as pool:
                for result in pool.map(_versions, jobs, chunksize=4):
                    out.append(result)
                    bar.update()
    except AudioDecodeError as exc:
        raise BgmfitError(f"invariance: {exc}; rerun the fetch stage") from None
    finally:
        bar.close()
    return out


def _agreement(original: list[np.ndarray], changed: list[np.ndarray]) -> dict[str, float]:
    """Top-1 unchanged and mean top-10 overlap of rankings (each an array of candidate ids, best first)."""
    top1 = np.mean([a[0] == b[0] for a, b in zip(original, changed, strict=True)])
    top10 = np.mean(
        [len(set(a[:10]) & set(b[:10])) / min(10, len(a)) for a, b in zip(original, changed, strict=True)]
    )
    return {"top1_unchanged": round(float(top1), 4), "top10_overlap": round(float(top10), 4)}


def _summary(rankings: dict[str, list[np.ndarray]], queries: int) -> dict:
    block: dict = {"queries": queries}
    for name in CHANGES:
        block[name] = _agreement(rankings["original"], rankings[name])
    block["min_top1_unchanged"] = min(block[n]["top1_unchanged"] for n in CHANGES)
    block["min_top10_overlap"] = min(block[n]["top10_overlap"] for n in CHANGES)
    return block


@torch.no_grad()
def measure_invariance(
    store: FeatureStore,
    norm: NormStats,
    match_model: MatchModule,
    triplet_model: TripletModule,
    features: FeaturesParams,
    raw_dir: Path,
    max_queries: int,
    seed: int,
    workers: int,
    split: str = "test",
) -> dict[str, dict]:
    """Invariance of both methods on up to ``max_queries`` held-out queries each, from ``split``.

    The stage measures the test split; ``scripts/val_invariance.py`` measures validation, where
    designs are chosen.

    Returns
    -------
    dict
        ``{"match": block, "triplet": block}``; a block has ``queries``, one
        ``{"top1_unchanged", "top10_overlap"}`` per change in :data:`CHANGES`, and the
        minimum of each over the changes.
    """
    rng = np.random.default_rng(seed)

    def sample(rows: np.ndarray) -> np.ndarray:
        return (
            np.sort(rng.choice(rows, size=min(max_queries, rows.size), replace=False)) if rows.size else rows
        )

    match_queries, triplet_queries = sample(store.foregrounds(split)), sample(store.music(split))
    if match_queries.size == 0 or triplet_queries.size == 0:
        raise BgmfitError(f"invariance: the {split} split has no foreground or no music tracks")
    rows = np.concatenate([match_queries, triplet_queries])
    analysed = _analysed([str(raw_dir / store.tracks[r].path) for r in rows], features, workers)
    by_row = dict(zip(rows.tolist(), analysed, strict=True))

    match_model.eval()
    triplet_model.eval()
    bgms = store.bgms()
    bgm_deep = match_model.embed(torch.from_numpy(store.inputs(match_model.input_kind)[bgms]), "bgm")
    music = store.music()
    music_style = triplet_model(torch.from_numpy(store.inputs(triplet_model.input_kind)[music])).numpy()
    triplet_frames = triplet_model.input_kind == "mfcc_frames"

    def rank_bgms(windows: TrackWindows) -> np.ndarray:
        query = torch.from_numpy(norm.normalise_fused(windows.fused))
        fit = match_model.query_fit(match_model.embed(query, "foreground"), bgm_deep).numpy()
        return bgms[np.argsort(-fit, kind="stable")]

    def rank_music(windows: TrackWindows, own: int) -> np.ndarray:
        inputs = (
            norm.normalise_frames(windows.mfcc_frames)
            if triplet_frames
            else norm.normalise_fused(windows.fused)
        )
        style = unit_mean(triplet_model(torch.from_numpy(inputs)).numpy())
        order = music[np.argsort(-(music_style @ style), kind="stable")]
        return order[order != own]

    names = ["original", *CHANGES]
    match_rankings = {n: [rank_bgms(by_row[r][n]) for r in match_queries] for n in names}
    triplet_rankings = {n: [rank_music(by_row[r][n], r) for r in triplet_queries] for n in names}
    return {
        "match": _summary(match_rankings, int(match_queries.size)),
        "triplet": _summary(triplet_rankings, int(triplet_queries.size)),
    }
