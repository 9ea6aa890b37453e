"""An episode file in, a timeline JSON and a preview mix out: what ``bgmfit timeline`` runs."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

from bgmfit.audio import encode, load_audio
from bgmfit.config import TimelineParams
from bgmfit.errors import BgmfitError
from bgmfit.files import RAW, write_json
from bgmfit.index import Catalogue
from bgmfit.timeline.episode import plan_episode
from bgmfit.timeline.preview import render_preview

#: Preview formats, by the suffix of the file asked for: (container, codec, sample rate or None).
#: Opus has no 22.05 kHz mode, so an OGG preview is resampled to 24 kHz.
PREVIEW_FORMATS = {".mp3": ("mp3", "libmp3lame", None), ".ogg": ("ogg", "libopus", 24000)}


def library_file(catalogue: Catalogue, track_id: str, raw_dir: Path = RAW) -> Path:
    """Where a library track's audio is: under ``data/raw`` (the demo library) or the library folder."""
    library = catalogue.stamp["library"]
    root = raw_dir if library == "demo" else Path(library)
    return root / catalogue.tracks[catalogue.row_of[track_id]]["path"]


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
    """Decode ``path``, plan its timeline, write it to ``out`` (JSON) and, if asked, the preview mix."""
    if preview is not None and preview.suffix.lower() not in PREVIEW_FORMATS:
        raise BgmfitError(f"--preview {preview}: the mix is written as {' or '.join(PREVIEW_FORMATS)}")
    started = time.perf_counter()
    rate = catalogue.features.sample_rate
    y = load_audio(path, rate)
    timeline = plan_episode(y, catalogue, match_model, params, workers, name=path.name)
    timeline["seconds_to_plan"] = round(time.perf_counter() - started, 1)
    timeline["models"] = versions
    timeline["library"] = catalogue.stamp["library"]
    timeline["params"] = params.model_dump()
    if preview is not None:
        print("timeline: rendering the preview mix", file=sys.stderr)
        mix, levels = render_preview(
            y, rate, timeline["scenes"], lambda t: load_audio(library_file(catalogue, t), rate), params
        )
        for scene, measured in zip(timeline["scenes"], levels, strict=True):
            scene.update(measured)
        preview.parent.mkdir(parents=True, exist_ok=True)
        preview.write_bytes(encode_preview(mix, rate, preview.suffix.lower()))
        timeline["preview"] = str(preview)
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
