"""One writer per directory: a non-blocking flock on a lock file inside it, held for the writer's life.

flock is released by the kernel when the holder dies (even by SIGKILL), so a crashed or preempted
run never leaves a stale lock: the next run (a SLURM requeue with --resume) takes it at once. The
lock file itself stays (removing it would race with a run opening it). An exclusive holder writes
its pid and host into the file, for the message a refused run gets. On a file system without locks
(some cluster mounts) the lock is not taken and `supported` is False, so the caller can say so.

Users: io.store.lock (`dasv features`: a store, or one part of it), train.state (`dasv train -o`) and
augment.rirset (`dasv rirs -o`).
"""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path
from typing import Any, Callable

from dasv_cli.errors import DasvError, os_error_message

# flock errors that mean "this file system has no locks", not "someone holds it"
_UNSUPPORTED = {errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL}


class Refused(Exception):
    """The lock is held by someone else."""


def take(path: Path, exclusive: bool, directory: Path) -> int | None:
    """flock `path` (created if missing) without waiting: its descriptor, or None where the file
    system has no locks; Refused when someone holds it. An exclusive holder writes its pid and host."""
    import fcntl

    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise DasvError(f"cannot write to {os_error_message(exc, directory)}") from exc
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in _UNSUPPORTED:
            return None
        raise Refused() from None
    if exclusive:
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n{socket.gethostname()}\n".encode())
        except OSError:
            pass
    return fd


def holder(path: Path) -> str:
    """`(pid 1234) on node07`, from what the holder wrote into its lock file."""
    try:
        words = path.read_text(errors="replace").split()
    except OSError:
        words = []
    pid = words[0] if words else "unknown"
    return f"(pid {pid})" + (f" on {words[1][:64]}" if len(words) > 1 else "")


def release(fds: list[int]) -> None:
    """Unlock and close these descriptors, last taken first."""
    import fcntl

    for fd in reversed(fds):
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        except OSError:
            pass
        finally:
            os.close(fd)


_NOT_IN_CHILDREN: set[int] = set()  # held lock descriptors that a forked child closes at once
_fork_hook = False


def _close_in_child() -> None:
    for fd in list(_NOT_IN_CHILDREN):
        try:
            os.close(fd)  # the child's copy only: the parent's lock stays held
        except OSError:
            pass
    _NOT_IN_CHILDREN.clear()


class DirectoryLock:
    """An exclusive lock on DIR/NAME; a second holder is refused with `refused(holder)` as its one line.

    `close_in_children`: processes forked while it is held (a DataLoader's workers) close their copy
    at once, so that an orphaned child of a killed holder never keeps the lock from its requeue."""

    def __init__(self, directory: str | Path, name: str, refused: Callable[[str], str],
                 close_in_children: bool = False) -> None:
        self.directory = Path(directory)
        self.path = self.directory / name
        self.refused = refused
        self.close_in_children = close_in_children
        self.supported = True
        self._fds: list[int] = []

    def acquire(self) -> "DirectoryLock":
        global _fork_hook
        try:
            fd = take(self.path, True, self.directory)
        except Refused:
            raise DasvError(self.refused(holder(self.path))) from None
        if fd is None:
            self.supported = False
            return self
        self._fds.append(fd)
        if self.close_in_children:
            if not _fork_hook:
                os.register_at_fork(after_in_child=_close_in_child)
                _fork_hook = True
            _NOT_IN_CHILDREN.add(fd)
        return self

    @property
    def fds(self) -> list[int]:
        """The lock file's descriptor while held (forked helpers close their copies)."""
        return list(self._fds)

    def release(self) -> None:
        fds, self._fds = self._fds, []
        _NOT_IN_CHILDREN.difference_update(fds)
        release(fds)

    def __enter__(self) -> "DirectoryLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


__all__ = ["DirectoryLock", "Refused", "take", "holder", "release"]
