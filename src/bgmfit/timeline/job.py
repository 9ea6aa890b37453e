"""An episode file in, a timeline JSON and a preview mix out: what ``bgmfit timeline`` runs."""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bgmfit.audio import Waveform, decode_to_file, encode, load_audio
from bgmfit.config import TimelineParams
from bgmfit.errors import BgmfitError
from bgmfit.files import RAW, write_json
from bgmfit.index import Catalogue
from bgmfit.timeline.episode import plan_episode
from bgmfit.timeline.preview import render_preview

#: Preview formats, by the suffix of the file asked for: (container, codec, sample rate or None).
#: Opus has no 22.05 kHz mode, so an OGG preview is resampled to 24 kHz.
PREVIEW_FORMATS = {".mp3": ("mp3", "libmp3lame", None), ".ogg": ("ogg", "libopus", 24000)}


def library_root(catalogue: Catalogue, raw_dir: Path = RAW) -> Path:
    """The folder a library's track paths are relative to: ``data/raw`` (demo) or the library folder."""
    library = catalogue.stamp["library"]
    return raw_dir if library == "demo" else Path(library)


def timeline_of(
    y: Waveform,
    catalogue: Catalogue,
    match_model: torch.nn.Module,
    versions: dict[str, int],
    params: TimelineParams,
    name: str,
    root: Path,
    preview: Path | None = None,
    workers: int = 1,
    progress=None,
) -> dict:
    """The timeline of a decoded episode and, if ``preview`` is given, its mix written there.

    ``root`` is where the library's audio is (:func:`library_root`); only the preview reads it.
    """
    if preview is not None and preview.suffix.lower() not in PREVIEW_FORMATS:
        raise BgmfitError(f"preview {preview}: the mix is written as {' or '.join(PREVIEW_FORMATS)}")
    started = time.perf_counter()
    rate = catalogue.features.sample_rate
    timeline = plan_episode(y, catalogue, match_model, params, workers, name=name, progress=progress)
    timeline["seconds_to_plan"] = round(time.perf_counter() - started, 1)
    timeline["models"] = versions
    timeline["library"] = catalogue.stamp["library"]
    timeline["params"] = params.model_dump()
    if preview is not None:
        print("timeline: rendering the preview mix", file=sys.stderr)
        if progress:
            progress("preview", 0.0)
        write_preview(y, rate, timeline, catalogue, root, params, preview)
    return timeline


def write_preview(
    y: Waveform,
    rate: int,
    timeline: dict,
    catalogue: Catalogue,
    root: Path,
    params: TimelineParams,
    preview: Path,
) -> None:
    """Render ``timeline``'s mix into ``preview`` and record each scene's measured levels in it."""

    def track_audio(track_id: str) -> np.ndarray:
        path = root / catalogue.tracks[catalogue.row_of[track_id]]["path"]
        if not path.is_file():
            raise BgmfitError(f"the preview needs the library's audio, and {path} is not there")
        return load_audio(path, rate)

    mix, levels = render_preview(y, rate, timeline["scenes"], track_audio, params)
    for scene, measured in zip(timeline["scenes"], levels, strict=True):
        scene.update(measured)
    preview.parent.mkdir(parents=True, exist_ok=True)
    preview.write_bytes(encode_preview(mix, rate, preview.suffix.lower()))
    timeline["preview"] = str(preview)


def swap_tracks(timeline: dict, choices: dict[int, str]) -> dict:
    """``timeline`` with scene ``i``'s track replaced by ``choices[i]``, one of that scene's alternatives.

    The replaced track becomes an alternative in its place. Raises ``BgmfitError`` naming the
    scene or the track when a choice is not one the scene offers.
    """
    scenes = timeline["scenes"]
    for index, track_id in choices.items():
        if not 0 <= index < len(scenes):
            raise BgmfitError(f"scene {index}: the timeline has scenes 0..{len(scenes) - 1}")
        scene = scenes[index]
        offered = {a["track_id"]: a for a in scene["alternatives"]}
        if scene["track"] is not None and track_id == scene["track"]["track_id"]:
            continue
        if track_id not in offered:
            raise BgmfitError(
                f"scene {index}: {track_id!r} is not one of its alternatives ({', '.join(offered) or 'none'})"
            )
        chosen = offered[track_id]
        if scene["track"] is not None:
            old = scene["track"] | {"fit": scene["fit"], "offset_seconds": scene["offset_seconds"]}
            scene["alternatives"] = [old if a["track_id"] == track_id else a for a in scene["alternatives"]]
        else:
            scene["alternatives"] = [a for a in scene["alternatives"] if a["track_id"] != track_id]
        scene["track"] = {k: v for k, v in chosen.items() if k not in ("fit", "offset_seconds")}
        scene["fit"], scene["offset_seconds"] = chosen["fit"], chosen["offset_seconds"]
        scene["bgm_level_lu"] = -timeline["params"]["bed_db"]
        scene["note"] = "chosen by hand"
    used = [s["track"]["track_id"] if s["track"] else None for s in scenes]
    run_starts = [i for i, t in enumerate(used) if t is not None and (i == 0 or used[i - 1] != t)]
    timeline["switches"] = max(0, len(run_starts) - 1)
    timeline["tracks_used"] = len({t for t in used if t is not None})
    return timeline


def score_file(
    path: Path,
    catalogue: Catalogue,
    match_model: torch.nn.Module,
    versions: dict[str, int],
    params: TimelineParams,
    out: Path,
    preview: Path | None = None,
    workers: int = 1,
) -> dict:
    """Decode ``path``, plan its timeline, write it to ``out`` (JSON) and, if asked, the preview mix.

    The episode is decoded into a temporary file and read from it a block at a time, so that the
    timeline of hours holds only blocks in memory (the preview needs the episode whole).
    """
    root = library_root(catalogue)
    with tempfile.TemporaryDirectory(prefix="bgmfit-episode-") as tmp:
        y = decode_to_file(path, Path(tmp) / "episode.f32", catalogue.features.sample_rate)
        timeline = timeline_of(y, catalogue, match_model, versions, params, path.name, root, preview, workers)
    write_json(out, timeline)
    return timeline


def encode_preview(mix: np.ndarray, rate: int, suffix: str) -> bytes:
    """The mix as an MP3 (128 kbit/s) or an Ogg Opus (96 kbit/s) file's bytes."""
    container, codec, own_rate = PREVIEW_FORMATS[suffix]
    if own_rate and own_rate != rate:
        import soxr

        mix, rate = soxr.resample(mix, rate, own_rate).astype(np.float32), own_rate
    return encode(mix, rate, container, codec, 128_000 if codec == "libmp3lame" else 96_000)


def describe(timeline: dict) -> str:
    """A few lines for a person: each scene, its kind, its track and from where."""
    lines = [
        f"{timeline['episode']}: {timeline['duration_seconds'] / 60:.1f} min, "
        f"{len(timeline['scenes'])} scenes, "
        f"{timeline['tracks_used']} track(s), {timeline['switches']} change(s) of track"
    ]
    for s in timeline["scenes"]:
        span = f"{_clock(s['start_seconds'])}-{_clock(s['end_seconds'])}"
        if s["track"] is None:
            lines.append(f"  {span}  {s['kind']:<7}  no BGM ({s['note']})")
        else:
            name = s["track"]["title"] or s["track"]["track_id"]
            lines.append(
                f"  {span}  {s['kind']:<7}  {name} from {_clock(s['offset_seconds'])}, fit {s['fit']:.2f}"
            )
    return "\n".join(lines)


def _clock(seconds: float) -> str:
    seconds = int(np.floor(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
