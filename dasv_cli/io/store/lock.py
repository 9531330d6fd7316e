"""Who may write to a store directory: one run, or one run per part (`--part I/N`) at once.

    a run without --part   an exclusive lock on DIR/.dasv-features.lock
    part I of N            a shared lock on DIR/.dasv-features.lock (parts coexist, a run without
                           --part waits them out) and an exclusive one on DIR/.dasv-features-pIIIIofNNNN.lock
                           (the same part twice would store the same keys twice)

flock is released by the kernel when the holder dies (even by SIGKILL), so a crashed run never
leaves a stale lock behind. An exclusive holder writes its pid and host into its lock file, for the
message a refused run gets. On a file system without locks (some cluster mounts) the run goes on
unlocked and `supported` is False, so the caller can say so.
"""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path
from typing import Any

from dasv_cli.errors import DasvError, os_error_message
from dasv_cli.io.store.layout import LOCK_NAME, Part, lock_name

# flock errors that mean "this file system has no locks", not "someone holds it"
_UNSUPPORTED = {errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL}


class _Refused(Exception):
    """The lock is held by someone else."""


class StoreLock:
    """The writer's lock on a store directory (see the module docstring); `part` None for a whole run."""

    def __init__(self, directory: str | Path, part: Part | None = None) -> None:
        self.directory = Path(directory)
        self.part = part
        self.path = self.directory / LOCK_NAME
        self.part_path = self.directory / lock_name(part) if part is not None else None
        self.supported = True
        self._fds: list[int] = []

    def acquire(self) -> "StoreLock":
        import fcntl

        try:
            if self.part is None:
                try:
                    self._take(self.path, fcntl.LOCK_EX)
                except _Refused:
                    raise DasvError(self._whole_refused()) from None
            else:
                assert self.part_path is not None
                try:
                    self._take(self.path, fcntl.LOCK_SH)
                except _Refused:
                    raise DasvError(
                        f"{self.directory}: a `dasv features` run without --part {self._holder(self.path)} "
                        f"is writing to this directory; wait for it to finish or choose another -o"
                    ) from None
                try:
                    self._take(self.part_path, fcntl.LOCK_EX)
                except _Refused:
                    raise DasvError(
                        f"{self.directory}: part {self.part} is already being computed by another run "
                        f"{self._holder(self.part_path)}; wait for it to finish"
                    ) from None
        except BaseException:
            self.release()
            raise
        return self

    def _take(self, path: Path, mode: int) -> None:
        import fcntl

        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise DasvError(f"cannot write to {os_error_message(exc, self.directory)}") from exc
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in _UNSUPPORTED:
                self.supported = False
                return
            raise _Refused() from None
        self._fds.append(fd)
        if mode == fcntl.LOCK_EX:
            try:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n{socket.gethostname()}\n".encode())
            except OSError:
                pass

    def _holder(self, path: Path) -> str:
        """`(pid 1234) on node07`, from what the holder wrote into its lock file."""
        try:
            words = path.read_text(errors="replace").split()
        except OSError:
            words = []
        pid = words[0] if words else "unknown"
        return f"(pid {pid})" + (f" on {words[1][:64]}" if len(words) > 1 else "")

    def _whole_refused(self) -> str:
        """Why a run without --part cannot start: another such run, or parts, hold the directory."""
        import fcntl

        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            fd = None
        shared = False
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # granted: the holders are parts
                shared = True
            except OSError:
                pass
            finally:
                os.close(fd)
        if shared:
            return (f"{self.directory}: `dasv features --part` runs are writing to this directory; "
                    f"wait for them to finish, or run with the same --part, or choose another -o")
        return (f"{self.directory}: another `dasv features` run {self._holder(self.path)} is writing to "
                f"this directory; wait for it to finish or choose another -o")

    @property
    def fds(self) -> list[int]:
        """The lock files' descriptors while held (forked helpers close their copies)."""
        return list(self._fds)

    def release(self) -> None:
        import fcntl

        fds, self._fds = self._fds, []
        for fd in reversed(fds):
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            except OSError:
                pass
            finally:
                os.close(fd)

    def __enter__(self) -> "StoreLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()
