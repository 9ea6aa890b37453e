"""The ``bgmfit`` command: one sub-command per pipeline stage.

Each stage sub-command reads its own ``params.yaml`` section; DVC calls them
(see ``dvc.yaml``), and so can you, from the repository root.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bgmfit import __version__
from bgmfit.config import (
    DEFAULT_PARAMS,
    EvaluateParams,
    FeaturesParams,
    FetchParams,
    TrainMatchParams,
    TrainTripletParams,
    load_params,
)
from bgmfit.errors import BgmfitError


def _fetch(args: argparse.Namespace) -> None:
    from bgmfit.stages import fetch

    fetch.run(load_params("fetch", FetchParams, args.params))


def _features(args: argparse.Namespace) -> None:
    from bgmfit.stages import features

    fetch_params = load_params("fetch", FetchParams, args.params)
    features.run(load_params("features", FeaturesParams, args.params), on_bad_input=fetch_params.on_bad_input)


def _train_match(args: argparse.Namespace) -> None:
    from bgmfit.stages import train_match

    train_match.run(load_params("train_match", TrainMatchParams, args.params))


def _train_triplet(args: argparse.Namespace) -> None:
    from bgmfit.stages import train_triplet

    train_triplet.run(load_params("train_triplet", TrainTripletParams, args.params))


def _evaluate(args: argparse.Namespace) -> None:
    from bgmfit.stages import evaluate

    evaluate.run(load_params("evaluate", EvaluateParams, args.params))


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, with one sub-command per stage."""
    parser = argparse.ArgumentParser(
        prog="bgmfit",
        description="Learn which background music fits a piece of audio, and which music is like which.",
        epilog="Stages are normally run by 'dvc repro'; each reads its section of params.yaml.",
    )
    parser.add_argument("--version", action="version", version=f"bgmfit {__version__}")
    parser.add_argument(
        "--params", type=Path, default=DEFAULT_PARAMS, help="params file to read (default: %(default)s)"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser(
        "fetch",
        help="build the demo corpus or import a folder into data/raw/",
        description="Render the built-in demo corpus (fetch.source: demo) or import a folder of audio plus "
        "a manifest CSV (fetch.source: dir) into data/raw/, with data/raw/manifest.csv.",
    ).set_defaults(handler=_fetch)
    commands.add_parser(
        "features",
        help="compute fused features and MFCC frames into data/features/",
        description="Decode every track of data/raw/manifest.csv, compute the fused feature matrix and the "
        "MFCC-frame feature, normalise with training-split statistics, and write data/features/.",
    ).set_defaults(handler=_features)
    commands.add_parser(
        "train_match",
        help="train method A, the pair-fit network, into models/match/",
        description="Train the two-tower pair-fit network on graded foreground/BGM pairs with Lightning, "
        "tracked in the MLflow experiment train_match ($MLFLOW_TRACKING_URI, default sqlite:///mlflow.db).",
    ).set_defaults(handler=_train_match)
    commands.add_parser(
        "train_triplet",
        help="train method B, the triplet style network, into models/triplet/",
        description="Train the feed-forward triplet network with in-batch mining by style, tracked in the "
        "MLflow experiment train_triplet.",
    ).set_defaults(handler=_train_triplet)
    commands.add_parser(
        "evaluate",
        help="score both networks and their baselines on held-out works",
        description="Evaluate method A and method B on the test split beside two baselines (untrained cosine "
        "and random); write metrics/match.json, metrics/triplet.json and plots/, and log them to the "
        "models' MLflow runs.",
    ).set_defaults(handler=_evaluate)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``bgmfit`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        args.handler(args)
    except BgmfitError as exc:
        print(f"bgmfit {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"bgmfit {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0
