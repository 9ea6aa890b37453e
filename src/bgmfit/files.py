"""Where the pipeline's files live, and the one way they are written and read as JSON.

Each stage's outs in ``dvc.yaml`` are these paths, relative to the repository root.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from bgmfit.errors import BgmfitError

RAW = Path("data/raw")  # fetch: audio + manifest.csv
FEATURES = Path("data/features")  # features: fused.npy, mfcc_frames.npy, tracks.csv, norm_stats.json
MODELS = Path("models")  # train_<network>: models/<network>/; register: champions.json
METRICS = Path("metrics")  # every stage's <stage>.json; evaluate: <network>.json
PLOTS = Path("plots")  # evaluate
CHAMPIONS = MODELS / "champions.json"  # register: the @champion version of each network
INDEX = MODELS / "index"  # index: the catalogue embeddings and their stamp
SERVING = MODELS / "serving.json"  # package: what the service loads
BENTO = MODELS / "bento.json"  # package: the built bento's tag


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` as indented, key-sorted JSON, creating parent folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def read_json(path: Path, hint: str) -> dict[str, Any]:
    """The JSON object at ``path``; a missing or torn file is a BgmfitError that ends with ``hint``."""
    try:
        payload = json.loads(path.read_text())
    except FileNotFoundError:
        raise BgmfitError(f"{path} is missing; {hint}") from None
    except (OSError, ValueError) as exc:
        raise BgmfitError(f"{path}: not readable JSON ({exc}); {hint}") from None
    if not isinstance(payload, dict):
        raise BgmfitError(f"{path}: expected a JSON object; {hint}")
    return payload


def fresh_dir(path: Path) -> Path:
    """Empty a stage's own output folder (DVC does the same before it runs a stage)."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path
