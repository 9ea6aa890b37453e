"""Cosine search of the catalogue index: exact below the threshold, FAISS HNSW above."""

from __future__ import annotations

import numpy as np

from bgmfit.config import IndexParams
from bgmfit.index import CosineIndex


def _unit(rng, n: int, dim: int = 16) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _search(**keys) -> IndexParams:
    """Index params of the demo library with these search settings."""
    return IndexParams(
        library="demo", library_dir="library", library_manifest=None, on_bad_input="skip", **keys
    )


def test_exact_search_returns_the_nearest_by_ascending_cosine_distance(rng):
    vectors = _unit(rng, 50)
    index = CosineIndex.build(
        vectors, _search(ann_threshold=1000, hnsw_m=16, ef_construction=40, ef_search=32)
    )
    rows, distances = index.search(vectors[7], 5)
    assert index.kind == "exact" and rows[0, 0] == 7 and abs(distances[0, 0]) < 1e-5
    expected = np.argsort(1.0 - vectors @ vectors[7], kind="stable")[:5]
    assert rows[0].tolist() == expected.tolist()
    assert np.all(np.diff(distances[0]) >= 0)


def test_hnsw_above_the_threshold_finds_what_exact_search_finds(rng):
    vectors = _unit(rng, 3000)
    params = _search(ann_threshold=1000, hnsw_m=16, ef_construction=80, ef_search=64)
    ann, exact = CosineIndex.build(vectors, params), CosineIndex(vectors)
    queries = _unit(rng, 50)
    found, _ = ann.search(queries, 10)
    truth, _ = exact.search(queries, 10)
    recall = np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth, strict=True)])
    assert ann.kind == "hnsw" and recall >= 0.9


def test_ann_recall_counts_what_hnsw_misses_and_leaves_a_query_row_out_of_its_own_answer(rng):
    from bgmfit.index.catalogue import ann_recall

    vectors = _unit(rng, 3000)
    exact = CosineIndex(vectors)
    assert ann_recall(exact, vectors[:40], leave_out=True) == 1.0
    good = CosineIndex.build(vectors, _search(ann_threshold=2, hnsw_m=16, ef_construction=80, ef_search=128))
    poor = CosineIndex.build(vectors, _search(ann_threshold=2, hnsw_m=2, ef_construction=2, ef_search=2))
    assert ann_recall(good, vectors[:100], leave_out=True) >= 0.9
    assert ann_recall(poor, vectors[:100], leave_out=True) < 0.7
    # Without leave_out a query that is an index row finds itself: one of its 10 is free.
    assert ann_recall(poor, vectors[:100]) > ann_recall(poor, vectors[:100], leave_out=True)


def test_an_index_from_a_bgmfit_with_other_feature_params_is_refused_in_one_line(tmp_path, features_params):
    import json

    import pytest

    from bgmfit.errors import BgmfitError
    from bgmfit.index import Catalogue
    from bgmfit.index.catalogue import content_hash

    # As the index stage writes it, but from before features.loudness_lufs existed; the stamp still matches.
    (tmp_path / "tracks.csv").write_text("track_id,style,role,work_id,split\n")
    old = {k: v for k, v in features_params.model_dump().items() if k != "loudness_lufs"}
    (tmp_path / "features.json").write_text(json.dumps(old))
    for name in ("triplet.npy", "match_deep.npy", "window_track.npy", "window_offset.npy"):
        np.save(tmp_path / name, np.zeros((0, 4), np.float32))
    (tmp_path / "stamp.json").write_text(json.dumps({"content_sha256": content_hash(tmp_path), "models": {}}))
    with pytest.raises(
        BgmfitError,
        match=r"features\.json was written by another bgmfit \(.*missing key "
        r"features\.loudness_lufs\); rebuild the index",
    ):
        Catalogue.load(tmp_path)


def test_the_windows_of_tracks_come_track_by_track_with_their_owner():
    from bgmfit.data.store import windows_of

    window_track = np.array([0, 0, 0, 1, 2, 2])  # track 0: three windows, 1: one, 2: two
    windows, owner = windows_of(window_track, np.array([2, 0]))
    assert windows.tolist() == [4, 5, 0, 1, 2] and owner.tolist() == [0, 0, 1, 1, 1]
    empty, nobody = windows_of(window_track, np.array([], dtype=np.int64))
    assert empty.size == 0 and nobody.size == 0


def _store_with_copies():
    from bgmfit.data.store import FeatureStore

    n = 4
    return FeatureStore(
        fused=np.zeros((n, 2, 3), np.float32),
        mfcc_frames=np.zeros((n, 5, 2), np.float32),
        tracks=[None] * n,  # type: ignore[list-item]
        columns=["a", "b", "c"],
        window_fused=np.zeros((n, 2, 3), np.float32),
        window_frames=np.zeros((n, 5, 2), np.float32),
        window_track=np.arange(n),
        window_offset=np.zeros(n, np.float32),
        duration=np.full(n, 10.0, np.float32),
        copies_fused=np.ones((3, 2, 3), np.float32),
        copies_frames=np.ones((3, 5, 2), np.float32),
        copies_track=np.array([2, 0, 2]),  # track 0 has one copy (row 5), track 2 two (rows 4 and 6)
    )


