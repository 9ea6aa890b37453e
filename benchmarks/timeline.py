"""A whole episode scored as a timeline, against the naive path of one ``/recommend`` per 10 s window.

The episode is real speech and music (Warzone 2100's voiced tutorial and Endgame:
Singularity's soundtrack, Debian packages; see ``tests/real_episode.py``), built to
``--minutes`` (60 by default) with narration scenes of 60-120 s and music between them.
Everything runs in this machine's processes, with the served index and the registry's
champions, as ``bgmfit timeline`` runs:

- **timeline**: decode the file (into a temporary file, read back a block at a time), analyse
  every 10 s window (``timeline.workers`` processes), speech activity, scenes, method A's fit
  of every library BGM per scene, the plan;
- **preview**: the ducked mix at -16 LUFS, encoded as MP3;
- **naive**: the same decoded episode, cut into 10 s windows, each one analysed and ranked by
  ``Recommender.recommend`` (what one ``/recommend`` request per window does, without HTTP).

Each is timed ``--repeats`` times, each run in a fresh process so that its peak resident memory
is its own; the peak is reported against the process's memory just before the episode is read.
``--also-minutes 180`` adds one run of a 3-hour episode, for memory.

Usage (after `make run`):

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.timeline --minutes 60 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.machine import describe


def _status_mib(key: str) -> float:
    """A ``/proc/self/status`` figure of this process, MiB: ``VmRSS`` now, or its peak ``VmHWM``.

    The peak is not getrusage's ru_maxrss: Linux keeps that across exec, so a run started by this
    script read the parent's size at fork (the 3-hour episode it had just built: 2.2 GiB).
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(mode: str, episode: Path) -> dict:
    """One run of ``mode`` (timeline | preview | naive) on ``episode``, in this process."""
    import numpy as np

    from bgmfit.audio import load_audio
    from bgmfit.config import PackageParams, TimelineParams, load_params
    from bgmfit.features.windows import analyse_windows
    from bgmfit.files import INDEX
    from bgmfit.serving.recommender import Limits, Query, from_registry
    from bgmfit.stages import worker_count
    from bgmfit.timeline.job import score_file

    params = load_params("timeline", TimelineParams)
    recommender = from_registry(INDEX, Limits.from_params(load_params("package", PackageParams)))
    catalogue, rate = recommender.catalogue, recommender.catalogue.features.sample_rate
    before = _status_mib("VmRSS")
    start = time.perf_counter()
    if mode == "naive":
        y = load_audio(episode, rate)
        length = int(catalogue.features.clip_seconds * rate)
        norm = catalogue.norm_stats
        for first in range(0, y.size, length):
            windows = analyse_windows(y[first : first + length], catalogue.features)
            query = Query(norm.normalise_fused(windows.fused), norm.normalise_frames(windows.mfcc_frames))
            recommender.recommend(query, "match", 10)
        scenes, audio_seconds = None, y.size / rate
    else:
        # What `bgmfit timeline` runs: decoded into a temporary file, read a block at a time.
        with tempfile.TemporaryDirectory() as tmp:
            preview = Path(tmp) / "mix.mp3" if mode == "preview" else None
            timeline = score_file(
                episode,
                catalogue,
                recommender.match_model,
                recommender.versions,
                params,
                Path(tmp) / "timeline.json",
                preview,
                worker_count(params.workers),
            )
        scenes, audio_seconds = len(timeline["scenes"]), timeline["duration_seconds"]
    seconds = time.perf_counter() - start
    return {
        "mode": mode,
        "seconds": seconds,
        "audio_seconds": audio_seconds,
        "scenes": scenes,
        "rss_before_mib": before,
        "peak_above_mib": _status_mib("VmHWM") - before,
        "windows": int(np.ceil(audio_seconds / catalogue.features.clip_seconds)),
    }


def _run(mode: str, episode: Path) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.timeline", "--one", mode, str(episode)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        sys.exit(f"{mode} on {episode}: failed\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _episode(folder: Path, minutes: float) -> Path:
    from tests.real_episode import build_episode

    return build_episode(folder, minutes).path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=60.0, help="the episode's length")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each mode; the median is printed")
    parser.add_argument(
        "--also-minutes", type=float, nargs="*", default=[180.0], help="one more run each, for memory"
    )
    parser.add_argument("--one", nargs=2, metavar=("MODE", "EPISODE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.one[0], Path(args.one[1]))))
        return
    print(f"machine: {describe()}")
    with tempfile.TemporaryDirectory() as tmp:
        episode = _episode(Path(tmp), args.minutes)
        print(
            f"episode: {args.minutes:g} min of real speech and music; "
            f"median of {args.repeats} runs, a fresh process each"
        )
        results = {}
        for mode in ("timeline", "preview", "naive"):
            runs = [_run(mode, episode) for _ in range(args.repeats)]
            results[mode] = runs
            seconds = [r["seconds"] for r in runs]
            peak = max(r["peak_above_mib"] for r in runs)
            extra = (
                f", {runs[0]['scenes']} scenes" if runs[0]["scenes"] else f", {runs[0]['windows']} windows"
            )
            print(
                f"  {mode:<9} {statistics.median(seconds):6.1f} s  "
                f"(runs {', '.join(f'{s:.1f}' for s in seconds)})"
                f"{extra}; peak memory {peak:,.0f} MiB above the {runs[0]['rss_before_mib']:,.0f} MiB before"
            )
        ratio = statistics.median(r["seconds"] for r in results["naive"]) / statistics.median(
            r["seconds"] for r in results["timeline"]
        )
        print(f"  timeline against naive: {ratio:.2f}x as fast")
        for minutes in args.also_minutes:
            longer = _episode(Path(tmp) / f"m{minutes:g}", minutes)
            run = _run("timeline", longer)
            print(
                f"  {minutes:g} min, timeline: {run['seconds']:.1f} s, peak memory "
                f"{run['peak_above_mib']:,.0f} MiB above the {run['rss_before_mib']:,.0f} MiB before"
            )


if __name__ == "__main__":
    main()
