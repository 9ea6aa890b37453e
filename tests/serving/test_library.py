"""A user's own library, served without retraining: a folder of real recordings, mixed formats and lengths.

The recordings are Debian's ``singularity-music`` (OGG), installed by the test itself or skipped
with the reason. The folder has no manifest at first, one corrupt file and one text file.
"""

from __future__ import annotations

import glob
import json
import shutil
from pathlib import Path

import httpx
import pytest
import soundfile as sf
import yaml

from bgmfit.audio import encode, load_audio
from tests.integration.helpers import bentoml_serve, bgmfit
from tests.integration.test_real_recordings import MUSIC
from tests.system import debian_program

pytestmark = pytest.mark.slow

RATE = 44100


def _set_index(project: Path, **keys) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["index"].update(keys)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def _unchanged(project: Path) -> dict[str, float]:
    """What training and the registry gate wrote: none of it may change when a library is indexed."""
    return {
        str(p): p.stat().st_mtime_ns
        for p in (project / "models/match/model.ckpt", project / "models/triplet/model.ckpt")
    } | {"champions": (project / "models/champions.json").read_text(), "registry": _versions(project)}


def _versions(project: Path) -> str:
    result = bgmfit(project, "registry")
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def recordings() -> list[str]:
    if debian_program(MUSIC, "singularity-music") is None:
        pytest.skip("Debian's singularity-music is not installed, and installing it needs root and apt-get")
    return sorted(glob.glob(MUSIC))


@pytest.fixture(scope="module")
def library_project(served_project: Path, recordings, tmp_path_factory) -> tuple[Path, Path, str]:
    """A copy of the served tiny project that indexes a folder of real recordings: (project, folder, log)."""
    project = tmp_path_factory.mktemp("library-project")
    shutil.copytree(served_project, project, dirs_exist_ok=True, symlinks=True)
    folder = project / "my music"
    (folder / "suite").mkdir(parents=True)
    shutil.copy(recordings[0], folder / "suite/whole.ogg")  # a whole track, minutes long
    second, third, fourth = (load_audio(p, RATE) for p in recordings[1:4])
    (folder / "excerpt.mp3").write_bytes(encode(second[: 40 * RATE], RATE, "mp3", "libmp3lame", 128_000))
    (folder / "excerpt.m4a").write_bytes(encode(third[: 25 * RATE], RATE, "ipod", "aac"))
    sf.write(folder / "short.wav", fourth[: 6 * RATE], RATE, subtype="PCM_16")  # shorter than one window
    (folder / "broken.mp3").write_bytes(b"\xff\xfb" + b"not audio at all " * 400)
    (folder / "notes.txt").write_text("not a track")
    before = _unchanged(project)
    _set_index(project, library="dir", library_dir=str(folder))
    indexed = bgmfit(project, "index")
    assert indexed.returncode == 0, indexed.stderr[-3000:]
    packaged = bgmfit(project, "package")
    assert packaged.returncode == 0, packaged.stderr[-3000:]
    assert _unchanged(project) == before, "indexing a library retrained or re-registered something"
    return project, folder, indexed.stderr


@pytest.fixture(scope="module")
def library_server(library_project) -> str:
    project = library_project[0]
    with bentoml_serve(project, project / "models/serving.json", project / "bentoml-serve.log") as (base, _):
        yield base


def test_the_corrupt_file_is_reported_by_path_and_the_rest_indexed(library_project):
    project, folder, log = library_project
    assert f"{folder / 'broken.mp3'}:" in log, log
    stamp = json.loads((project / "models/index/stamp.json").read_text())
    assert stamp["library"] == str(folder) and stamp["tracks"] == 4
    assert [r["where"] for r in stamp["rejected"]] == [str(folder / "broken.mp3")]


