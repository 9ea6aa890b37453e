"""A user's manifest: every bad row is found, with its line number and a reason."""

import csv
from pathlib import Path

import pytest
import soundfile as sf

from bgmfit.data.manifest import validate_user_manifest
from bgmfit.errors import ManifestError
from tests.signals import SR, sine

HEADER = ["track_id", "path", "role", "style", "work_id", "split", "label"]


def _folder(tmp_path: Path, rows: list[list[str]]) -> Path:
    for name in ("a.wav", "b.wav", "c.flac"):
        sf.write(tmp_path / name, sine(440.0, 1.0), SR)
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk")
    with (tmp_path / "manifest.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(HEADER)
        writer.writerows(rows)
    return tmp_path / "manifest.csv"


def test_good_rows_pass_and_get_duration(tmp_path: Path):
    manifest = _folder(
        tmp_path,
        [
            ["t1", "a.wav", "foreground", "pop", "w1", "", "0.5"],
            ["t2", "b.wav", "bgm", "pop", "w1", "train", ""],
        ],
    )
    good, problems = validate_user_manifest(manifest, tmp_path)
    assert problems == []
    assert [r["track_id"] for r in good] == ["t1", "t2"]
    assert good[0]["duration"] == "1.000" and good[0]["sample_rate"] == str(SR)


def test_every_bad_row_is_reported_with_line_and_reason(tmp_path: Path):
    manifest = _folder(
        tmp_path,
        [
            ["t1", "a.wav", "bgm", "pop", "w1", "", ""],  # line 2: good
            ["t2", "missing.wav", "bgm", "pop", "w2", "", ""],  # line 3
            ["t3", "b.wav", "vocals", "pop", "w3", "", ""],  # line 4
            ["t4", "b.wav", "foreground", "pop", "w4", "", "1.7"],  # line 5
            ["t5", "b.wav", "foreground", "pop", "w5", "", "good"],  # line 6
            ["t1", "c.flac", "bgm", "pop", "w6", "", ""],  # line 7
            ["t7", "corrupt.wav", "bgm", "pop", "w7", "", ""],  # line 8
            ["t8", "b.wav", "bgm", "pop", "w8", "holdout", ""],  # line 9
            ["t9", "b.wav", "bgm", "pop", "w9", "", "0.5"],  # line 10
            ["", "b.wav", "bgm", "pop", "w10", "", ""],  # line 11
        ],
    )
    good, problems = validate_user_manifest(manifest, tmp_path)
    assert [r["track_id"] for r in good] == ["t1"]
    found = {p.line: p.reason for p in problems}
    assert found[3] == "file not found"
    assert found[4] == "unknown role 'vocals' (expected one of foreground, narration, bgm, music)"
    assert found[5] == "bad label '1.7': expected a fit grade between 0 and 1"
    assert found[6] == "bad label 'good': expected a fit grade between 0 and 1"
    assert found[7] == "duplicate track_id 't1' (first on line 2)"
    assert found[8].startswith("not decodable as audio")
    assert found[9].startswith("unknown split 'holdout'")
    assert found[10] == "label is only for foreground or narration rows, not 'bgm'"
    assert found[11] == "empty track_id"
    assert problems[0].describe(manifest) == f"{manifest}:3: file not found (missing.wav)"


def test_missing_column_is_fatal_and_named(tmp_path: Path):
    (tmp_path / "manifest.csv").write_text("track_id,path,style\nt1,a.wav,pop\n")
    with pytest.raises(ManifestError, match=r"manifest.csv:1: missing required column\(s\) role, work_id"):
        validate_user_manifest(tmp_path / "manifest.csv", tmp_path)


def test_row_with_extra_fields_is_reported(tmp_path: Path):
    manifest = _folder(tmp_path, [["t1", "a.wav", "bgm", "pop", "w1", "", "", "surprise"]])
    _, problems = validate_user_manifest(manifest, tmp_path)
    assert problems[0].line == 2 and "more field(s) than the header" in problems[0].reason
