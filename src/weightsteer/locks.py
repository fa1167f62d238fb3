"""OS locks: one writer per run folder, and one builder per stage output.

Two runs writing one folder would both "succeed", each stage's last writer winning, and the stamps
would vouch for a mix of both: a second process writing the same run folder is refused at once.
Runs of different behaviours write different folders but share the model's unsteered rows (MMLU,
out/<model>/base/): a stage output is built under its own lock, so a second run that needs the same
output waits for the first and then finds it up to date, instead of building it again and removing
the first one's half-written temporary. An advisory lock (flock) is released by the operating
system when its process ends, however it ends, so a killed run never leaves one held.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from .errors import WeightsteerError

LOCK_NAME = ".weightsteer.lock"
LOCK_SUFFIX = ".lock"


def is_lock_file(path: str | os.PathLike) -> bool:
    """A folder's or an output's lock file: each process's own, never an output to copy or compare."""
    name = Path(path).name
    return name.startswith(".") and name.endswith(LOCK_SUFFIX)


def _lock_fd(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)


def _claim(fd: int) -> None:
    """Record this process as the holder (read by whoever finds the lock taken)."""
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)


def _holder(fd: int) -> str:
    return os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold the folder's lock for the block; refuse with one line when another process holds it."""
    folder = Path(folder)
    fd = _lock_fd(folder / LOCK_NAME)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise WeightsteerError(f"another weightsteer process (pid {_holder(fd)}) is writing to '{folder}': wait for "
                                   "it to finish, or give this one another --out") from None
        _claim(fd)
        yield folder
    finally:
        os.close(fd)  # closing releases the lock


@contextlib.contextmanager
def output_lock(output: str | os.PathLike, on_wait=None) -> Iterator[Path]:
    """Hold the lock of one stage output (.<name>.lock beside it) for the block, waiting while another
    process holds it; on_wait(pid) is called once before waiting."""
    output = Path(output)
    fd = _lock_fd(output.parent / f".{output.name}{LOCK_SUFFIX}")
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait(_holder(fd))
            fcntl.flock(fd, fcntl.LOCK_EX)
        _claim(fd)
        yield output
    finally:
        os.close(fd)
