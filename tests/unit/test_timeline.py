"""The parts of a timeline: the plan (dynamic programming), scenes from novelty and pauses, the ducked mix."""

from __future__ import annotations

import numpy as np
import pytest

from bgmfit.config import TimelineParams, load_params
from bgmfit.errors import ConfigError
from bgmfit.timeline.plan import NONE, choose, runs, viterbi
from tests.signals import REPO


@pytest.fixture
def params() -> TimelineParams:
    return load_params("timeline", TimelineParams, REPO / "params.yaml")


@pytest.fixture
def counted_reads():
    """A SampleFile class that records the largest slice read from it (a fresh count per test)."""
    from bgmfit.audio import SampleFile

    class CountedReads(SampleFile):
        largest = 0

        def __getitem__(self, where):
            out = super().__getitem__(where)
            CountedReads.largest = max(CountedReads.largest, out.size)
            return out

    return CountedReads


def test_a_track_that_fits_two_neighbours_almost_equally_carries_across_both():
    fits = np.array([[0.80, 0.50], [0.70, 0.72], [0.75, 0.40]])
    everything = np.ones_like(fits, dtype=bool)
    assert viterbi(fits, everything, switch_penalty=0.05) == [0, 0, 0]  # 0.02 better is not worth a change
    assert viterbi(fits, everything, switch_penalty=0.0) == [0, 1, 0]  # without a penalty, each scene's best
    assert viterbi(fits, everything, switch_penalty=0.05) != [0, 1, 0]


def test_a_scene_with_no_allowed_track_gets_none_and_the_plan_goes_on_after_it():
    fits = np.array([[0.9, 0.1], [0.9, 0.1], [0.2, 0.8]])
    allowed = np.array([[True, True], [False, False], [True, True]])
    plan = viterbi(fits, allowed, switch_penalty=0.5)
    assert plan == [0, NONE, 1]
    assert runs(plan) == [(0, 0, 1), (1, 2, 3)]


def test_a_track_comes_back_at_most_max_runs_times():
    # Track 0 is best everywhere but scene 1 and 3 are track 1's: 0 would make three runs.
    fits = np.array([[0.9, 0.1, 0.5], [0.1, 0.9, 0.1], [0.9, 0.1, 0.6], [0.1, 0.9, 0.1], [0.9, 0.1, 0.7]])
    everything = np.ones_like(fits, dtype=bool)
    free = choose(fits, everything, switch_penalty=0.0, max_runs=5)
    assert free == [0, 1, 0, 1, 0]
    limited = choose(fits, everything, switch_penalty=0.0, max_runs=2)
    track_runs = [t for t, _, _ in runs(limited)]
    assert max(track_runs.count(t) for t in set(track_runs)) <= 2
    assert limited[0] == 0 and limited[2] == 0 and limited[4] == 2  # the weakest run of 0 gave way


def test_scenes_follow_changes_in_the_features_and_long_pauses(params, rng):
    from bgmfit.timeline.scenes import split_scenes

    # Three 60 s blocks of different music, and a 5 s silence 30 s into the last one.
    centres = rng.standard_normal((3, 40)) * 3
    rows = np.concatenate([c + rng.standard_normal((60, 40)) for c in centres])
    kinds = np.array(["speech"] * 180, dtype=object)
    kinds[148:153] = "silence"
    scenes = split_scenes(rows, kinds, params)
    starts = [s.start for s in scenes]
    assert starts[0] == 0 and scenes[-1].end == 180
    assert any(abs(b - 60) <= 2 for b in starts) and any(abs(b - 120) <= 2 for b in starts)
    assert 150 in starts  # the pause: at its middle second
    assert all(s.end - s.start >= params.min_scene_seconds for s in scenes)
    assert len(scenes) == 4


def test_long_scenes_are_split_and_short_episodes_are_one_scene(params, rng):
    from bgmfit.timeline.scenes import split_scenes

    same = rng.standard_normal((600, 20)) * 0.01  # ten minutes with nothing new
    kinds = np.array(["speech"] * 600, dtype=object)
    scenes = split_scenes(same, kinds, params)
    assert all(s.end - s.start <= params.max_scene_seconds for s in scenes) and len(scenes) >= 4
    assert [(s.start, s.end) for s in split_scenes(same[:30], kinds[:30], params)] == [(0, 30)]


