"""``fetch`` stage: the raw audio and ``data/raw/manifest.csv``.

``fetch.source: demo`` renders the built-in corpus from music21's scores;
``fetch.source: dir`` imports a user's folder and manifest.
"""

from __future__ import annotations

import csv
import sys
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from bgmfit.config import FetchParams, load_params
from bgmfit.corpus.build import Rejection, render_corpus, select_works
from bgmfit.data.folder import import_folder
from bgmfit.data.manifest import FOREGROUND_ROLES, ManifestRow, write_manifest
from bgmfit.data.splits import assign_splits
from bgmfit.files import METRICS, RAW, fresh_dir, write_json
from bgmfit.stages import worker_count


def main(params_path: Path) -> None:
    """``bgmfit fetch``: reads ``params.yaml: fetch``."""
    run(load_params("fetch", FetchParams, params_path))


def run(params: FetchParams, out_dir: Path = RAW, metrics_path: Path = METRICS / "fetch.json") -> dict:
    """Run the stage; return the summary also written to ``metrics_path``."""
    fresh_dir(out_dir)
    if params.source == "demo":
        rows, rejected = _build_demo(params, out_dir)
        skipped = []
    else:
        rows, problems = import_folder(params, out_dir)
        rejected = []
        skipped = [
            {"line": p.line, "track_id": p.track_id, "path": p.path, "reason": p.reason} for p in problems
        ]
    write_manifest(rows, out_dir / "manifest.csv")
    summary = summarise(rows) | {
        "rejected_renders": len(rejected),
        "skipped_rows": len(skipped),
        "skipped": skipped,
        "bytes": sum((out_dir / r.path).stat().st_size for r in rows),
    }
    write_json(metrics_path, summary)
    print(
        f"fetch: {summary['tracks']} tracks ({summary['music_clips']} music, "
        f"{summary['narration_clips']} narration) "
        f"in {len(summary['clips_per_style'])} styles, {summary['pairs']} foreground/BGM pairs from "
        f"{summary['pair_works']} works, {summary['bytes'] / 1e6:.0f} MB; "
        f"{len(rejected)} render(s) rejected, {len(skipped)} row(s) skipped",
        file=sys.stderr,
    )
    return summary


def _build_demo(params: FetchParams, out_dir: Path) -> tuple[list[ManifestRow], list[Rejection]]:
    works = select_works(params)
    workers = worker_count(params.workers)
    clips, rejected = [], []
    progress = tqdm(
        render_corpus(works, params, out_dir, workers),
        total=len(works),
        desc="fetch: rendering works",
        unit="work",
        file=sys.stderr,
    )
    for work_clips, work_rejections in progress:
        clips.extend(work_clips)
        rejected.extend(work_rejections)
    with (out_dir / "rejected.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["work_id", "track_id", "reason"])
        writer.writerows((r.work_id, r.track_id, r.reason) for r in rejected)
    if rejected:
        reasons = Counter(r.reason.split(":")[0] for r in rejected)
        print(
            f"fetch: rejected {len(rejected)} render(s) ({dict(reasons)}); see {out_dir / 'rejected.csv'}",
            file=sys.stderr,
        )
    splits = assign_splits(
        {c.work_id: c.style for c in clips}, params.val_fraction, params.test_fraction, params.seed
    )
    rows = [
        ManifestRow(
            track_id=c.track_id,
            path=c.path,
            role=c.role,
            style=c.style,
            work_id=c.work_id,
            split=splits[c.work_id],
            duration=c.duration,
            sample_rate=params.sample_rate,
            label="",
            source=c.source,
            licence=c.licence,
            instrument=c.instrument,
        )
        for c in clips
    ]
    return rows, rejected


def summarise(rows: list[ManifestRow]) -> dict:
    """Corpus counts: per style, role and split, and the method-A pairs by work."""
    roles_by_work: dict[str, set[str]] = {}
    for r in rows:
        roles_by_work.setdefault(r.work_id, set()).add(r.role)
    pair_works = [w for w, roles in roles_by_work.items() if "bgm" in roles and roles & set(FOREGROUND_ROLES)]
    pairs = sum(1 for r in rows if r.role in FOREGROUND_ROLES and "bgm" in roles_by_work[r.work_id])
    return {
        "tracks": len(rows),
        "works": len(roles_by_work),
        "music_clips": sum(1 for r in rows if r.role != "narration"),
        "narration_clips": sum(1 for r in rows if r.role == "narration"),
        "pairs": pairs,
        "pair_works": len(pair_works),
        "clips_per_style": dict(sorted(Counter(r.style for r in rows if r.role != "narration").items())),
        "tracks_per_role": dict(sorted(Counter(r.role for r in rows).items())),
        "works_per_split": dict(sorted(Counter({r.work_id: r.split for r in rows}.values()).items())),
        "audio_seconds": round(sum(r.duration for r in rows), 1),
    }
