"""One shard as a process holds it open: a plain descriptor for pread, the HDF5 file only where needed.

A process keeps at most `default_max_open()` of these (FeatureStore's LRU): thousands of shards
must not cost thousands of descriptors (`ulimit -n` is often 1024) nor the memory of as many HDF5
files, whose chunk caches are kept small because random windows rarely revisit a chunk.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

MAX_OPEN = 256  # shards one process keeps open at most
CHUNK_CACHE_BYTES = 1 << 20  # per open HDF5 file


def default_max_open() -> int:
    """At most MAX_OPEN handles, and no more than an eighth of the soft open-file limit."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):
        return MAX_OPEN
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return MAX_OPEN
    return max(4, min(MAX_OPEN, int(soft) // 8))


class ShardHandle:
    """One shard of this process: a plain descriptor for pread (feats, mean, std lie in the file as
    plain blocks: index.raw_layout) and, only where that does not hold, the HDF5 file with its
    datasets kept open (a dataset open costs as much as a read)."""

    __slots__ = ("path", "fd", "_file")

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        self._file: Any = None

    def file(self) -> Any:
        if self._file is None:
            import h5py

            self._file = h5py.File(self.path, "r", rdcc_nbytes=CHUNK_CACHE_BYTES)
        return self._file

    def pread(self, nbytes: int, offset: int) -> bytes | None:
        buf = os.pread(self.fd, nbytes, offset)
        return buf if len(buf) == nbytes else None

    def pread_into(self, view: memoryview, offset: int) -> bool:
        """Fill `view` from the file at `offset`; False when the file holds fewer bytes there."""
        return os.preadv(self.fd, [view], offset) == len(view)

    def close(self, hdf5: bool = True) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass
        if hdf5 and self._file is not None:
            try:
                self._file.close()
            except Exception:
                pass
        self._file = None
