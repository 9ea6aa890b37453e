"""The manifest: one CSV row per audio track, shared by every stage.

Columns
-------
track_id
    Unique id (letters, digits, ``.``, ``_``, ``-``).
path
    Audio file, relative to the manifest's folder.
role
    ``foreground`` (a lead line to find BGM for), ``narration`` (spoken
    foreground), ``bgm`` (accompaniment that fits the foregrounds of its work) or
    ``music`` (a catalogue track with no foreground; method B only).
style
    Style label, used for method B's triplets and the per-style metrics.
work_id
    The work a track belongs to. Foregrounds and BGM of one work are pairs, and
    splits are made by work.
split
    ``train``, ``val`` or ``test``; assigned by work when left empty.
duration, sample_rate
    Seconds and Hz, read from the file.
label
    Optional fit grade in [0, 1] of a foreground or narration with the BGM of its
    own work (default 1.0).
source, licence
    Where the track came from and under what terms.
"""

from __future__ import annotations

import csv
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from bgmfit.audio import probe_audio
from bgmfit.data.splits import SPLITS
from bgmfit.errors import AudioDecodeError, ManifestError

ROLES = ("foreground", "narration", "bgm", "music")
FOREGROUND_ROLES = ("foreground", "narration")
REQUIRED_COLUMNS = ("track_id", "path", "role", "style", "work_id")
_ID = re.compile(r"^[A-Za-z0-9._-]+$")


@dataclass(frozen=True)
class ManifestRow:
    """One track of the manifest (see the module docstring for the columns)."""

    track_id: str
    path: str
    role: str
    style: str
    work_id: str
    split: str
    duration: float
    sample_rate: int
    label: str
    source: str
    licence: str
    instrument: str = ""


MANIFEST_COLUMNS = tuple(f.name for f in fields(ManifestRow))


@dataclass(frozen=True)
class RowProblem:
    """A manifest row that cannot be used, and why."""

    line: int
    track_id: str
    path: str
    reason: str

    def describe(self, manifest: Path | str) -> str:
        """One line naming the manifest, its line number, the file and the reason."""
        where = f"{manifest}:{self.line}"
        what = f" ({self.path})" if self.path else ""
        return f"{where}: {self.reason}{what}"


def write_manifest(rows: list[ManifestRow], path: Path) -> None:
    """Write rows as CSV with a header, sorted by ``track_id``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=MANIFEST_COLUMNS)
        writer.writeheader()
        for row in sorted(rows, key=lambda r: r.track_id):
            writer.writerow(asdict(row))


def read_manifest(path: Path) -> list[ManifestRow]:
    """Read a manifest written by :func:`write_manifest` (the ``fetch`` stage's output)."""
    if not path.is_file():
        raise ManifestError(f"{path}: not found; run the fetch stage first (dvc repro fetch)")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in MANIFEST_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ManifestError(f"{path}: missing column(s) {', '.join(missing)}")
        return [
            ManifestRow(
                **{
                    **{c: r[c] for c in MANIFEST_COLUMNS},
                    "duration": float(r["duration"]),
                    "sample_rate": int(r["sample_rate"]),
                }
            )
            for r in reader
        ]


def validate_user_manifest(manifest: Path, audio_dir: Path) -> tuple[list[dict[str, str]], list[RowProblem]]:
    """Check a user's manifest CSV row by row.

    Every problem is collected, not just the first: a missing or undecodable
    file, an unknown role, a bad label or split, an empty or malformed field, or
    a duplicate ``track_id``. Each is reported with its line number (the header
    is line 1).

    Parameters
    ----------
    manifest:
        The CSV file, with at least the columns in :data:`REQUIRED_COLUMNS`.
    audio_dir:
        Folder that the ``path`` column is relative to.

    Returns
    -------
    tuple
        ``(good rows with duration and sample_rate filled in, problems)``.

    Raises
    ------
    ManifestError
        If the file is missing or lacks a required column (nothing can be checked).
    """
    if not manifest.is_file():
        raise ManifestError(f"{manifest}: manifest not found")
    with manifest.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise ManifestError(
                f"{manifest}:1: missing required column(s) {', '.join(missing)}; "
                f"the header must include {', '.join(REQUIRED_COLUMNS)}"
            )
        reader.fieldnames = header
        good: list[dict[str, str]] = []
        problems: list[RowProblem] = []
        first_seen: dict[str, int] = {}
        for raw in reader:
            line = reader.line_num
            row = {k: (v or "").strip() for k, v in raw.items() if k is not None}
            if None in raw:
                problems.append(
                    RowProblem(
                        line,
                        row.get("track_id", ""),
                        row.get("path", ""),
                        f"{len(raw[None])} more field(s) than the header has",
                    )
                )
                continue
            reason = _row_problem(row, first_seen, line, audio_dir)
            if reason:
                problems.append(RowProblem(line, row.get("track_id", ""), row.get("path", ""), reason))
            else:
                first_seen[row["track_id"]] = line
                good.append(row | {"line": str(line)})
    return good, problems


def _row_problem(row: dict[str, str], first_seen: dict[str, int], line: int, audio_dir: Path) -> str | None:
    for column in REQUIRED_COLUMNS:
        if not row.get(column):
            return f"empty {column}"
    track_id = row["track_id"]
    if not _ID.match(track_id):
        return f"track_id {track_id!r} may hold only letters, digits, '.', '_' and '-'"
    if track_id in first_seen:
        return f"duplicate track_id {track_id!r} (first on line {first_seen[track_id]})"
    if row["role"] not in ROLES:
        return f"unknown role {row['role']!r} (expected one of {', '.join(ROLES)})"
    split = row.get("split", "")
    if split and split not in SPLITS:
        return f"unknown split {split!r} (expected one of {', '.join(SPLITS)}, or empty)"
    label = row.get("label", "")
    if label:
        if row["role"] not in FOREGROUND_ROLES:
            return f"label is only for foreground or narration rows, not {row['role']!r}"
        try:
            grade = float(label)
        except ValueError:
            return f"bad label {label!r}: expected a fit grade between 0 and 1"
        if not 0.0 <= grade <= 1.0:
            return f"bad label {label!r}: expected a fit grade between 0 and 1"
    path = audio_dir / row["path"]
    try:
        duration, sample_rate = probe_audio(path)
    except AudioDecodeError as exc:
        return exc.reason
    row["duration"] = f"{duration:.3f}"
    row["sample_rate"] = str(sample_rate)
    return None


def report_problems(problems: list[RowProblem], manifest: Path | str, limit: int = 50) -> str:
    """Format problems one per line, at most ``limit`` lines plus a count of the rest."""
    lines = [p.describe(manifest) for p in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"... and {len(problems) - limit} more")
    return "\n".join(lines)
