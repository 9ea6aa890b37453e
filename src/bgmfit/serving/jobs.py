"""The temp folder that holds a server process's timeline jobs, and the sweep of dead servers' ones.

A job keeps its decoded episode (an hour is ~320 MB) and its previews. The folder
goes when its process shuts down or exits; one that was killed (SIGKILL, the OOM
killer) cannot remove it. So each folder is named after the process that made it,
and a new one first removes the folders of processes that are gone.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

PREFIX = "bgmfit-jobs-"
_OWNED = re.compile(rf"^{PREFIX}(\d+)-")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def remove_orphans(parent: Path | None = None) -> list[Path]:
    """Remove the job folders under ``parent`` (the temp folder) whose process has ended; return them.

    Only folders named by :func:`jobs_folder` count. A folder whose process id has since been
    reused by a live process is kept: it is removed once that one ends too.
    """
    removed = []
    for folder in Path(parent or tempfile.gettempdir()).glob(f"{PREFIX}*"):
        owner = _OWNED.match(folder.name)
        if owner and folder.is_dir() and not _alive(int(owner.group(1))):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def jobs_folder() -> tempfile.TemporaryDirectory:
    """This process's jobs folder, made after removing those that dead processes left."""
    remove_orphans()
    return tempfile.TemporaryDirectory(prefix=f"{PREFIX}{os.getpid()}-", ignore_cleanup_errors=True)
