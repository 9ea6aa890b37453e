"""``index`` stage: embed the served library with the champion models into ``models/index/``.

The library is the demo corpus's music (``index.library: demo``) or every audio file of a
folder (``dir``; see :mod:`bgmfit.index.library`). Nothing is trained: a folder's files are
analysed (cached by content, so a rebuild only decodes new files) and embedded by the
``@champion`` versions.
"""

from __future__ import annotations

import sys
from pathlib import Path

from bgmfit.config import FeaturesParams, IndexParams, load_params
from bgmfit.data.store import FeatureStore
from bgmfit.errors import BgmfitError
from bgmfit.evaluation.scoring import score_match
from bgmfit.features.fusion import NormStats
from bgmfit.files import CHAMPIONS, FEATURES, INDEX, fresh_dir, read_json
from bgmfit.index import build_catalogue
from bgmfit.index.library import demo_library, folder_library, scan_folder
from bgmfit.metrics import fit_calibration
from bgmfit.networks import MATCH, NETWORKS, TRIPLET
from bgmfit.stages import worker_count
from bgmfit.tracking.logged import load_version
from bgmfit.tracking.registry import incompatibility

#: At most this many refused files and lines are printed (all are kept in the stamp).
_LISTED = 50
#: An HNSW index that finds fewer of the exact top 10 than this gets a warning.
RECALL_WARNING = 0.95


def main(params_path: Path) -> None:
    """``bgmfit index``: reads ``params.yaml: index`` and ``features`` (how the service analyses audio)."""
    run(load_params("index", IndexParams, params_path), load_params("features", FeaturesParams, params_path))


def run(
    params: IndexParams,
    features: FeaturesParams,
    features_dir: Path = FEATURES,
    champions_path: Path = CHAMPIONS,
    out: Path = INDEX,
) -> dict:
    """Build the index of the library from the versions named in ``champions_path``; return its stamp."""
    champions = read_json(champions_path, "run the register stage first (dvc repro register)")
    store = FeatureStore.load(features_dir)
    models = {}
    for network in NETWORKS:
        version = champions[network.name]["version"]
        model = load_version(network.name, str(version))
        problem = incompatibility(model, store)
        if problem:
            raise BgmfitError(
                f"index: {network.name} v{version} (@champion) {problem} in {features_dir}: "
                "they changed since it was trained. Retrain (dvc repro) until a new version passes "
                "register's threshold; it then replaces this one"
            )
        models[network.name] = model
    if params.library == "demo":
        library, source = demo_library(store), {"library": "demo"}
    else:
        library, source = _folder(params, features, features_dir)
    source["calibration"] = _calibration(models[MATCH.name], store)
    stamp = build_catalogue(
        library,
        models[MATCH.name],
        models[TRIPLET.name],
        champions,
        features,
        features_dir / "norm_stats.json",
        params,
        fresh_dir(out),
        source,
    )
    versions = ", ".join(f"{n} v{m['version']}" for n, m in stamp["models"].items())
    calibration = stamp["calibration"]
    if calibration:
        print(
            f"index: method A's fits calibrated: isotonic, {len(calibration['x'])} knots "
            f"({calibration['val_pairs']} validation pairs)",
            file=sys.stderr,
        )
    recall = stamp["ann_recall_at_10"]
    if recall is not None:
        print(f"index: HNSW recall@10 against exact search {recall:.3f} (500 windows)", file=sys.stderr)
        if recall < RECALL_WARNING:
            print(
                f"index: warning: recall@10 is under {RECALL_WARNING}; raise index.ef_search "
                f"(now {params.ef_search}) or index.hnsw_m",
                file=sys.stderr,
            )
    print(
        f"index: {stamp['tracks']} tracks of library {stamp['library']} ({stamp['bgm_tracks']} BGM, "
        f"{stamp['windows']} windows), {stamp['search']} search, from {versions}; "
        f"sha256 {stamp['content_sha256'][:12]}",
        file=sys.stderr,
    )
    return stamp


def _calibration(match_model, store: FeatureStore) -> dict | None:
    """The champion's isotonic calibration on the validation split, fitted as evaluate fits it."""
    try:
        val = score_match(store, match_model, seed=0, split="val")
    except ValueError:
        return None  # no validation pairs: the fits are served as the network gives them
    return fit_calibration(val.scores["model"].ravel(), val.relevance.ravel()) | {
        "val_pairs": val.relevance.size
    }


def _folder(params: IndexParams, features: FeaturesParams, features_dir: Path):
    """The library of ``index.library_dir``, and its stamp entries; bad input per ``on_bad_input``."""
    folder = Path(params.library_dir)
    manifest = Path(params.library_manifest) if params.library_manifest else None
    try:
        scan = scan_folder(folder, manifest)
    except NotADirectoryError:
        raise BgmfitError(f"index.library_dir: {folder} is not a folder (index.library is 'dir')") from None
    if not scan.tracks:
        raise BgmfitError(
            f"index.library_dir: {folder} holds no audio file (suffixes: wav, flac, ogg, mp3, ...)"
        )
    norm = NormStats.load(features_dir / "norm_stats.json")
    library, failed, analysed = folder_library(scan, features, norm, worker_count(features.workers))
    print(
        f"index: {folder}: {len(scan.tracks)} audio file(s), {analysed} analysed now, "
        f"{len(scan.tracks) - analysed - len(failed)} from the cache",
        file=sys.stderr,
    )
    problems = scan.problems + failed
    if problems:
        listing = "\n".join(f"  {p}" for p in problems[:_LISTED])
        more = f"\n  ... and {len(problems) - _LISTED} more" if len(problems) > _LISTED else ""
        if params.on_bad_input == "fail":
            raise BgmfitError(
                f"index: {len(problems)} library file(s) or manifest line(s) could not be used "
                f"(set index.on_bad_input: skip to leave them out):\n{listing}{more}"
            )
        print(f"index: left out of the library:\n{listing}{more}", file=sys.stderr)
    if library is None:
        raise BgmfitError(f"index.library_dir: no file of {folder} could be decoded")
    source = {
        "library": str(folder),
        "manifest": str(scan.manifest) if scan.manifest else None,
        "rejected": [{"where": p.where, "reason": p.reason} for p in problems],
    }
    return library, source
