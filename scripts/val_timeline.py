"""Choose the timeline's plan params on long-form episodes of *validation* works (never test).

Scores the scenes of ``--episodes`` validation episodes once with the trained method A
(``models/match/model.ckpt``) and plans them with every ``min_fit`` x ``switch_penalty``
given; prints scene accuracy (style, work), switches, abstention and false abstention.

    .venv/bin/python scripts/val_timeline.py --episodes 12 --min-fit 0.2 0.3 0.4 --penalty 0 0.05 0.1
"""

from __future__ import annotations

import argparse

from bgmfit.config import FeaturesParams, TimelineParams, load_params
from bgmfit.data.store import FeatureStore
from bgmfit.features.fusion import NormStats
from bgmfit.files import FEATURES, MODELS, RAW
from bgmfit.models.match_module import MatchModule
from bgmfit.timeline.longform import evaluate_timelines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--episodes", type=int, default=12)
    parser.add_argument("--scenes", type=int, default=6)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--min-fit", type=float, nargs="+", default=[0.2, 0.25, 0.3, 0.35, 0.4])
    parser.add_argument("--penalty", type=float, nargs="+", default=[0.0, 0.05, 0.1])
    args = parser.parse_args()
    params = load_params("timeline", TimelineParams)
    variants = {
        f"min_fit {m:g}, penalty {p:g}": params.model_copy(update={"min_fit": m, "switch_penalty": p})
        for m in args.min_fit
        for p in args.penalty
    }
    model = MatchModule.load_from_checkpoint(MODELS / "match" / "model.ckpt", map_location="cpu").eval()
    store = FeatureStore.load(FEATURES)
    out = evaluate_timelines(
        store,
        RAW,
        model,
        load_params("features", FeaturesParams),
        NormStats.load(FEATURES / "norm_stats.json"),
        params,
        args.episodes,
        args.scenes,
        args.seed,
        split="val",
        variants=variants,
    )
    print(
        f"{out['scenes']} validation scenes in {out['episodes']} episodes; "
        f"true switches {out['true_switches']:.2f}"
    )
    print(f"{'variant':<26} {'style':>6} {'work':>6} {'switches':>8} {'abstain':>8} {'false':>6}")
    for name in variants:
        b = out[name]
        print(
            f"{name:<26} {b['scene_accuracy_style']:6.3f} {b['scene_accuracy_work']:6.3f} "
            f"{b['switches']:8.2f} {b['abstention']:8.3f} {b['false_abstention']:6.3f}"
        )


if __name__ == "__main__":
    main()
