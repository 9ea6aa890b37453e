"""The ``bgmfit`` command: one sub-command per pipeline stage.

Each stage sub-command reads its own ``params.yaml`` section; DVC calls them
(see ``dvc.yaml``), and so can you, from the repository root.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from pathlib import Path

from bgmfit import __version__
from bgmfit.config import DEFAULT_PARAMS, PackageParams, load_params
from bgmfit.errors import BgmfitError
from bgmfit.files import INDEX
from bgmfit.networks import BY_NAME
from bgmfit.tracking.runs import require_tracking_store, tracking_uri, without_password


def _stage(args: argparse.Namespace) -> None:
    # Imported here, so that `bgmfit --help` and the light commands never pay for torch or MLflow.
    module = importlib.import_module(f"bgmfit.stages.{args.command}")
    module.main(args.params)


def _registry(args: argparse.Namespace) -> None:
    require_tracking_store()
    from bgmfit.tracking import registry

    if args.action in ("promote", "rollback"):
        if args.action == "promote":
            if not args.name or not args.version:
                raise BgmfitError(
                    f"registry promote needs a model name ({' or '.join(BY_NAME)}) and a version"
                )
            old, new = registry.promote(args.name, args.version)
            moved = (f"from v{old} " if old else "") + f"to v{new}"
            moved += f" (`bgmfit registry rollback {args.name}` undoes it)"
        else:
            if not args.name:
                raise BgmfitError(f"registry rollback needs a model name: {' or '.join(BY_NAME)}")
            old, new = registry.rollback(args.name)
            moved = f"from v{old} back to v{new}"
        from bgmfit.stages.register import write_champions

        write_champions()
        print(
            f"{args.name}: @champion moved {moved}; models/champions.json updated. "
            "Rebuild the index and the bento with `dvc repro` before serving."
        )
        return
    rows = registry.list_versions()
    if not rows:
        print("no registered versions yet; run `dvc repro register`")
        return
    columns = list(rows[0])
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(row[c].ljust(widths[c]) for c in columns))


def _recommender(args: argparse.Namespace):
    require_tracking_store()
    from bgmfit.serving.recommender import Limits, from_registry

    return from_registry(args.index, Limits.from_params(load_params("package", PackageParams, args.params)))


def _read_upload(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise BgmfitError(f"{path}: cannot read ({exc.strerror})") from None


def _print_results(results: list[dict], as_json: bool) -> None:
    if as_json:
        print(json.dumps(results, indent=2))
        return
    ids = max([len("track_id")] + [len(r["track_id"]) for r in results])
    styles = max([len("style")] + [len(r["style"]) for r in results])
    print(
        f"{'rank':>4}  {'track_id':<{ids}}  {'style':<{styles}}  {'score':>7}  {'distance':>8}  {'from_s':>7}"
    )
    for rank, r in enumerate(results, 1):
        print(
            f"{rank:>4}  {r['track_id']:<{ids}}  {r['style']:<{styles}}  {r['score']:>7.4f}  "
            f"{r['distance']:>8.4f}  {r['offset_seconds']:>7.1f}"
        )


def _filters(args: argparse.Namespace):
    from bgmfit.serving.recommender import Filters

    return Filters(
        tuple(args.style),
        tuple(args.exclude_style),
        tuple(args.tag),
        tuple(args.exclude_tag),
        tuple(args.exclude_id),
        args.min_duration,
    )


def _add_top_k(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "-k", "--top-k", dest="k", type=int, default=10, help="how many tracks (default: %(default)s)"
    )


def _add_filters(sub: argparse.ArgumentParser) -> None:
    group = sub.add_argument_group("filters (applied before the top k are cut; each may repeat)")
    group.add_argument("--style", action="append", default=[], help="only tracks of this style (any given)")
    group.add_argument("--exclude-style", action="append", default=[], metavar="STYLE")
    group.add_argument("--tag", action="append", default=[], help="only tracks with this tag (all given)")
    group.add_argument("--exclude-tag", action="append", default=[], metavar="TAG")
    group.add_argument(
        "--exclude-id", action="append", default=[], metavar="ID", help="e.g. tracks already used"
    )
    group.add_argument(
        "--min-duration", type=float, default=0.0, metavar="SECONDS", help="at least this long"
    )


def _recommend(args: argparse.Namespace) -> None:
    recommender = _recommender(args)
    query = recommender.query_from_audio(_read_upload(args.file), str(args.file))
    results = recommender.recommend(query, args.method, args.k, _filters(args), args.min_fit)
    if not results and args.min_fit is not None and not args.json:
        print(f"no track fits above --min-fit {args.min_fit:g}", file=sys.stderr)
    _print_results(results, args.json)


def _match(args: argparse.Namespace) -> None:
    recommender = _recommender(args)
    query = recommender.query_from_audio(_read_upload(args.file), str(args.file))
    _print_results(recommender.match(query, args.track_ids), args.json)


def _similar(args: argparse.Namespace) -> None:
    recommender = _recommender(args)
    _print_results(recommender.similar(args.track_id, None, args.k, _filters(args)), args.json)


def _library(args: argparse.Namespace) -> None:
    from bgmfit.audio import probe_audio
    from bgmfit.config import IndexParams
    from bgmfit.errors import AudioDecodeError
    from bgmfit.index.library import Problem, scan_folder

    params = load_params("index", IndexParams, args.params)
    folder = args.dir or Path(params.library_dir)
    manifest = args.manifest or (Path(params.library_manifest) if params.library_manifest else None)
    try:
        scan = scan_folder(folder, manifest)
    except NotADirectoryError as exc:
        raise BgmfitError(str(exc)) from None
    tracks, refused = [], list(scan.problems)
    for track in scan.tracks:
        try:
            seconds, rate = probe_audio(folder / track.path)
        except AudioDecodeError as exc:
            refused.append(Problem(str(folder / track.path), exc.reason))
            continue
        tracks.append(
            {"track_id": track.track_id, "seconds": round(seconds, 2), "sample_rate": rate}
            | {"title": track.title, "artist": track.artist, "style": track.style, "tags": list(track.tags)}
        )
    if args.json:
        print(
            json.dumps(
                {
                    "folder": str(folder),
                    "manifest": str(scan.manifest) if scan.manifest else None,
                    "tracks": tracks,
                    "refused": [vars(p) for p in refused],
                },
                indent=2,
            )
        )
        return
    hours = sum(t["seconds"] for t in tracks) / 3600
    described = sum(bool(t["title"] or t["tags"] or t["style"]) for t in tracks)
    print(
        f"{folder}: {len(tracks)} track(s), {hours:.2f} h of audio; {len(refused)} file(s) or line(s) refused"
    )
    print(f"manifest: {scan.manifest or 'none'}; {described} track(s) with metadata")
    if args.list:
        for t in tracks:
            print(f"  {t['track_id']:<48} {t['seconds']:>9.1f} s  {t['title']}  {';'.join(t['tags'])}")
    for problem in refused:
        print(f"  refused {problem}")
    if not args.list and tracks:
        print("(--list prints every track)")


def _timeline(args: argparse.Namespace) -> None:
    from bgmfit.config import TimelineParams
    from bgmfit.stages import worker_count
    from bgmfit.timeline import score_file
    from bgmfit.timeline.job import describe

    params = load_params("timeline", TimelineParams, args.params)
    if not args.file.is_file():
        raise BgmfitError(f"{args.file}: no such file")
    recommender = _recommender(args)
    timeline = score_file(
        args.file,
        recommender.catalogue,
        recommender.match_model,
        recommender.versions,
        params,
        args.out,
        args.preview,
        worker_count(params.workers),
    )
    if args.json:
        print(json.dumps(timeline, indent=2))
        return
    print(describe(timeline))
    print(f"timeline: {args.out}" + (f"; preview mix: {args.preview}" if args.preview else ""))


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
    ).set_defaults(handler=_stage)
    commands.add_parser(
        "features",
        help="compute fused features and MFCC frames into data/features/",
        description="Decode every track of data/raw/manifest.csv, compute the fused feature matrix and the "
        "MFCC-frame feature, normalise with training-split statistics, and write data/features/.",
    ).set_defaults(handler=_stage)
    commands.add_parser(
        "train_match",
        help="train method A, the pair-fit network, into models/match/",
        description="Train the two-tower pair-fit network on graded foreground/BGM pairs with Lightning, "
        "tracked in the MLflow experiment train_match ($MLFLOW_TRACKING_URI, default sqlite:///mlflow.db).",
    ).set_defaults(handler=_stage)
    commands.add_parser(
        "train_triplet",
        help="train method B, the triplet style network, into models/triplet/",
        description="Train the feed-forward triplet network with in-batch mining by style, tracked in the "
        "MLflow experiment train_triplet.",
    ).set_defaults(handler=_stage)
    commands.add_parser(
        "evaluate",
        help="score both networks and their baselines on held-out works",
        description="Evaluate method A and method B on the test split beside two baselines (untrained cosine "
        "and random); write metrics/match.json, metrics/triplet.json and plots/, and log them to the "
        "models' MLflow runs.",
    ).set_defaults(handler=_stage)
    commands.add_parser(
        "register",
        help="register both models in MLflow and promote those that pass the gate to @champion",
        description="Register each training run's model as a new version of bgmfit-match / bgmfit-triplet "
        "(once per run, and never twice for the same weights), score it and the current champion on the "
        "test split, and move @champion only if it passes register.*_threshold and beats the champion by "
        "register.margin; otherwise @challenger.",
    ).set_defaults(handler=_stage)
    commands.add_parser(
        "index",
        help="embed the served library with the champion models into models/index/",
        description="Embed every track of the library (index.library: the demo corpus's BGM and music, or "
        "every audio file of index.library_dir) with the versions in models/champions.json, without "
        "training; exact search below index.ann_threshold windows, FAISS HNSW above; stamped with "
        "versions and hash.",
    ).set_defaults(handler=_stage)
    commands.add_parser(
        "package",
        help="import the champions into the BentoML store and build the bento",
        description="Import the index's model versions into the BentoML model store, write "
        "models/serving.json, run bentoml build from bentofile.yaml and record the tag in models/bento.json.",
    ).set_defaults(handler=_stage)
    library = commands.add_parser(
        "library",
        help="what a library folder holds and what would be refused, without building anything",
        description="List the audio files of a library folder (index.library_dir by default) as the index "
        "stage would take them, with their duration from each file's header and their manifest metadata, "
        "and every file or manifest line that would be refused, and why. Nothing is decoded in full, "
        "embedded or written.",
    )
    library.add_argument("dir", nargs="?", type=Path, help="the folder (default: index.library_dir)")
    library.add_argument("--manifest", type=Path, help="its manifest CSV (default: DIR/library.csv if there)")
    library.add_argument("--list", action="store_true", help="print every track, not only a summary")
    library.add_argument("--json", action="store_true", help="print JSON instead")
    library.set_defaults(handler=_library)
    registry = commands.add_parser(
        "registry",
        help="list registered versions and aliases, promote a version by hand, or roll a champion back",
        description="Without arguments, list every version of bgmfit-match and bgmfit-triplet with its "
        "aliases and gate score. 'promote NAME VERSION' makes that version NAME's @champion whatever its "
        "gate said (a challenger you prefer). 'rollback NAME' moves NAME's @champion back to the version "
        "it replaced. Both rewrite models/champions.json; run `dvc repro` to rebuild the index and bento.",
    )
    registry.add_argument("action", nargs="?", choices=["list", "promote", "rollback"], default="list")
    registry.add_argument("name", nargs="?", help=f"{' or '.join(BY_NAME)} (for promote and rollback)")
    registry.add_argument("version", nargs="?", help="the version number to promote, as listed")
    registry.set_defaults(handler=_registry)

    def local(name: str, help_text: str, description: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=description)
        sub.add_argument("--index", type=Path, default=INDEX, help="index folder (default: %(default)s)")
        sub.add_argument("--json", action="store_true", help="print JSON instead of a table")
        return sub

    recommend = local(
        "recommend",
        "rank the catalogue's BGM for an audio file (no server needed)",
        "Rank the catalogue for FILE with the registry's champions: method A's fit (--method match, the "
        "default) or method B's style distance (--method triplet).",
    )
    recommend.add_argument("file", type=Path, help="audio file: wav, flac, ogg, opus, mp3 or m4a")
    _add_top_k(recommend)
    recommend.add_argument("--method", choices=["match", "triplet"], default="match")
    recommend.add_argument(
        "--min-fit",
        type=float,
        metavar="FIT",
        help="method A: only tracks whose calibrated fit is at least FIT",
    )
    _add_filters(recommend)
    recommend.set_defaults(handler=_recommend)
    match = local(
        "match",
        "graded fit of an audio file with named catalogue tracks",
        "Method A's predicted fit (0..1) of FILE with each catalogue track ID.",
    )
    match.add_argument("file", type=Path, help="audio file: wav, flac, ogg, opus, mp3 or m4a")
    match.add_argument(
        "track_ids", nargs="+", metavar="ID", help="catalogue track ids (see models/index/tracks.csv)"
    )
    match.set_defaults(handler=_match)
    similar = local(
        "similar",
        "catalogue music most like a catalogue track",
        "The catalogue tracks nearest to ID by method B's cosine distance, nearest first.",
    )
    similar.add_argument("track_id", metavar="ID", help="a catalogue track id (see models/index/tracks.csv)")
    _add_top_k(similar)
    _add_filters(similar)
    similar.set_defaults(handler=_similar)
    timeline = local(
        "timeline",
        "score a whole episode: scenes, one BGM (or none) each, and a preview mix",
        "Split EPISODE into scenes (speech, music, silence; novelty and pauses), fit every library BGM "
        "to each scene with method A, and choose one track or none per scene by dynamic programming "
        "(params.yaml: timeline). Writes the timeline JSON and, with --preview, the mix: each scene's "
        "BGM from its offset, crossfaded, ducked under the voice, at -16 LUFS.",
    )
    timeline.add_argument(
        "file", type=Path, metavar="EPISODE", help="audio: wav, flac, ogg, opus, mp3 or m4a"
    )
    timeline.add_argument(
        "--out", type=Path, default=Path("timeline.json"), help="the timeline JSON (default: %(default)s)"
    )
    timeline.add_argument("--preview", type=Path, help="also write the preview mix here (.mp3 or .ogg)")
    timeline.set_defaults(handler=_timeline)
    return parser


def _tracking_store_failure(exc: Exception) -> str | None:
    """What went wrong, in one line, when ``exc`` is the tracking store failing (an MLflow server
    that is down, a PostgreSQL server that refuses the connection or the login); else ``None``.

    The classes are looked up, not imported: importing MLflow would add 1.7 s to every command,
    ``--help`` included, and an exception of theirs means they were imported already.
    """
    mlflow_errors, database_errors = sys.modules.get("mlflow.exceptions"), sys.modules.get("sqlalchemy.exc")
    if mlflow_errors is not None and isinstance(exc, mlflow_errors.MlflowException):
        return " ".join(str(exc).split())
    if database_errors is not None and isinstance(exc, database_errors.OperationalError):
        return " ".join(str(exc.orig).split())  # the driver's own words, without the SQL statement
    return None


def _end_with_dvc() -> None:
    """SIGTERM ends a command as Ctrl-C does (its MLflow run closes); under `dvc repro`, so does dvc's end.

    A ``dvc repro`` killed with SIGKILL cannot stop the stage it started, which would
    train on, orphaned. Linux's parent-death signal asks the kernel to send SIGTERM to
    the stage instead (dvc sets ``DVC_STAGE`` for the commands it runs).

    Unlike Ctrl-C, SIGTERM reaches this process alone, not its worker processes; they are
    killed first. Otherwise a process pool's shutdown would wait for each worker to finish
    the files it holds (half a minute and more in ``features``), and the command would
    outlive its signal.
    """
    import multiprocessing
    import signal

    def interrupt(signum, frame):
        for worker in multiprocessing.active_children():
            worker.kill()
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    if "DVC_STAGE" not in os.environ or not sys.platform.startswith("linux"):
        return
    import ctypes

    parent = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # dvc died before the request was made
        raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``bgmfit`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        _end_with_dvc()
        args.handler(args)
    except BgmfitError as exc:
        print(f"bgmfit {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        problem = _tracking_store_failure(exc)
        if problem is None:
            raise
        message = f"MLflow tracking store {tracking_uri()}: {problem}"
        print(f"bgmfit {args.command}: error: {without_password(message)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"bgmfit {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0
