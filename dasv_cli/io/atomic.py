"""The temporary file behind every atomic write: beside the target, with the target's usual mode.

Outputs (checkpoints, embedding tables, score files) are written to a temporary file in the target's
directory and renamed over it, so a crash or a full disk never leaves half a file. `mkstemp` makes
that file private (0600); after the rename the output would be unreadable to the user's group, unlike
any file the user writes otherwise, so the mode is set from the umask as `open()` would.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from contextlib import contextmanager
from typing import Any, Callable, Iterator, TextIO


def _umask() -> int:
    """The process umask, read without changing it where /proc allows (changing it is racy)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def temp_beside(path: str | Path) -> tuple[int, str]:
    """(fd, name) of a new temporary file in `path`'s directory (created if needed), mode 0666 & ~umask.

    Raises OSError (a missing or unwritable directory, a full disk) for the caller to report.
    """
    path = Path(path)
    for parent in path.parents:  # mkdir would say only "File exists"
        if parent.exists():
            if not parent.is_dir():
                raise NotADirectoryError(errno.ENOTDIR, f"{parent} is a file, not a directory")
            break
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
    except OSError:  # a file system without modes (some network mounts): keep mkstemp's
        pass
    return fd, tmp


def check_writable(path: str | Path, what: str) -> None:
    """Fail now, before hours of work, if `path` cannot be written (a missing parent under a file,
    a read-only place, a directory in the way): the same temporary file the real write uses."""
    from dasv_cli.errors import DasvError, os_error_message
    from dasv_cli.io.paths import refuse_directory

    path = refuse_directory(Path(path), f"a file name for the {what}")
    try:
        fd, tmp = temp_beside(path)
    except OSError as exc:
        raise DasvError(f"cannot write {what} {os_error_message(exc, path)}") from exc
    os.close(fd)
    discard(tmp)


def discard(tmp: str | Path) -> None:
    """Remove a temporary file after a failed write (quietly: the write's error is the one to report)."""
    try:
        os.unlink(tmp)
    except OSError:
        pass


@contextmanager
def atomic_path(path: str | Path, what: str) -> Iterator[str]:
    """Yield the name of a temporary file beside `path`; when the block ends normally it replaces `path`.

    The one way dasv writes an output file (checkpoints, shards, embedding tables, scores, lists):
    an OSError (full disk, unwritable place) becomes one `cannot write WHAT PATH: reason` line, and
    that or Ctrl-C leaves the previous file as it was and no temporary behind.
    """
    from dasv_cli.errors import DasvError, os_error_message

    try:
        fd, tmp = temp_beside(path)
    except OSError as exc:
        raise DasvError(f"cannot write {what} {os_error_message(exc, path)}") from exc
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        discard(tmp)
        raise DasvError(f"cannot write {what} {os_error_message(exc, path)}") from exc
    except BaseException:  # Ctrl-C or an error inside the block
        discard(tmp)
        raise


def write_text_atomic(path: str | Path, what: str, write: Callable[[TextIO], None]) -> None:
    """Have `write(fh)` fill a temporary file beside `path`, then rename it over `path`."""
    with atomic_path(path, what) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            write(fh)


class GuardedFile:
    """The file object HDF5 writes through (h5py's fileobj driver): feature shards, embedding tables.

    The first OSError (disk full, quota, read-only) is remembered and from then on the file is a
    sink that only tracks its position and size, so HDF5 itself never sees a failed call: a failing
    HDF5 flush/close leaves the library in a state that can crash the interpreter at exit. The
    writer checks `error` and reports it as one line.
    """

    def __init__(self, path: str | Path) -> None:
        self.fh = open(path, "w+b")
        self.error: OSError | None = None
        self._pos = 0  # position and size once failed (the real file is no longer touched)
        self._size = 0

    def _fail(self, exc: OSError) -> None:
        self.error = exc
        try:
            self._pos = self.fh.raw.tell() if hasattr(self.fh, "raw") else 0
        except (OSError, ValueError):
            self._pos = 0
        self._size = self._pos

    def write(self, data: Any) -> int:
        n = memoryview(data).nbytes
        if self.error is None:
            try:
                return self.fh.write(data)
            except OSError as exc:
                self._fail(exc)
        self._pos += n
        self._size = max(self._size, self._pos)
        return n

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        got = 0
        if self.error is None:
            try:
                got = self.fh.readinto(view) or 0
            except OSError as exc:  # a read flushes pending writes first: that may fail
                self._fail(exc)
        if self.error is not None:
            self._pos += len(view)
        view[got:] = bytes(len(view) - got)  # past the end (or after a failure): zeros, like sec2
        return len(view)

    def read(self, size: int = -1) -> bytes:
        if self.error is None:
            try:
                return self.fh.read(size)
            except OSError as exc:
                self._fail(exc)
        n = max(0, size if size >= 0 else self._size - self._pos)
        self._pos += n
        return bytes(n)

    def seek(self, offset: int, whence: int = 0) -> int:
        if self.error is None:
            try:
                return self.fh.seek(offset, whence)  # a buffered seek flushes: that may fail
            except OSError as exc:
                self._fail(exc)
        base = {0: 0, 1: self._pos, 2: self._size}[whence]
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        if self.error is None:
            return self.fh.tell()
        return self._pos

    def truncate(self, size: int | None = None) -> int:
        if self.error is None:
            try:
                return self.fh.truncate(size)
            except OSError as exc:
                self._fail(exc)
        self._size = size if size is not None else self._pos
        return self._size

    def flush(self) -> None:
        if self.error is None:
            try:
                self.fh.flush()
            except OSError as exc:
                self._fail(exc)

    def close(self) -> None:
        try:
            self.fh.close()
        except OSError as exc:
            self.error = self.error or exc
