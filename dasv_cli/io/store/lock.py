"""Who may write to a store directory: one run, or one run per part (`--part I/N`) at once.

    a run without --part   an exclusive lock on DIR/.dasv-features.lock
    part I of N            a shared lock on DIR/.dasv-features.lock (parts coexist, a run without
                           --part waits them out) and an exclusive one on DIR/.dasv-features-pIIIIofNNNN.lock
                           (the same part twice would store the same keys twice)

The flock machinery (release at the holder's death, pid and host for the refusal, file systems
without locks: `supported` False) is io.lock's, shared with `dasv train -o`.
"""

from __future__ import annotations

import os
from pathlib import Path

from dasv_cli.errors import DasvError
from dasv_cli.io.lock import DirectoryLock, Refused, holder, take
from dasv_cli.io.store.layout import LOCK_NAME, Part, lock_name


class StoreLock(DirectoryLock):
    """The writer's lock on a store directory (see the module docstring); `part` None for a whole run."""

    def __init__(self, directory: str | Path, part: Part | None = None) -> None:
        super().__init__(directory, LOCK_NAME, lambda _: self._whole_refused())
        self.part = part
        self.part_path = self.directory / lock_name(part) if part is not None else None

    def acquire(self) -> "StoreLock":
        try:
            if self.part is None:
                try:
                    self._take(self.path, True)
                except Refused:
                    raise DasvError(self._whole_refused()) from None
            else:
                assert self.part_path is not None
                try:
                    self._take(self.path, False)
                except Refused:
                    raise DasvError(
                        f"{self.directory}: a `dasv features` run without --part {holder(self.path)} "
                        f"is writing to this directory; wait for it to finish or choose another -o"
                    ) from None
                try:
                    self._take(self.part_path, True)
                except Refused:
                    raise DasvError(
                        f"{self.directory}: part {self.part} is already being computed by another run "
                        f"{holder(self.part_path)}; wait for it to finish"
                    ) from None
        except BaseException:
            self.release()
            raise
        return self

    def _take(self, path: Path, exclusive: bool) -> None:
        fd = take(path, exclusive, self.directory)
        if fd is None:
            self.supported = False
        else:
            self._fds.append(fd)

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
        return (f"{self.directory}: another `dasv features` run {holder(self.path)} is writing to "
                f"this directory; wait for it to finish or choose another -o")