def test_the_ducking_lowers_the_bed_under_the_voice_and_not_elsewhere(params):
    from bgmfit.timeline.preview import sidechain_duck

    rate = 22050
    t = np.arange(rate * 20) / rate
    bed = (0.1 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    voice = np.zeros_like(bed)
    voice[rate * 8 : rate * 14] = 0.3 * np.sin(2 * np.pi * 500 * t[rate * 8 : rate * 14])
    ducked = sidechain_duck(bed, voice, rate, params)

    def level(a, b):
        return 20 * np.log10(np.sqrt(np.mean(ducked[a * rate : b * rate] ** 2)) / np.sqrt(np.mean(bed**2)))

    assert abs(level(2, 7)) < 0.5 and abs(level(16, 20)) < 0.5  # untouched away from the voice
    assert level(9, 13) < -10  # ducked under it


def test_the_preview_is_at_podcast_loudness_and_crossfades_between_tracks(params):
    import pyloudnorm

    from bgmfit.timeline.preview import render_preview

    rate = 22050
    t = np.arange(rate * 60) / rate
    episode = (0.2 * np.sin(2 * np.pi * 300 * t) * (np.sin(2 * np.pi * 0.5 * t) > 0)).astype(np.float32)
    tones = {"low": np.sin(2 * np.pi * 110 * t[: rate * 8]), "high": np.sin(2 * np.pi * 880 * t[: rate * 8])}
    scenes = [
        {"start_seconds": 0.0, "end_seconds": 30.0, "track": {"track_id": "low"}, "offset_seconds": 2.0},
        {"start_seconds": 30.0, "end_seconds": 60.0, "track": {"track_id": "high"}, "offset_seconds": 0.0},
    ]
    mix, levels = render_preview(episode, rate, scenes, lambda i: tones[i].astype(np.float32), params)
    assert mix.shape == episode.shape and np.abs(mix).max() <= 1.0
    assert pyloudnorm.Meter(rate).integrated_loudness(mix.astype(np.float64)) == pytest.approx(-16.0, abs=0.5)
    assert all(m["ducking_db"] < -1.0 for m in levels)  # the episode's tone ducks both tracks
    assert all(m["bgm_under_voice_db"] < -params.bed_db for m in levels)
    # No gap at the change: the bed never falls silent around 30 s (equal-power crossfade).
    around = mix[int(29 * rate) : int(31 * rate)] - 0  # the episode's tone is off half the time
    quiet = [np.sqrt(np.mean(around[i : i + 1000] ** 2)) for i in range(0, around.size - 1000, 1000)]
    assert min(quiet) > 1e-3


def test_the_preview_reads_an_episode_on_disk_a_block_at_a_time(params, tmp_path, counted_reads):
    from bgmfit.timeline.preview import render_preview

    rate = 8000
    t = np.arange(rate * 660) / rate  # 11 minutes: more than one 10-minute loudness block
    episode = (0.2 * np.sin(2 * np.pi * 300 * t) * (np.sin(2 * np.pi * 0.05 * t) > 0)).astype(np.float32)
    episode.tofile(tmp_path / "episode.f32")
    scenes = [{"start_seconds": 0.0, "end_seconds": 660.0, "track": {"track_id": "a"}, "offset_seconds": 0.0}]
    tone = np.sin(2 * np.pi * 110 * t[: rate * 8]).astype(np.float32)
    on_disk, _ = render_preview(counted_reads(tmp_path / "episode.f32"), rate, scenes, lambda i: tone, params)
    in_memory, _ = render_preview(episode, rate, scenes, lambda i: tone, params)
    assert 0 < counted_reads.largest < episode.size, "never read whole"
    np.testing.assert_array_equal(on_disk, in_memory)


def test_timeline_params_are_checked(params):
    from bgmfit.config import params_from_dict

    values = params.model_dump()
    with pytest.raises(ConfigError, match="max_scene_seconds: must be at least twice min_scene_seconds"):
        params_from_dict("timeline", TimelineParams, values | {"max_scene_seconds": 30.0})
    with pytest.raises(ConfigError, match=r"timeline\.min_scene_seconds"):
        params_from_dict("timeline", TimelineParams, values | {"min_scene_seconds": 5.0})


def test_an_episode_on_disk_is_read_a_block_at_a_time_with_the_answers_of_one_in_memory(
    params, features_params, tmp_path, rng, counted_reads
):
    from bgmfit.features.fusion import NormStats, analyse
    from bgmfit.timeline.activity import BLOCK_SECONDS, second_kinds
    from bgmfit.timeline.episode import analyse_episode
    from tests.signals import SR, harmonic_tone

    # 65 s: a tone, noise, a pause, a tone again.
    y = np.concatenate(
        [
            harmonic_tone(220.0, 25.0),
            (0.1 * rng.standard_normal(20 * SR)).astype(np.float32),
            np.zeros(5 * SR, np.float32),
            harmonic_tone(330.0, 15.0),
        ]
    )
    y.tofile(tmp_path / "episode.f32")
    wave = counted_reads(tmp_path / "episode.f32")
    clips = [analyse(y[s * SR : (s + 10) * SR], features_params) for s in (0, 30, 50)]
    norm = NormStats.fit(
        features_params, np.stack([c.fused for c in clips]), np.stack([c.mfcc_frames for c in clips])
    )
    on_disk = analyse_episode(wave, features_params, norm, workers=1)
    window = int(features_params.clip_seconds * SR)
    assert counted_reads.largest == window
    in_memory = analyse_episode(y, features_params, norm, workers=1)
    np.testing.assert_array_equal(on_disk.fused, in_memory.fused)
    np.testing.assert_array_equal(on_disk.rows, in_memory.rows)
    assert on_disk.duration == in_memory.duration == 65.0
    kinds = second_kinds(wave, SR, params, features_params.loudness_lufs)
    np.testing.assert_array_equal(kinds, second_kinds(y, SR, params, features_params.loudness_lufs))
    assert list(kinds[46:49]) == ["silence"] * 3 and kinds[10] == "music"
    assert counted_reads.largest <= BLOCK_SECONDS * SR
