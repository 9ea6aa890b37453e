"""``bgmfit timeline`` on an episode of real speech and music: scenes, a plan, and a preview to listen to."""

from __future__ import annotations

import json

import httpx
import mir_eval
import numpy as np
import pytest
import yaml

from bgmfit.audio import load_audio
from tests.conftest import SCREENSHOTS
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


def test_the_evaluate_stage_scores_long_form_episodes_of_held_out_works(served_project):
    metrics = json.loads((served_project / "metrics/timeline.json").read_text())
    assert metrics["episodes"] == 2 and metrics["scenes_per_episode"] == 3 and metrics["scenes"] >= 4
    for scorer in ("timeline", "baseline"):
        block = metrics[scorer]
        assert 0 <= block["scene_accuracy_work"] <= block["scene_accuracy_style"] <= 1
        assert 0 <= block["boundary_f1"] <= 1 and block["switches"] >= 0
    assert (
        metrics["baseline"]["switches"] >= metrics["timeline"]["switches"]
    )  # the penalty only removes changes
    assert 0 <= metrics["timeline"]["abstention"] <= 1 and 0 <= metrics["timeline"]["false_abstention"] <= 1
    plot = (served_project / "plots/timeline.csv").read_text().splitlines()
    assert plot[0] == "measure,scorer,value" and len(plot) == 7


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


