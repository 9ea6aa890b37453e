"""``bgmfit timeline`` on an episode of real speech and music: scenes, a plan, and a preview to listen to."""

from __future__ import annotations

import json

import mir_eval
import numpy as np
import pytest
import yaml

from bgmfit.audio import load_audio
from tests.integration.helpers import bgmfit
from tests.real_episode import RATE, build_episode

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def episode(tmp_path_factory):
    return build_episode(tmp_path_factory.mktemp("episode"), minutes=8)


@pytest.fixture(scope="module")
def scored(served_project, episode, tmp_path_factory):
    out = tmp_path_factory.mktemp("timeline")
    # The tiny project's networks fit little above 0.5; every speech scene gets its best track here.
    params = yaml.safe_load((served_project / "params.yaml").read_text())
    params["timeline"]["min_fit"] = 0.0
    (out / "params.yaml").write_text(yaml.safe_dump(params))
    result = bgmfit(
        served_project,
        "--params",
        str(out / "params.yaml"),
        "timeline",
        str(episode.path),
        "--out",
        str(out / "t.json"),
        "--preview",
        str(out / "mix.mp3"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((out / "t.json").read_text()), out / "mix.mp3", result.stdout


def test_scenes_are_found_where_the_episode_changes(scored, episode):
    timeline, _, stdout = scored
    scenes = timeline["scenes"]
    assert scenes[0]["start_seconds"] == 0 and scenes[-1]["end_seconds"] == pytest.approx(
        episode.seconds, abs=1
    )
    found = np.array([[s["start_seconds"], s["end_seconds"]] for s in scenes])
    truth = np.array([[a, b] for _, a, b in episode.scenes])
    truth[1:, 0] = truth[:-1, 1] = (truth[:-1, 1] + truth[1:, 0]) / 2  # the pause between belongs to both
    precision, recall, f1 = mir_eval.segment.detection(truth, found, window=3.0, trim=True)
    assert f1 >= 0.8, (precision, recall, [s["start_seconds"] for s in scenes], truth[:, 0])
    for kind, a, b in episode.scenes:  # each scene's kind is what it was made of
        overlapping = [s for s in scenes if s["start_seconds"] < b - 5 and s["end_seconds"] > a + 5]
        assert overlapping and all(s["kind"] == kind for s in overlapping), (kind, a, b, overlapping)
    assert f"{len(scenes)} scenes" in stdout


def test_music_goes_under_speech_only_and_changes_only_at_scene_boundaries(scored):
    timeline, _, _ = scored
    for s in timeline["scenes"]:
        if s["kind"] == "music":
            assert s["track"] is None and "music here" in s["note"]
        else:
            assert s["track"] is not None and s["fit"] >= timeline["params"]["min_fit"]
            assert len(s["alternatives"]) == 3 and all(
                a["track_id"] != s["track"]["track_id"] for a in s["alternatives"]
            )
        assert s["bgm_level_lu"] in (None, -timeline["params"]["bed_db"])
    chosen = [s["track"]["track_id"] for s in timeline["scenes"] if s["track"]]
    changes = sum(a != b for a, b in zip(chosen, chosen[1:], strict=False))
    assert timeline["switches"] <= len(timeline["scenes"]) - 1 and changes <= timeline["switches"]
    assert timeline["models"] and timeline["library"] == "demo"


def test_the_preview_is_the_episode_over_ducked_bgm_at_podcast_loudness(scored, episode):
    import pyloudnorm

    timeline, preview, _ = scored
    mix = load_audio(preview, RATE)
    voice = load_audio(episode.path, RATE)
    assert mix.size == pytest.approx(voice.size, abs=RATE)  # an MP3's padding, at most
    assert pyloudnorm.Meter(RATE).integrated_loudness(mix.astype(np.float64)) == pytest.approx(-16, abs=1.0)
    for s in timeline["scenes"]:
        if s["track"] is None:
            assert s["ducking_db"] is None
            continue
        assert s["ducking_db"] <= -3.0  # ducked under the voice ...
        assert s["bgm_under_voice_db"] <= -18.0  # ... to well under it, as mixed
        # And the mix one hears is mostly the episode (its limiter and the MP3 take their share too).
        a, b = int((s["start_seconds"] + 2) * RATE), int((s["end_seconds"] - 2) * RATE)
        m, v = mix[a:b], voice[a:b]
        gain = float(np.dot(m, v) / np.dot(v, v))
        rest = m - gain * v
        assert 10 * np.log10(np.sum((gain * v) ** 2) / np.sum(rest**2)) >= 8.0, s
