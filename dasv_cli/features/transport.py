"""How a worker's results reach the writer: features in a file in /dev/shm (RAM), the rest through the pipe.

Pickling [frames, 80] arrays through the pool's pipe costs a fraction of the computation; writing
them into one shared-memory file per batch and mapping it in the parent costs almost nothing. Where
there is no usable /dev/shm (other systems, a full one), the arrays travel through the pipe.
"""

from __future__ import annotations

import mmap
import os
import sys
from dataclasses import dataclass, field, replace
from typing import Iterator

import numpy as np

from dasv_cli.features.compute import Computed, Outcome

SHM_DIR = "/dev/shm"


def _map_flags() -> int:
    """Shared, with the pages mapped in one call instead of one fault each (Linux's MAP_POPULATE;
    measured: pack + unpack 12 % cheaper). Transfer files exist only where /dev/shm does."""
    return mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)


@dataclass
class Shipment:
    """A worker's outcomes for one batch. With `transfer`, the features of the Computed outcomes
    listed in `placed` (index -> (byte offset, shape)) are in that file, not in the outcomes."""

    outcomes: list[Outcome]
    transfer: str | None = None
    placed: dict[int, tuple[int, tuple[int, ...]]] = field(default_factory=dict)


def shm_prefix(parent_pid: int) -> str | None:
    """"/dev/shm/dasv-<parent pid>-": where this run's transfer files go; None without /dev/shm."""
    if not (sys.platform.startswith("linux") and os.path.isdir(SHM_DIR) and os.access(SHM_DIR, os.W_OK)):
        return None
    return os.path.join(SHM_DIR, f"dasv-{parent_pid}-")


def remove_transfers(prefix: str | None, stale: bool = False) -> None:
    """Remove this run's transfer files (or, with `stale`, those of runs whose process is gone)."""
    if prefix is None:
        return
    directory, start = os.path.split(prefix)
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        if not name.startswith("dasv-"):
            continue
        if stale:
            pid = name.split("-")[1]
            if not pid.isdigit() or _alive(int(pid)):
                continue
        elif not name.startswith(start):
            continue
        try:
            os.unlink(os.path.join(directory, name))
        except OSError:
            pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def pack(outcomes: list[Outcome], path: str | None) -> Shipment:
    """Worker side: move the features of a batch into the new file `path` (None: keep them inline)."""
    computed = [(i, o) for i, o in enumerate(outcomes) if isinstance(o, Computed)]
    if path is None or not computed:
        return Shipment(outcomes)
    total = sum(o.features.feats.nbytes for _, o in computed)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.ftruncate(fd, total)
            mm = mmap.mmap(fd, total, flags=_map_flags())
        finally:
            os.close(fd)
    except OSError:  # /dev/shm full or unusable: send through the pipe instead
        try:
            os.unlink(path)
        except OSError:
            pass
        return Shipment(outcomes)
    shipped = list(outcomes)
    placed: dict[int, tuple[int, tuple[int, ...]]] = {}
    offset = 0
    for i, item in computed:
        feats = item.features.feats
        dest = np.frombuffer(mm, dtype=feats.dtype, count=feats.size, offset=offset)
        dest[:] = feats.reshape(-1)
        del dest
        placed[i] = (offset, feats.shape)
        # an empty array of the same dtype stands in for the features on the way
        empty = np.empty((0,) + feats.shape[1:], dtype=feats.dtype)
        shipped[i] = replace(item, features=replace(item.features, feats=empty))
        offset += feats.nbytes
    mm.close()
    return Shipment(shipped, path, placed)


def unpack(shipment: Shipment) -> Iterator[Outcome]:
    """Parent side of pack: the outcomes, features as read-only views of the mapped file."""
    if shipment.transfer is None:
        yield from shipment.outcomes
        return
    with open(shipment.transfer, "rb") as fh:
        mm = mmap.mmap(fh.fileno(), 0, flags=_map_flags(), prot=mmap.PROT_READ)
    os.unlink(shipment.transfer)  # the name goes at once; the memory lives while it is mapped
    try:
        for i, item in enumerate(shipment.outcomes):
            where = shipment.placed.get(i)
            if where is None or not isinstance(item, Computed):
                yield item
                continue
            offset, shape = where
            dtype = item.features.feats.dtype
            view = np.frombuffer(mm, dtype=dtype, count=int(np.prod(shape)), offset=offset).reshape(shape)
            yield replace(item, features=replace(item.features, feats=view))
            del view
    finally:
        try:
            mm.close()
        except BufferError:  # a caller still holds a view: the mapping goes with it
            pass
