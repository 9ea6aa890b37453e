"""What every stage does the same way: write metrics JSON, start from clean outs."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` as indented, key-sorted JSON, creating parent folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def fresh_dir(path: Path) -> Path:
    """Empty the stage's own output folder (DVC does the same before it runs a stage)."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def default_workers(requested: int) -> int:
    """Worker processes to use: ``requested``, or one per CPU core when it is 0."""
    return requested or os.cpu_count() or 1
