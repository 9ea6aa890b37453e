"""``index`` stage: embed the catalogue with the champion models into ``models/index/``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bgmfit.config import FeaturesParams, IndexParams
from bgmfit.data.store import FEATURES_DIR, FeatureStore
from bgmfit.errors import BgmfitError
from bgmfit.index import build_catalogue
from bgmfit.stages.common import fresh_dir
from bgmfit.stages.register import CHAMPIONS
from bgmfit.tracking.registry import MATCH, TRIPLET, incompatibility, load_version

INDEX_DIR = Path("models/index")


def run(
    params: IndexParams,
    features: FeaturesParams,
    features_dir: Path = FEATURES_DIR,
    champions_path: Path = CHAMPIONS,
    out: Path = INDEX_DIR,
) -> dict:
    """Build the index from the versions named in ``champions_path``; return its stamp."""
    if not champions_path.is_file():
        raise BgmfitError(f"{champions_path} is missing; run the register stage first (dvc repro register)")
    champions = json.loads(champions_path.read_text())
    store = FeatureStore.load(features_dir)
    models = {}
    for network in (MATCH, TRIPLET):
        champion = champions[network.name]
        model = load_version(network.name, str(champion["version"]))
        problem = incompatibility(network, model, store, champion["input"])
        if problem:
            raise BgmfitError(
                f"index: {network.name} v{champion['version']} (@champion) {problem} in {features_dir}: "
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
