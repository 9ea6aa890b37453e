"""An episode made of recordings no one here wrote: narration and music, with known scenes.

Speech: the voiced tutorial of Warzone 2100 (Debian's ``warzone2100-data``, GPL; 80 OGG
clips inside its ``base.wz`` archive, about 4 minutes of clean speech, reused in order). Music: Endgame:
Singularity's soundtrack (``singularity-music``). Each package is installed by the test that
needs it (as root with apt-get) or the test is skipped with the reason.
"""

from __future__ import annotations

import glob
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bgmfit.audio import load_audio
from tests.integration.test_real_recordings import MUSIC
from tests.system import debian_program

WARZONE = "/usr/share/games/warzone2100/base.wz"
RATE = 22050


@dataclass
class Episode:
    path: Path
    scenes: list[tuple[str, float, float]]  # (speech | music, start s, end s), as it was made
    seconds: float


def speech_clips(folder: Path) -> list[Path]:
    """Warzone 2100's spoken tutorial, extracted into ``folder``; skip without it.

    Not its ``sequenceaudio`` briefings: they are mostly music and effects (silero-vad hears
    speech in a quarter of their frames, against 95 % of the tutorial's).
    """
    if debian_program(WARZONE, "warzone2100-data") is None:
        pytest.skip("Debian's warzone2100-data (real speech) is not installed; installing it needs root")
    with zipfile.ZipFile(WARZONE) as archive:
        names = [n for n in archive.namelist() if n.startswith("audio/tutorial/") and n.endswith(".ogg")]
        archive.extractall(folder, names)
    return sorted(folder.rglob("*.ogg"))


def music_files() -> list[str]:
    if debian_program(MUSIC, "singularity-music") is None:
        pytest.skip("Debian's singularity-music is not installed, and installing it needs root and apt-get")
    return sorted(glob.glob(MUSIC))


def build_episode(folder: Path, minutes: float, seed: int = 0) -> Episode:
    """Narration scenes of 60-120 s (speech clips with short pauses), each second one followed by
    30 s of a different piece of music, every scene 4 s of silence apart."""
    rng = np.random.default_rng(seed)
    speech = [load_audio(p, RATE) for p in speech_clips(folder / "speech")]
    music = [load_audio(p, RATE) for p in music_files()[:6]]
    parts, scenes, total, clip, k = [], [], 0, 0, 0
    gap = np.zeros(4 * RATE, dtype=np.float32)
    while total < minutes * 60 * RATE:
        block, target = [], rng.uniform(60, 120) * RATE
        while sum(map(len, block)) < target:
            block += [speech[clip % len(speech)], np.zeros(int(0.4 * RATE), np.float32)]
            clip += 1
        for kind, audio in [("speech", np.concatenate(block))] + (
            [("music", 0.5 * music[(k // 2) % len(music)][20 * RATE : 50 * RATE])] if k % 2 == 0 else []
        ):
            scenes.append((kind, total / RATE, (total + audio.size) / RATE))
            parts += [audio, gap]
            total += audio.size + gap.size
        k += 1
    y = np.concatenate(parts)[: int(minutes * 60 * RATE)]
    scenes = [(kind, a, min(b, y.size / RATE)) for kind, a, b in scenes if a < y.size / RATE]
    path = folder / f"episode-{minutes:g}min.flac"
    sf.write(path, y, RATE, subtype="PCM_16")
    return Episode(path, scenes, y.size / RATE)
