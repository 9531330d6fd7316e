"""One writer per store directory: an exclusive advisory lock on `DIR/.dasv-features.lock`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dasv_cli.errors import DasvError, os_error_message
from dasv_cli.io.store.layout import LOCK_NAME


class StoreLock:
    """An exclusive advisory lock on a store directory (`DIR/.dasv-features.lock`).

    flock is released by the kernel when the holder dies (even by SIGKILL), so a crashed run never
    leaves a stale lock behind. The file holds the holder's pid, for the message a second run gets.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.path = self.directory / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> "StoreLock":
        import fcntl

        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise DasvError(f"cannot write to {os_error_message(exc, self.directory)}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            try:
                holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            except OSError:
                holder = "unknown"
            os.close(fd)
            raise DasvError(
                f"{self.directory}: another `dasv features` run (pid {holder}) is writing to this "
                f"directory; wait for it to finish or choose another -o"
            ) from None
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError:
            pass
        self._fd = fd
        return self

    @property
    def fd(self) -> int | None:
        """The lock file's descriptor while held (forked helpers close their copy)."""
        return self._fd

    def release(self) -> None:
        if self._fd is not None:
            import fcntl

            try:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> "StoreLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()
