"""Where runs go and what every run records about its provenance."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from bgmfit.errors import BgmfitError

#: SQLite in the repository root, with artefacts beside it; MLFLOW_TRACKING_URI overrides it.
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


def tracking_uri() -> str:
    """The tracking store: ``$MLFLOW_TRACKING_URI``, else :data:`DEFAULT_TRACKING_URI`."""
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def require_tracking_store() -> None:
    """Refuse to read a local SQLite tracking store that does not exist, naming where it was looked for.

    MLflow creates an empty store wherever its URI points. A command that only reads the
    registry, run outside the project folder (the default store is relative to it), would
    then find no model registered and send the user to rebuild what is not broken.

    Raises
    ------
    BgmfitError
        If the store is a SQLite file that does not exist.
    """
    uri = tracking_uri()
    if not uri.startswith("sqlite:///"):
        return  # a server or a database: it says itself when it cannot be reached
    path = Path(uri.removeprefix("sqlite:///"))
    if not path.is_file():
        raise BgmfitError(
            f"no MLflow tracking store at {path.resolve()} ({uri}); run bgmfit in the project folder, "
            "where `dvc repro` ran, or set MLFLOW_TRACKING_URI to its store"
        )


def use_tracking_store() -> str:
    """Point MLflow at the project's tracking store (see :func:`tracking_uri`); return its URI.

    The one place that sets it: every stage and command calls this before it talks to MLflow.
    """
    import mlflow  # here, not at the top: the CLI imports this module, and MLflow costs 1.7 s

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    return uri


def without_password(text: str) -> str:
    """``text`` with the tracking URI's password, if it has one, shown as ``***``.

    For messages that name the store: a PostgreSQL URI often carries the password,
    and such messages end up in terminals and CI logs.
    """
    password = urlsplit(tracking_uri()).password
    return text.replace(f":{password}@", ":***@") if password else text


def git_commit() -> str:
    """The checked-out commit (with ``-dirty`` when tracked files changed), or ``unknown`` outside git."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit


def dvc_output_hash(output: str, lock: Path = Path("dvc.lock")) -> str:
    """The md5 that ``dvc.lock`` records for a stage output (e.g. ``data/features``), or ``unknown``."""
    if not lock.is_file():
        return "unknown"
    stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    for stage in stages.values():
        for out in stage.get("outs", []):
            if out.get("path") == output:
                return str(out.get("md5", "unknown"))
    return "unknown"


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` of this machine is still running (a zombie is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (killed, not yet reaped by its parent) is gone for our purposes
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True
