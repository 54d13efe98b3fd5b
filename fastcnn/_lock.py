"""An advisory lock on a checkpoint folder, so that two training runs never share one.

The lock is a file, ``fastcnn.lock``, holding the pid, host and start time of the run
that owns the folder, locked with ``flock`` for as long as the run lasts. The kernel
releases ``flock`` when its process dies, however it dies, so a lock file left behind by
a killed run (its pid no longer running) is stale: the next run takes it over and says
so. A second run while the first is alive is refused with a :class:`LockedError` naming
the first run's pid. The file is removed when the run ends normally.

POSIX only (``fcntl``); elsewhere :func:`lock_folder` locks nothing.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover (Windows)
    fcntl = None

LOCK_NAME = "fastcnn.lock"


class LockedError(RuntimeError):
    """The folder is locked by another live run (``pid``, ``host``: its owner's)."""

    def __init__(self, message: str, pid: int | None, host: str | None):
        super().__init__(message)
        self.pid, self.host = pid, host


def _read_owner(fd: int) -> dict:
    """The ``key: value`` lines of an open lock file (``{}`` if empty or unreadable)."""
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 4096).decode("utf-8", "replace")
    owner = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        owner[key.strip()] = value.strip()
    return owner


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


@contextlib.contextmanager
def lock_folder(folder: str | os.PathLike, log=None) -> Iterator[Path | None]:
    """Hold the lock of ``folder`` (created if missing) for the ``with`` block.

    Yields the lock file's path. A folder created here is removed again if the run
    leaves it empty. Raises :class:`LockedError` if another live process
    holds it, ``OSError`` if the folder cannot be created or written. A stale lock (its
    process gone) is taken over, with one line to ``log`` naming the dead pid.
    """
    folder = Path(folder)
    if fcntl is None:  # pragma: no cover
        yield None
        return
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _read_owner(fd)
            os.close(fd)
            pid = int(owner["pid"]) if owner.get("pid", "").isdigit() else None
            since = owner.get("started", "an unknown time")
            raise LockedError(
                f"{folder} is in use by another training run (pid {pid or 'unknown'} on "
                f"{owner.get('host', 'an unknown host')}, started {since}; its lock is "
                f"{path}); wait for it to finish, or use another checkpoint folder",
                pid,
                owner.get("host"),
            ) from None
        # The owner before us may have removed the file between our open and our lock:
        # then we hold a lock on a deleted file, and must start again.
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        previous = _read_owner(fd)
        stale = previous.get("pid", "")
        if stale.isdigit() and log is not None:
            state = "no longer running" if not _pid_running(int(stale)) else "not holding it"
            log(
                f"took over the stale lock {path} of pid {stale} "
                f"({state}; started {previous.get('started', '?')})"
            )
        record = (
            f"pid: {os.getpid()}\nhost: {socket.gethostname()}\n"
            f"started: {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
            f"command: {' '.join(sys.argv)}\n"
        )
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, record.encode())
        yield path
    finally:
        # Remove the file while still holding the lock, then release it (by closing).
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)
        if created:  # a run that wrote nothing leaves nothing behind
            with contextlib.suppress(OSError):
                folder.rmdir()
