"""The demo corpus: real scores, labels from the corpus, audible renders, narration."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from bgmfit.audio import load_audio, rms_dbfs
from bgmfit.corpus.build import render_work, select_works
from bgmfit.corpus.narration import NarrationError, narrate
from bgmfit.corpus.render import render_voices
from bgmfit.corpus.scores import Voice
from bgmfit.corpus.works import STYLES, abc_header, discover_works, normalise_rhythm, split_abc_book
from bgmfit.errors import ConfigError
from bgmfit.features import tonality
from bgmfit.features.spectrum import compute_spectrum
from tests.signals import REPO, SR


def test_rhythm_headers_map_to_style_labels():
    assert normalise_rhythm("Slip Jig.") == "slip_jig"
    assert normalise_rhythm("slipjig") == "slip_jig"
    assert normalise_rhythm("double jig") == "jig"
    assert normalise_rhythm("Reel") == "reel"


def test_abc_books_split_into_tunes_with_their_headers():
    book = "X:1\nT:One\nR:reel\nK:D\nABcd|\n\nX:2\nT:Two\nR:jig\nK:G\nGAB|\n"
    tunes = split_abc_book(book)
    assert [n for n, _ in tunes] == [1, 2]
    assert abc_header(tunes[1][1], "R") == "jig" and abc_header(tunes[0][1], "T") == "One"


@pytest.mark.parametrize("style", sorted(STYLES))
def test_every_style_finds_works_in_the_corpus(style):
    works = discover_works(style)
    assert len(works) >= 30
    assert len({w.work_id for w in works}) == len(works)
    assert all(w.style == style and w.source.startswith("music21:") for w in works)


def test_dance_styles_come_from_the_books_rhythm_header():
    for work in discover_works("hornpipe")[:20]:
        assert normalise_rhythm(abc_header(work.abc_tune, "R")) == "hornpipe"


def test_unknown_style_names_the_known_ones(tiny_fetch_params):
    params = tiny_fetch_params.model_copy(update=dict(styles=("chorale", "polka")))
    with pytest.raises(ConfigError, match=r"unknown style 'polka' \(known: chorale, mass"):
        select_works(params)


def test_work_selection_is_seeded(tiny_fetch_params):
    first = [w.work_id for w in select_works(tiny_fetch_params)]
    assert first == [w.work_id for w in select_works(tiny_fetch_params)]
    other = [w.work_id for w in select_works(tiny_fetch_params.model_copy(update=dict(seed=99)))]
    assert first != other and len(first) == 3 * len(tiny_fetch_params.styles)


def test_rendered_a4_notes_sound_at_a():
    voice = Voice(
        np.array([0.0, 0.5, 1.0]), np.array([0.45, 0.45, 0.9]), np.array([69, 69, 69]), np.array([90, 90, 90])
    )
    audio = render_voices([(voice, 73)], 0.0, 2.0, SR)  # flute
    assert audio.size == 2 * SR and rms_dbfs(audio) > -40
    profile = tonality.chroma(compute_spectrum(audio, SR, 2048, 512, 128)).mean(axis=0)
    assert tonality.PITCH_CLASSES[int(np.argmax(profile))] == "A"
    silent = render_voices([(voice, 73)], 10.0, 1.0, SR)  # a window after the last note
    assert rms_dbfs(silent) == float("-inf")


def _chorale(params):
    return next(w for w in discover_works("chorale") if w.work_id == "chorale-bach-bwv269")


def test_a_chorale_gives_foreground_bgm_and_narration(tiny_fetch_params, tmp_path: Path):
    clips, rejected = render_work(_chorale(tiny_fetch_params), tiny_fetch_params, tmp_path)
    assert rejected == []
    assert sorted(c.role for c in clips) == ["bgm", "foreground", "narration"]
    for clip in clips:
        y = load_audio(tmp_path / clip.path, SR)
        assert abs(y.size / SR - tiny_fetch_params.clip_seconds) < 0.01 or clip.role == "narration"
        assert rms_dbfs(y) > tiny_fetch_params.silence_dbfs
    assert {c.work_id for c in clips} == {"chorale-bach-bwv269"}


def test_silent_renders_are_rejected_with_a_reason(tiny_fetch_params, tmp_path: Path):
    strict = tiny_fetch_params.model_copy(update=dict(silence_dbfs=-0.5))  # nothing real is that loud
    clips, rejected = render_work(_chorale(strict), strict, tmp_path)
    assert clips == [] and len(rejected) == 3
    assert all(
        r.reason.startswith("silent render:") and "fetch.silence_dbfs -0.5" in r.reason for r in rejected
    )
    assert not any(tmp_path.rglob("*.flac"))


def test_narration_speaks_and_unknown_voice_is_refused():
    speech, rate = narrate("Guten Morgen, wie geht es dir heute?", "de")
    assert rate == SR and speech.size > SR and rms_dbfs(speech) > -40
    with pytest.raises(NarrationError, match="no voice 'xx-nowhere'"):
        narrate("hello", "xx-nowhere")


def test_narration_does_not_depend_on_what_was_spoken_before():
    """eSpeak NG keeps state between utterances (its pitch flutter runs on): the same text once
    came out differently each time it was spoken in a process, so no two fetches were alike."""
    text = "Ein feste Burg ist unser Gott, ein gute Wehr und Waffen"
    first, _ = narrate(text, "de", "m1")
    narrate("Kyrie eleison", "la", "f3")
    again, _ = narrate(text, "de", "m1")
    assert first.size > 0
    np.testing.assert_array_equal(first, again)


def test_repository_default_corpus_meets_the_style_floor():
    from bgmfit.config import FetchParams, load_params

    params = load_params("fetch", FetchParams, REPO / "params.yaml")
    assert len(params.styles) >= 8
    for style in params.styles:
        available = min(len(discover_works(style)), params.works_per_style)
        clips_per_work = 2 if STYLES[style].polyphonic else 1
        assert available * clips_per_work >= 60, style


def test_tied_notes_become_one_sounding_note():
    from bgmfit.corpus.scores import parse_work
    from bgmfit.corpus.works import WorkRef

    tune = "X:1\nT:tied\nM:4/4\nL:1/8\nR:reel\nK:C\nA4-A4|B2c2d4|]\n"
    parsed = parse_work(WorkRef("reel-test", "reel", "test", "", tune))
    (voice,) = parsed.voices
    seconds_per_quarter = 60.0 / parsed.quarter_bpm
    assert voice.pitches.tolist() == [69, 71, 72, 74]
    np.testing.assert_allclose(voice.durations / seconds_per_quarter, [4.0, 1.0, 1.0, 2.0])
    np.testing.assert_allclose(voice.onsets / seconds_per_quarter, [0.0, 4.0, 5.0, 6.0])


def test_failed_narration_is_rejected_with_its_reason_and_music_still_renders(
    tiny_fetch_params, tmp_path: Path, monkeypatch
):
    # A real eSpeak NG failure: a voice it does not have.
    monkeypatch.setitem(STYLES, "chorale", dataclasses.replace(STYLES["chorale"], language="xx-nowhere"))
    clips, rejected = render_work(_chorale(tiny_fetch_params), tiny_fetch_params, tmp_path)
    assert sorted(c.role for c in clips) == ["bgm", "foreground"]
    assert [r.track_id for r in rejected] == ["chorale-bach-bwv269-narration"]
    assert rejected[0].reason.startswith("narration failed: eSpeak NG has no voice 'xx-nowhere+")