def test_each_training_row_is_drawn_as_itself_or_one_of_its_copies_evenly():
    store = _store_with_copies()
    assert store.training_inputs("fused").shape == (4 + 3, 2, 3)
    picked = store.pick_copies(np.repeat([0, 1, 2], 3000), np.random.default_rng(0)).reshape(3, -1)
    assert set(picked[0]) == {0, 5} and set(picked[1]) == {1} and set(picked[2]) == {2, 4, 6}
    for row, options in ((0, 2), (2, 3)):
        counts = np.unique(picked[row], return_counts=True)[1]
        assert np.all(np.abs(counts / 3000 - 1 / options) < 0.04)


def test_two_views_are_two_different_copies_of_the_same_track():
    store = _store_with_copies()
    rows = np.repeat([0, 1, 2], 3000)
    first, second = store.two_views(rows, np.random.default_rng(0))
    # The first view is drawn exactly as pick_copies draws it.
    assert np.array_equal(first, store.pick_copies(rows, np.random.default_rng(0)))
    owner = {0: 0, 1: 1, 2: 2, 3: 3, 4: 2, 5: 0, 6: 2}
    assert all(owner[a] == owner[b] == r for a, b, r in zip(first, second, rows, strict=True))
    has_copies = rows != 1
    assert np.all(first[has_copies] != second[has_copies]) and np.all(second[~has_copies] == 1)
    # Where the first view is the original, the second is each of its copies evenly.
    seconds = second[(rows == 2) & (first == 2)]
    assert set(seconds) == {4, 6} and abs(np.mean(seconds == 4) - 0.5) < 0.05


def test_the_instance_term_is_low_when_each_copy_is_nearest_its_own_track():
    import torch

    from bgmfit.models.mining import instance_loss

    torch.manual_seed(0)
    tracks = torch.arange(16)
    views = torch.nn.functional.normalize(torch.randn(16, 8), dim=1)
    near = instance_loss(views, views + 0.01 * torch.randn(16, 8), tracks)
    shuffled = instance_loss(views, views[torch.randperm(16)], tracks)
    assert near < 0.1 < 1.0 < shuffled
    # A track drawn twice into the batch is not its own negative: two identical rows cost
    # what one does.
    twice = torch.cat([views[:1], views])
    assert torch.isclose(
        instance_loss(twice, twice, torch.cat([tracks[:1], tracks])),
        instance_loss(views, views, tracks),
        atol=0.05,
    )


def test_a_library_folder_is_its_audio_files_with_the_manifest_joined_by_path(tmp_path):
    from bgmfit.index.library import scan_folder

    for name in ("b/two.MP3", "one.flac", ".hidden/three.wav", "b/.four.ogg", "cover.jpg", "notes.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "library.csv").write_text(
        "path,title,tags\n"
        "one.flac,One, calm ; strings ;\n"
        "one.flac,Again,\n"
        "../outside.wav,,\n"
        "missing.ogg,,\n"
        ",,\n"
        "b/two.MP3,Two,,extra\n"
    )
    scan = scan_folder(tmp_path)
    assert [t.track_id for t in scan.tracks] == ["b/two.MP3", "one.flac"]  # hidden and non-audio left out
    one = scan.tracks[1]
    assert (one.title, one.tags, one.role) == ("One", ("calm", "strings"), "bgm")
    assert scan.tracks[0].title == ""  # its line was bad: the file stays, without metadata
    manifest = tmp_path / "library.csv"
    assert [str(p) for p in scan.problems] == [
        f"{manifest}:3: path 'one.flac' is listed twice",
        f"{manifest}:4: path '../outside.wav' must be relative to the library folder",
        f"{manifest}:5: path 'missing.ogg' is not an audio file of the library folder",
        f"{manifest}:6: path is empty",
        f"{manifest}:7: more fields than the 3 columns",
    ]


def test_a_library_manifest_with_an_unknown_column_is_refused_by_name(tmp_path):
    from bgmfit.index.library import scan_folder

    (tmp_path / "a.wav").write_bytes(b"x")
    (tmp_path / "meta.csv").write_text("path,mood\na.wav,calm\n")
    scan = scan_folder(tmp_path, tmp_path / "meta.csv")
    assert scan.tracks[0].track_id == "a.wav" and scan.tracks[0].tags == ()
    assert [str(p) for p in scan.problems] == [
        f"{tmp_path / 'meta.csv'}:1: unknown column(s) mood; the columns are path, title, artist, licence, "
        "style, tags"
    ]
