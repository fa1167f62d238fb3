"""One writer per run folder: a second process writing the same folder is refused at once.

Two runs writing one folder would both "succeed", each stage's last writer winning, and the stamps
would vouch for a mix of both. An advisory lock (flock) on a file in the folder is released by the
operating system when its process ends, however it ends, so a killed run never leaves it held.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from .errors import WeightsteerError

LOCK_NAME = ".weightsteer.lock"


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold the folder's lock for the block; refuse with one line when another process holds it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise WeightsteerError(f"another weightsteer process (pid {holder}) is writing to '{folder}': wait for it "
                                   "to finish, or give this one another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield folder
    finally:
        os.close(fd)  # closing releases the lock
