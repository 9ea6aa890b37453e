"""Do a running service's answers survive ordinary changes to real recordings?

Sends 30 s excerpts of OGG recordings that no one here wrote (Debian's ``singularity-music``
by default) to a running ``bentoml serve``, as they are and under each change of
``bgmfit.evaluation.invariance.CHANGES`` (+6 dB, -6 dB, MP3 at 128 kbps, 1 s later), and
prints, per method, how many keep their top-1 and the mean top-10 overlap::

    bentoml serve bgmfit.serving.service:BGMFit --port 3000 &
    python scripts/real_invariance.py http://127.0.0.1:3000
"""

from __future__ import annotations

import argparse
import glob
import io
import sys

import httpx
import numpy as np
import soundfile as sf

from bgmfit.audio import load_audio
from bgmfit.evaluation.invariance import CHANGES

SAMPLE_RATE = 44100


def excerpts(pattern: str, seconds: float, limit: int) -> dict[str, np.ndarray]:
    """The middle ``seconds`` of each file matching ``pattern`` (at most ``limit``), mono at 44.1 kHz."""
    out = {}
    for path in sorted(glob.glob(pattern))[:limit]:
        y = load_audio(path, SAMPLE_RATE)
        n = int(seconds * SAMPLE_RATE)
        start = max(0, (y.size - n) // 2)
        out[path.rsplit("/", 1)[-1]] = y[start : start + n]
    return out


def _wav(y: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(y, -1, 1), SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def ranking(base: str, audio: bytes, method: str, top_k: int = 10) -> list[str]:
    """The ids the service ranks first for ``audio`` by ``method``."""
    response = httpx.post(
        f"{base}/recommend",
        files={"audio": ("query.wav", audio, "audio/wav")},
        data={"top_k": str(top_k), "method": method},
        timeout=120,
    )
    response.raise_for_status()
    return [r["track_id"] for r in response.json()]


def measure(base: str, clips: dict[str, np.ndarray]) -> dict[str, dict[str, dict[str, float]]]:
    """Per method and change: ``held`` (top-1 unchanged, share), ``overlap`` (mean top-10 overlap)."""
    table: dict[str, dict[str, dict[str, float]]] = {}
    for method in ("match", "triplet"):
        original = {name: ranking(base, _wav(y), method) for name, y in clips.items()}
        table[method] = {}
        for change, apply in CHANGES.items():
            changed = {name: ranking(base, _wav(apply(y, SAMPLE_RATE)), method) for name, y in clips.items()}
            held = np.mean([original[n][0] == changed[n][0] for n in clips])
            overlap = np.mean([len(set(original[n]) & set(changed[n])) / len(original[n]) for n in clips])
            table[method][change] = {"held": float(held), "overlap": float(overlap)}
    return table


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("base", help="the service, e.g. http://127.0.0.1:3000")
    parser.add_argument(
        "--files", default="/usr/share/games/singularity/music/*.ogg", help="a glob of recordings"
    )
    parser.add_argument("--seconds", type=float, default=30.0, help="excerpt length (default 30)")
    parser.add_argument("--limit", type=int, default=32, help="at most this many files (default 32)")
    args = parser.parse_args()
    clips = excerpts(args.files, args.seconds, args.limit)
    if not clips:
        sys.exit(f"no recordings match {args.files}; apt-get install singularity-music, or pass --files")
    table = measure(args.base, clips)
    n = len(clips)
    print(f"{n} real recordings, {args.seconds:g} s excerpts, through {args.base}")
    print(
        "| change | method A: top-1 unchanged | method B: top-1 unchanged | A: top-10 overlap "
        "| B: top-10 overlap |"
    )
    print("|---|---|---|---|---|")
    for change in CHANGES:
        a, b = table["match"][change], table["triplet"][change]
        print(
            f"| {change} | {round(a['held'] * n)} of {n} | {round(b['held'] * n)} of {n} | "
            f"{a['overlap']:.2f} | {b['overlap']:.2f} |"
        )


if __name__ == "__main__":
    main()
