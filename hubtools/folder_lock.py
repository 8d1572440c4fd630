"""One process at a time in a data folder (the local hub's, the studio's), held with a lock file inside it."""

from __future__ import annotations

from pathlib import Path

from filelock import FileLock, Timeout

from hubtools.errors import HubtoolsError


def hold_folder(lock_file: Path, busy: HubtoolsError) -> FileLock:
    """The lock ``lock_file``, taken without waiting; ``busy`` is raised when another process holds it."""
    lock = FileLock(lock_file)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise busy from None
    return lock