def test_recommendations_come_from_that_library_with_offsets_and_metadata(library_server, recordings):
    info = httpx.get(f"{library_server}/model-info", timeout=10).json()
    assert info["index"]["tracks"] == 4 and info["index"]["library"].endswith("my music")
    ids = {"suite/whole.ogg", "excerpt.mp3", "excerpt.m4a", "short.wav"}
    query = load_audio(recordings[4], RATE)[: 30 * RATE]
    upload = {"audio": ("query.mp3", encode(query, RATE, "mp3", "libmp3lame", 128_000), "audio/mpeg")}
    whole_seconds = sf.info(recordings[0]).duration
    for method in ("match", "triplet"):
        response = httpx.post(
            f"{library_server}/recommend", files=upload, data={"top_k": "4", "method": method}, timeout=120
        )
        assert response.status_code == 200, response.text
        results = response.json()
        assert {r["track_id"] for r in results} == ids, results
        for r in results:
            assert 0.0 <= r["offset_seconds"] <= max(0.0, r["duration_seconds"] - 10.0) + 1e-6, r
            assert {"title", "artist", "licence", "tags"} <= set(r), r
        whole = next(r for r in results if r["track_id"] == "suite/whole.ogg")
        assert whole["duration_seconds"] == pytest.approx(whole_seconds, abs=0.1)
    near = httpx.post(f"{library_server}/similar", json={"track_id": "excerpt.mp3", "top_k": 3}, timeout=60)
    assert near.status_code == 200, near.text
    assert {r["track_id"] for r in near.json()} == ids - {"excerpt.mp3"}


def test_a_manifest_adds_metadata_and_a_bad_line_is_named(library_project):
    project, folder, _ = library_project
    (folder / "library.csv").write_text(
        "path,title,artist,licence,tags\n"
        "suite/whole.ogg,The Whole Track,Singularity,CC-BY-SA,calm;strings\n"
        "gone.ogg,Nobody,,,\n"
    )
    result = bgmfit(project, "library", str(folder), "--json")
    assert result.returncode == 0, result.stderr
    listing = json.loads(result.stdout)
    refused = {(p["where"], p["reason"]) for p in listing["refused"]}
    assert (
        f"{folder / 'library.csv'}:3",
        "path 'gone.ogg' is not an audio file of the library folder",
    ) in refused
    assert any(where == str(folder / "broken.mp3") for where, _ in refused), refused
    whole = next(t for t in listing["tracks"] if t["track_id"] == "suite/whole.ogg")
    assert whole["title"] == "The Whole Track" and whole["tags"] == ["calm", "strings"]


def test_a_rebuild_analyses_only_new_files_and_drops_removed_ones(library_project, recordings):
    project, folder, _ = library_project
    sf.write(folder / "added.flac", load_audio(recordings[5], RATE)[: 15 * RATE], RATE)
    (folder / "short.wav").unlink()
    result = bgmfit(project, "index")
    assert result.returncode == 0, result.stderr[-3000:]
    # whole.ogg, the two excerpts and added.flac; broken.mp3 is tried again, and refused again.
    assert "5 audio file(s), 1 analysed now, 3 from the cache" in result.stderr, result.stderr
    tracks = (project / "models/index/tracks.csv").read_text()
    assert "added.flac" in tracks and "short.wav" not in tracks
    # The manifest's metadata reaches the index.
    assert "The Whole Track" in tracks and "calm;strings" in tracks
    # And its tags filter: only the tagged track answers, however many are asked for.
    tagged = bgmfit(
        project, "similar", "excerpt.mp3", "-k", "5", "--tag", "calm", "--tag", "strings", "--json"
    )
    assert tagged.returncode == 0, tagged.stderr
    assert [r["track_id"] for r in json.loads(tagged.stdout)] == ["suite/whole.ogg"]
    unknown = bgmfit(project, "similar", "excerpt.mp3", "--tag", "clam")
    assert (
        unknown.returncode == 2
        and "tags: unknown tags 'clam'; the library's tags: calm, strings" in unknown.stderr
    )
