"""``index`` stage: embed the catalogue with the champion models into ``models/index/``."""

from __future__ import annotations

import sys
from pathlib import Path

from bgmfit.config import FeaturesParams, IndexParams, load_params
from bgmfit.data.store import FeatureStore
from bgmfit.errors import BgmfitError
from bgmfit.files import CHAMPIONS, FEATURES, INDEX, fresh_dir, read_json
from bgmfit.index import build_catalogue
from bgmfit.networks import MATCH, NETWORKS, TRIPLET
from bgmfit.tracking.logged import load_version
from bgmfit.tracking.registry import incompatibility


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
    """Build the index from the versions named in ``champions_path``; return its stamp."""
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
    stamp = build_catalogue(
        store,
        models[MATCH.name],
        models[TRIPLET.name],
        champions,
        features,
        features_dir / "norm_stats.json",
        params,
        fresh_dir(out),
    )
    versions = ", ".join(f"{n} v{m['version']}" for n, m in stamp["models"].items())
    print(
        f"index: {stamp['tracks']} catalogue tracks ({stamp['bgm_tracks']} BGM), {stamp['search']} search, "
        f"from {versions}; sha256 {stamp['content_sha256'][:12]}",
        file=sys.stderr,
    )
    return stamp