def test_nothing_fits_is_an_answer_under_min_fit(served_project, episode, tmp_path):
    params = yaml.safe_load((served_project / "params.yaml").read_text())
    params["timeline"]["min_fit"] = 1.0  # no calibrated fit reaches it
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out = tmp_path / "t.json"
    result = bgmfit(
        served_project,
        "--params",
        str(tmp_path / "params.yaml"),
        "timeline",
        str(episode.path),
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    scenes = json.loads(out.read_text())["scenes"]
    assert scenes and all(s["track"] is None for s in scenes)
    speech = [s for s in scenes if s["kind"] == "speech"]
    assert speech and all(s["note"] == "no track fits above timeline.min_fit (1)" for s in speech)
    assert all(len(s["alternatives"]) == 3 for s in scenes)  # still offered, for an editor to choose
    assert "no BGM" in result.stdout


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


# -- through `bentoml serve`: the task endpoint, the previews, and the editors' page --------------


@pytest.fixture(scope="module")
def timeline_server(served_project, tmp_path_factory):
    """`bentoml serve` on 127.0.0.1 with limits for whole episodes (the shared one takes 30 s at most)."""
    from tests.integration.helpers import bentoml_serve

    config = json.loads((served_project / "models/serving.json").read_text())
    config["limits"] |= {"max_upload_bytes": 64 * 2**20, "max_audio_seconds": 3600.0}
    config["timeline"]["min_fit"] = 0.0
    serving = served_project / "models/serving-episodes.json"  # beside serving.json: the same index
    serving.write_text(json.dumps(config))
    log = tmp_path_factory.mktemp("serve-episodes") / "bentoml-serve.log"
    with bentoml_serve(served_project, serving, log) as (base, _):
        yield base


def _finished(base: str, task: str, submit) -> httpx.Response:
    """Submit a task (``submit`` posts it), wait until it has run, and get its answer."""
    import time

    submitted = submit()
    assert submitted.status_code == 200, submitted.text
    task_id = submitted.json()["task_id"]
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline:
        status = httpx.get(f"{base}/{task}/status", params={"task_id": task_id}, timeout=10).json()
        if status["status"] in ("completed", "failed"):
            break
        time.sleep(1)
    assert status["status"] in ("completed", "failed"), f"the {task} task is still {status} after 400 s"
    answer = httpx.get(f"{base}/{task}/get", params={"task_id": task_id}, timeout=30)
    assert (status["status"] == "completed") == (answer.status_code == 200), (status, answer.text)
    return answer


def _submitted(base: str, path, job: str | None = None) -> dict:
    data = {"job": job} if job else {}
    with open(path, "rb") as f:
        files = {"audio": (path.name, f)}
        url = f"{base}/timeline/submit"
        answer = _finished(base, "timeline", lambda: httpx.post(url, files=files, data=data, timeout=60))
    assert answer.status_code == 200, answer.text
    return answer.json()


def _remixed(base: str, job: str, choices: dict[str, str]) -> httpx.Response:
    body = {"job": job, "choices": choices}
    return _finished(base, "render", lambda: httpx.post(f"{base}/render/submit", json=body, timeout=60))


def test_the_task_endpoint_scores_an_episode_and_its_preview_can_be_fetched_and_remixed(
    timeline_server, episode
):
    job = "0123456789abcdef0123456789abcdef"
    timeline = _submitted(timeline_server, episode.path, job)
    assert timeline["job"] == job and len(timeline["scenes"]) >= len(episode.scenes) - 1
    assert httpx.get(f"{timeline_server}/jobs/{job}/progress").json() == {"step": "done", "fraction": 1.0}
    mix = httpx.get(timeline_server + timeline["preview_url"], timeout=30)
    assert mix.status_code == 200 and mix.headers["content-type"] == "audio/mpeg"
    assert load_audio(mix.content, RATE).size == pytest.approx(episode.seconds * RATE, abs=RATE)

    scene = next(s for s in timeline["scenes"] if s["track"] is not None)
    other = scene["alternatives"][0]["track_id"]
    render = _remixed(timeline_server, job, {str(scene["index"]): other})
    assert render.status_code == 200, render.text
    again = render.json()
    assert again["scenes"][scene["index"]]["track"]["track_id"] == other
    assert again["preview_url"] != timeline["preview_url"]
    assert httpx.get(timeline_server + again["preview_url"], timeout=30).status_code == 200

    wrong = _remixed(timeline_server, job, {"0": "no-such-track"})
    assert (
        wrong.status_code == 422 and "scene 0: 'no-such-track' is not one of its alternatives" in wrong.text
    )
    unknown = _remixed(timeline_server, "e" * 32, {"0": other})
    assert unknown.status_code == 404 and "no finished timeline job" in unknown.text
    direct = httpx.post(f"{timeline_server}/render", json={"job": job, "choices": {}}, timeout=30)
    assert direct.status_code == 400 and "POST /render/submit" in direct.text
    assert httpx.get(f"{timeline_server}/jobs/{'f' * 32}/timeline.json").status_code == 404
    assert httpx.get(f"{timeline_server}/jobs/{job}/..%2Fsecrets").status_code == 404
    text = httpx.post(f"{timeline_server}/timeline/submit", data={"audio": "http://example.com/a.mp3"})
    assert text.status_code == 400  # a URL where the file belongs is refused, never fetched


@pytest.mark.ui
def test_an_editor_scores_listens_and_swaps_a_track_on_the_page(timeline_server, episode, browser):
    page = browser.new_page(viewport={"width": 1320, "height": 1100})
    page.set_default_timeout(400_000)
    page.goto(f"{timeline_server}/editor")
    page.set_input_files("#file", str(episode.path))
    page.click("#go")
    page.wait_for_selector("#scenes tbody tr")
    rows = page.locator("#scenes tbody tr")
    assert rows.count() >= len(episode.scenes) - 1
    first = page.locator("#player").get_attribute("src")
    assert first and first.endswith("preview-0.mp3")
    assert "scenes" in page.inner_text("#step") and page.locator("#downloads").is_visible()
    # The waveform and the scenes are drawn: the canvas is not blank.
    painted = page.evaluate(
        "() => { const c = document.getElementById('wave'); const d = c.getContext('2d')"
        ".getImageData(0, 0, c.width, c.height).data; let n = 0;"
        " for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n / (c.width * c.height); }"
    )
    assert painted > 0.3
    page.screenshot(path=SCREENSHOTS / "editor-timeline.png", full_page=True)
    select = page.locator("#scenes select").first
    option = select.locator("option").nth(1).get_attribute("value")
    select.select_option(option)
    page.wait_for_function("() => document.getElementById('player').src.endsWith('preview-1.mp3')")
    assert option in page.locator("#scenes select").first.input_value()
    page.screenshot(path=SCREENSHOTS / "editor-swapped.png", full_page=True)
    page.close()
