"""Thin pipeline stages: load params, call library code, write outs and metrics.

Each module has the name of its DVC stage, its ``params.yaml`` section and its
CLI sub-command. ``main(params_path)`` is what ``bgmfit <stage>`` runs: it loads
the sections the stage reads (and ``dvc.yaml`` declares) and calls ``run``.
"""

from __future__ import annotations

import os


def worker_count(requested: int) -> int:
    """Worker processes to use: ``requested``, or one per CPU core when it is 0."""
    return requested or os.cpu_count() or 1
