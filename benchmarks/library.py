"""What adding files to a library costs: a full index build against a rebuild after adding 1 %.

Builds a library folder of ``--files`` distinct excerpts (``--seconds`` long, FLAC) cut from
real recordings (Debian's singularity-music by default), indexes it with the champions in a
fresh feature cache (the full build), adds ``--added`` more excerpts and indexes again (the
rebuild: only the new files are analysed). Each build is timed ``--repeats`` times (the full
build with the cache emptied each time, the rebuild with the added files' cache entries
removed each time); the medians and their ratio are printed.

Usage (after `make run`, which registers the champions):

    .venv/bin/python -m benchmarks.library --files 1000 --added 10 --repeats 3
"""

from __future__ import annotations

import argparse
import glob
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from benchmarks.machine import describe
from bgmfit.audio import load_audio
from bgmfit.config import FeaturesParams, IndexParams, load_params
from bgmfit.features.extract import cache_key, params_digest

RATE = 22050


def write_excerpts(
    sources: list[str], folder: Path, count: int, seconds: float, first: int = 0
) -> list[Path]:
    """``count`` distinct excerpts, cut round-robin from ``sources`` at staggered offsets."""
    audio = [load_audio(s, RATE) for s in sources]
    length = int(seconds * RATE)
    out = []
    for i in range(first, first + count):
        y = audio[i % len(audio)]
        start = (i // len(audio) * RATE // 2) % max(1, y.size - length)
        path = folder / f"excerpt-{i:05d}.flac"
        sf.write(path, y[start : start + length], RATE, subtype="PCM_16")
        out.append(path)
    return out


def timed_build(index_params: IndexParams, features: FeaturesParams, out: Path) -> float:
    from bgmfit.stages import index

    start = time.perf_counter()
    index.run(index_params, features, out=out)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--added", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each excerpt")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sources", default="/usr/share/games/singularity/music/*.ogg")
    args = parser.parse_args()
    sources = sorted(glob.glob(args.sources))
    if not sources:
        sys.exit(f"no recordings match {args.sources}; install singularity-music or pass --sources")
    work = Path(tempfile.mkdtemp(prefix="bgmfit-library-bench-"))
    folder, cache = work / "library", work / "cache"
    folder.mkdir()
    write_excerpts(sources, folder, args.files, args.seconds)
    features = load_params("features", FeaturesParams, Path("params.yaml")).model_copy(
        update={"cache_dir": str(cache)}
    )
    index_params = load_params("index", IndexParams, Path("params.yaml")).model_copy(
        update={"library": "dir", "library_dir": str(folder), "library_manifest": None}
    )
    full = []
    for _ in range(args.repeats):
        shutil.rmtree(cache, ignore_errors=True)
        full.append(timed_build(index_params, features, work / "index"))
    added = write_excerpts(sources, folder, args.added, args.seconds, first=args.files)
    digest = params_digest(features)
    rebuild = []
    for _ in range(args.repeats):
        for path in added:  # forget the added files, so that each repeat analyses them anew
            key = cache_key(path.read_bytes(), digest)
            (cache / key[:2] / f"{key}.npz").unlink(missing_ok=True)
        rebuild.append(timed_build(index_params, features, work / "index"))
    print(describe())
    print(
        f"library of {args.files} excerpts of {args.seconds:g} s, then {args.added} added; "
        f"{args.repeats} runs each"
    )
    print(f"full build    median {statistics.median(full):7.1f} s   runs {np.round(full, 1).tolist()}")
    print(f"after adding  median {statistics.median(rebuild):7.1f} s   runs {np.round(rebuild, 1).tolist()}")
    print(f"ratio rebuild / full: {statistics.median(rebuild) / statistics.median(full):.3f}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
