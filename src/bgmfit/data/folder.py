"""Bring a user's own catalogue in: a folder of audio plus a manifest CSV."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from bgmfit.config import FetchParams
from bgmfit.data.manifest import ManifestRow, RowProblem, report_problems, validate_user_manifest
from bgmfit.data.splits import assign_splits
from bgmfit.errors import ManifestError


def import_folder(params: FetchParams, out_dir: Path) -> tuple[list[ManifestRow], list[RowProblem]]:
    """Validate a folder's manifest and copy its good rows' audio under ``out_dir/audio``.

    Every bad row is listed with its line number. With ``on_bad_input: fail`` any
    bad row stops the import (after all are listed); with ``skip`` the bad rows
    are left out and returned, so the caller can count and report them.

    Splits given in the manifest are kept; empty ones are assigned by work with
    the seeded, style-stratified rule of :func:`bgmfit.data.splits.assign_splits`.

    Raises
    ------
    ManifestError
        If the manifest is missing or malformed, a work is given two splits, or a
        row is bad and ``on_bad_input`` is ``fail``.
    """
    audio_dir = Path(params.dir or "")
    if not audio_dir.is_dir():
        raise ManifestError(f"fetch.dir: {audio_dir} is not a folder")
    manifest = Path(params.manifest) if params.manifest else audio_dir / "manifest.csv"
    good, problems = validate_user_manifest(manifest, audio_dir)
    if problems and params.on_bad_input == "fail":
        raise ManifestError(
            f"{len(problems)} bad row(s) in {manifest} (set fetch.on_bad_input: skip to leave them out):\n"
            + report_problems(problems, manifest)
        )
    if problems:
        print(
            f"fetch: skipping {len(problems)} bad row(s) of {manifest}:\n"
            + report_problems(problems, manifest),
            file=sys.stderr,
        )
    if not good:
        raise ManifestError(f"{manifest}: no usable rows")

    given: dict[str, tuple[str, str]] = {}
    for row in good:
        if row.get("split"):
            seen = given.setdefault(row["work_id"], (row["split"], row["line"]))
            if seen[0] != row["split"]:
                raise ManifestError(
                    f"{manifest}:{row['line']}: work {row['work_id']!r} is in split {row['split']!r} here "
                    f"but {seen[0]!r} on line {seen[1]}; a work's tracks must share one split"
                )
    unassigned = {r["work_id"]: r["style"] for r in good if r["work_id"] not in given}
    splits = {w: s for w, (s, _) in given.items()} | assign_splits(
        unassigned, params.val_fraction, params.test_fraction, params.seed
    )

    rows = []
    for row in good:
        source_path = audio_dir / row["path"]
        rel = Path("audio") / f"{row['track_id']}{source_path.suffix.lower()}"
        _link_or_copy(source_path, out_dir / rel)
        rows.append(
            ManifestRow(
                track_id=row["track_id"],
                path=rel.as_posix(),
                role=row["role"],
                style=row["style"],
                work_id=row["work_id"],
                split=splits[row["work_id"]],
                duration=float(row["duration"]),
                sample_rate=int(row["sample_rate"]),
                label=row.get("label", ""),
                source=row.get("source") or f"folder:{row['path']}",
                licence=row.get("licence", ""),
                instrument=row.get("instrument", ""),
            )
        )
    return rows, problems


def _link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link when source and destination share a file system, else copy."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)
