"""Invariance of the trained networks on the validation split, where designs are chosen.

The ``evaluate`` stage measures invariance on the test split, once per run; a choice between
designs (padding, augmentation strengths) is made on validation instead, with this script::

    python scripts/val_invariance.py            # models/match and models/triplet as trained
    python scripts/val_invariance.py --queries 300

It prints one JSON object: per method, top-1 unchanged and top-10 overlap under each change.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bgmfit.config import EvaluateParams, FeaturesParams, load_params
from bgmfit.data.store import FeatureStore
from bgmfit.evaluation.invariance import measure_invariance
from bgmfit.features.fusion import NormStats
from bgmfit.files import FEATURES, MODELS, RAW
from bgmfit.models.match_module import MatchModule
from bgmfit.models.triplet_module import TripletModule
from bgmfit.networks import MATCH, TRIPLET
from bgmfit.stages import worker_count


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--split", default="val", choices=["train", "val", "test"])
    parser.add_argument("--queries", type=int, default=None, help="per method (default: evaluate's)")
    args = parser.parse_args()
    evaluate = load_params("evaluate", EvaluateParams, args.params)
    result = measure_invariance(
        FeatureStore.load(FEATURES),
        NormStats.load(FEATURES / "norm_stats.json"),
        MatchModule.load_from_checkpoint(MODELS / MATCH.key / "model.ckpt", map_location="cpu"),
        TripletModule.load_from_checkpoint(MODELS / TRIPLET.key / "model.ckpt", map_location="cpu"),
        load_params("features", FeaturesParams, args.params),
        RAW,
        args.queries or evaluate.invariance_queries,
        evaluate.seed,
        worker_count(evaluate.workers),
        split=args.split,
    )
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
