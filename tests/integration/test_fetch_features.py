"""A tiny demo corpus through the real fetch and features stages, and a user's folder."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bgmfit.config import FeaturesParams, load_params
from bgmfit.data.manifest import read_manifest
from tests.integration.helpers import TINY_FETCH, bgmfit, write_params, write_user_corpus
from tests.signals import SR, harmonic_tone

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_project(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("demo")
    write_params(folder, fetch=TINY_FETCH)
    for stage in ("fetch", "features"):
        result = bgmfit(folder, stage)
        assert result.returncode == 0, result.stderr
    return folder


def test_demo_manifest_covers_styles_roles_and_splits(demo_project: Path):
    rows = read_manifest(demo_project / "data/raw/manifest.csv")
    assert {r.style for r in rows} == set(TINY_FETCH["styles"])
    assert {r.role for r in rows} >= {"foreground", "bgm", "music", "narration"}
    for row in rows:
        assert (demo_project / "data/raw" / row.path).is_file()
        assert row.source.startswith("music21:") and row.licence
    summary = json.loads((demo_project / "metrics/fetch.json").read_text())
    assert summary["tracks"] == len(rows)
    assert summary["pairs"] >= 6 and summary["narration_clips"] >= 1


def test_no_work_straddles_two_splits(demo_project: Path):
    rows = read_manifest(demo_project / "data/raw/manifest.csv")
    splits_of: dict[str, set[str]] = {}
    for row in rows:
        splits_of.setdefault(row.work_id, set()).add(row.split)
    assert all(len(s) == 1 for s in splits_of.values())
    assert {s for (s,) in splits_of.values()} == {"train", "val", "test"}


def test_features_align_with_tracks_and_use_training_statistics(demo_project: Path):
    features = demo_project / "data/features"
    fused = np.load(features / "fused.npy")
    frames = np.load(features / "mfcc_frames.npy")
    tracks = read_manifest(features / "tracks.csv")
    assert fused.shape[0] == frames.shape[0] == len(tracks)
    params = load_params("features", FeaturesParams, demo_project / "params.yaml")
    assert fused.shape[1] == params.n_segments and frames.shape[1:] == (params.frames_n, params.frames_n_mfcc)
    assert np.all(np.isfinite(fused)) and np.all(np.isfinite(frames))
    train = np.array([t.split == "train" for t in tracks])
    # Statistics come from the training split, so only its frames average to zero.
    np.testing.assert_allclose(frames[train].reshape(-1, 20).mean(axis=0), 0.0, atol=1e-3)
    stats = json.loads((features / "norm_stats.json").read_text())
    assert [d["name"] for d in stats["dimensions"]] == [
        "timbre",
        "spectral",
        "tonality",
        "rhythm",
        "energy",
        "prosody",
    ]


def test_rerun_reads_every_track_from_the_cache(demo_project: Path):
    result = bgmfit(demo_project, "features")
    assert result.returncode == 0, result.stderr
    summary = json.loads((demo_project / "metrics/features.json").read_text())
    assert summary["computed"] == 0 and summary["cached"] == summary["tracks"]


def _append(manifest: Path, *rows: list[str]) -> None:
    with manifest.open("a", newline="") as f:
        csv.writer(f).writerows(rows)


def test_folder_with_a_corrupt_file_and_a_bad_row_reports_both(tmp_path: Path):
    audio = write_user_corpus(tmp_path)
    (audio / "broken.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    _append(
        audio / "manifest.csv",
        ["broken", "broken.wav", "bgm", "calm", "w9", "", ""],  # line 14
        ["odd", "lead0.wav", "drums", "calm", "w10", "", ""],
    )  # line 15
    write_params(tmp_path, fetch={"source": "dir", "dir": str(audio), "on_bad_input": "fail"})
    result = bgmfit(tmp_path, "fetch")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"{audio / 'manifest.csv'}:14: not decodable as audio" in result.stderr
    assert "(broken.wav)" in result.stderr
    assert f"{audio / 'manifest.csv'}:15: unknown role 'drums'" in result.stderr
    assert "set fetch.on_bad_input: skip" in result.stderr

    write_params(tmp_path, fetch={"source": "dir", "dir": str(audio), "on_bad_input": "skip"})
    result = bgmfit(tmp_path, "fetch")
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "metrics/fetch.json").read_text())
    assert summary["skipped_rows"] == 2 and summary["tracks"] == 12
    assert [(s["line"], s["path"]) for s in summary["skipped"]] == [(14, "broken.wav"), (15, "lead0.wav")]


def test_undecodable_audio_is_reported_by_features_with_its_path(tmp_path: Path, rng):
    audio = write_user_corpus(tmp_path)
    cut = audio / "cut.flac"
    sf.write(cut, (0.2 * rng.standard_normal(3 * SR)).astype(np.float32), SR, format="FLAC")
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 3])  # header intact, body cut
    _append(audio / "manifest.csv", ["cut", "cut.flac", "bgm", "calm", "w11", "", ""])
    write_params(tmp_path, fetch={"source": "dir", "dir": str(audio), "on_bad_input": "fail"})
    assert bgmfit(tmp_path, "fetch").returncode == 0
    result = bgmfit(tmp_path, "features")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "data/raw/audio/cut.flac: " in result.stderr and "1 file(s) could not be decoded" in result.stderr

    write_params(tmp_path, fetch={"source": "dir", "dir": str(audio), "on_bad_input": "skip"})
    assert bgmfit(tmp_path, "fetch").returncode == 0
    result = bgmfit(tmp_path, "features")
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "metrics/features.json").read_text())
    assert summary["tracks"] == 12 and summary["skipped_files"] == 1
    assert summary["skipped"][0]["path"].endswith("cut.flac")


def test_adding_a_track_computes_only_the_new_one(tmp_path: Path):
    audio = write_user_corpus(tmp_path)
    write_params(tmp_path, fetch={"source": "dir", "dir": str(audio)})
    assert bgmfit(tmp_path, "fetch").returncode == 0
    assert bgmfit(tmp_path, "features").returncode == 0
    shutil.copy(audio / "lead1.wav", audio / "lead1-copy.wav")  # same content: a cache hit too
    sf.write(audio / "new.wav", harmonic_tone(330.0, 3.0), SR)
    _append(
        audio / "manifest.csv",
        ["new", "new.wav", "bgm", "calm", "w20", "train", ""],
        ["copy", "lead1-copy.wav", "foreground", "calm", "w21", "", ""],
    )
    assert bgmfit(tmp_path, "fetch").returncode == 0
    result = bgmfit(tmp_path, "features")
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "metrics/features.json").read_text())
    assert (summary["tracks"], summary["computed"], summary["cached"]) == (14, 1, 13)
    tracks = read_manifest(tmp_path / "data/features/tracks.csv")
    assert next(t for t in tracks if t.track_id == "new").split == "train"


def test_work_given_two_splits_is_refused(tmp_path: Path):
    audio = write_user_corpus(tmp_path)
    _append(
        audio / "manifest.csv",
        ["x1", "lead0.wav", "foreground", "calm", "wx", "train", ""],
        ["x2", "bed0.flac", "bgm", "calm", "wx", "test", ""],
    )
    write_params(tmp_path, fetch={"source": "dir", "dir": str(audio)})
    result = bgmfit(tmp_path, "fetch")
    assert result.returncode == 2
    assert "work 'wx' is in split 'test' here but 'train' on line 14" in result.stderr


def test_training_tracks_and_only_they_have_augmented_copies(demo_project: Path):
    from bgmfit.data.store import FeatureStore

    store = FeatureStore.load(demo_project / "data/features")
    params = load_params("features", FeaturesParams, demo_project / "params.yaml")
    train = store.select("train")
    assert params.augment.copies >= 1
    assert sorted(store.copies_track.tolist()) == sorted(np.repeat(train, params.augment.copies).tolist())
    assert store.copies_fused.shape[1:] == store.fused.shape[1:]
    assert store.copies_frames.shape[1:] == store.mfcc_frames.shape[1:]
    # A copy is the same music changed, not another track: nearer its own track than most others.
    flat = store.fused.reshape(len(store.tracks), -1)
    for copy, own in zip(
        store.copies_fused.reshape(len(store.copies_track), -1), store.copies_track, strict=True
    ):
        distances = np.linalg.norm(flat - copy, axis=1)
        assert (distances < distances[own]).mean() < 0.25
    summary = json.loads((demo_project / "metrics/features.json").read_text())
    assert summary["augmented_copies"] == len(store.copies_track)
