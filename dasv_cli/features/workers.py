"""Where features are computed: `jobs` worker processes (WorkerPool) or, for one job, inline.

Results come back in list order either way, so a run is deterministic. The module-level names
below are the state of a worker process, set once by its initializer. No torch here: the log-mel is
NumPy/SciPy, so neither the run nor its workers pay torch's start-up.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Iterator, Sequence

from dasv_cli.dsp.logmel import LogMelConfig
from dasv_cli.features.compute import Outcome, compute_items
from dasv_cli.features.transport import Shipment, pack, remove_transfers, shm_prefix, unpack
from dasv_cli.features.tuning import die_with_parent, tune_malloc, widen_result_pipe

CHUNK_FILES = 4  # files per task sent to a worker: small enough to balance, large enough to amortise IPC

_worker_cfg: LogMelConfig | None = None
_worker_dtype = "float32"
_worker_shm: str | None = None  # "<dir>/dasv-<parent pid>-": where a worker puts features for the parent
_worker_seq = 0


def _worker_init(cfg_dict: dict[str, Any], dtype: str, lock_fds: Sequence[int],
                 prefix: str | None = None) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops the pool
    for fd in lock_fds:  # the store lock belongs to the parent: a worker must never keep it alive
        try:
            os.close(fd)
        except OSError:
            pass
    die_with_parent()
    tune_malloc()
    global _worker_cfg, _worker_dtype, _worker_shm
    _worker_cfg = LogMelConfig.from_dict(cfg_dict)
    _worker_dtype = dtype
    _worker_shm = prefix


def _worker_task(items: Sequence[tuple[str, str]]) -> Shipment:
    global _worker_seq
    assert _worker_cfg is not None
    path = None
    if _worker_shm is not None:
        _worker_seq += 1
        path = f"{_worker_shm}{os.getpid()}-{_worker_seq}"
    return pack(compute_items(items, _worker_cfg, _worker_dtype), path)


def chunks(items: Sequence[tuple[str, str]], size: int) -> Iterator[list[tuple[str, str]]]:
    for i in range(0, len(items), size):
        yield list(items[i:i + size])


def results_inline(items: Sequence[tuple[str, str]], cfg: LogMelConfig, dtype: str) -> Iterator[Outcome]:
    """The outcomes computed in this process (single-threaded code: one job = one core)."""
    for chunk in chunks(items, CHUNK_FILES):
        yield from compute_items(chunk, cfg, dtype)


class WorkerPool:
    """`jobs` worker processes; results come back in list order (so a run is deterministic)."""

    def __init__(self, jobs: int, cfg: LogMelConfig, dtype: str, lock_fds: Sequence[int] = ()) -> None:
        import multiprocessing as mp

        # fork (Linux): workers start at once, sharing the parent's imported NumPy, SciPy and h5py
        method = "fork" if sys.platform.startswith("linux") else "spawn"
        ctx = mp.get_context(method)
        self.shm_prefix = shm_prefix(os.getpid())
        remove_transfers(self.shm_prefix, stale=True)  # left by runs that were killed
        self.pool = ctx.Pool(jobs, initializer=_worker_init,
                             initargs=(cfg.to_dict(), dtype, list(lock_fds), self.shm_prefix))
        widen_result_pipe(self.pool)

    def results(self, items: Sequence[tuple[str, str]]) -> Iterator[Outcome]:
        for shipment in self.pool.imap(_worker_task, chunks(items, CHUNK_FILES), chunksize=1):
            yield from unpack(shipment)

    def close(self, terminate: bool = False) -> None:
        if terminate:
            self.pool.terminate()
        else:
            self.pool.close()
        self.pool.join()
        remove_transfers(self.shm_prefix)  # batches computed but never collected (interrupt, error)
