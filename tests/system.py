"""What tests need from the machine: Debian programs (installed on first use where allowed), free
ports on 127.0.0.1, and servers that a test starts and stops."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx


def debian_program(pattern: str, package: str) -> Path | None:
    """The newest file matching ``pattern`` (a glob, or a bare name looked up on PATH).

    When there is none, Debian's ``package`` is installed first, if this user is root and
    ``apt-get`` exists. Returns ``None`` where the program cannot be had.
    """

    def find() -> Path | None:
        found = sorted(glob.glob(pattern)) if "/" in pattern else [shutil.which(pattern)]
        return Path(found[-1]) if found and found[-1] else None

    if (program := find()) is not None or os.geteuid() != 0 or not shutil.which("apt-get"):
        return program
    subprocess.run(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", package],
        capture_output=True,
        timeout=900,
        env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"),
    )
    return find()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def local_server(
    command: list[str], ready_url: str, log: Path, timeout: float = 120, **popen
) -> Iterator[subprocess.Popen]:
    """Run ``command`` until the block ends, once ``ready_url`` answers 200; stop it by process group.

    Its output goes to ``log`` (a file, not a pipe: nobody reads a pipe while tests run, and a
    full one would block the server), and the tail of it is in the failure when it never gets ready.
    """
    with log.open("w") as output:
        server = subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, start_new_session=True, **popen
        )
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    if httpx.get(ready_url, timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert server.poll() is None, f"{command} exited early:\n{log.read_text()[-3000:]}"
                late = time.monotonic() > deadline
                assert not late, f"{ready_url} not ready in {timeout:.0f} s:\n{log.read_text()[-3000:]}"
                time.sleep(0.5)
            yield server
        finally:
            try:
                os.killpg(server.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass  # it exited early; the assertion above says why
            server.wait(timeout=30)
