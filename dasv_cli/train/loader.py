"""The training DataLoader: plan-driven batches from persistent workers, handed over through a ring.

torch sends a worker's batch tensor through a new shared-memory segment per batch. Each of its 4 KiB
pages then costs a page fault to write in the worker and another to read in the main process: on
the 2-core VM this was written on ~5 us each, ~12 ms for one 64 x 350 x 80 float32 batch, twice
what reading and normalising its windows costs. So with worker processes (and the fork start
method) the batches go through a BatchRing instead: one anonymous shared mapping made before the
workers fork, faulted once, `prefetch_factor + 1` batch slots per worker. A worker writes its batch
into its next slot and sends only (worker, slot, shape, labels); the main process copies the slot
into a batch of its own before it asks for the next one, so the consumer may keep its batches.

Why a slot is never overwritten before it is copied: DataLoader gives task i to worker i mod W,
returns results in task order, and sends a worker a new task only as it returns one of that
worker's results. A worker therefore holds at most `prefetch_factor` tasks; while the main process
copies a worker's j-th batch the worker may be writing its (j + prefetch_factor)-th, and its
batches j + 1 .. j + prefetch_factor - 1 wait in their slots: with prefetch_factor + 1 slots these
are all different, and every earlier batch has been copied. tests/test_loader_batches.py checks
the batches through the ring against digests of the pre-ring loader.
"""

from __future__ import annotations

import functools
import math
import mmap
import multiprocessing
from typing import Any, Iterator

from dasv_cli.train.windows import RingBatch, WindowBatchSampler, WindowDataset, WorkerInit, collate_windows

LOADER_TIMEOUT_S = 300  # seconds the main process waits for one batch from the loader workers
PREFETCH = 4  # batches each worker reads ahead


class BatchRing:
    """`slots` float32 batch slots of `elements` values per worker, in memory the workers share."""

    def __init__(self, workers: int, slots: int, elements: int) -> None:
        import torch

        self.slots, self.elements = slots, elements
        self._map = mmap.mmap(-1, max(1, workers * slots * elements * 4))  # MAP_SHARED | MAP_ANONYMOUS
        self._feats = torch.frombuffer(self._map, dtype=torch.float32).view(workers, slots, elements)
        self._next = 0  # this worker's batches so far (each worker counts in its own copy)

    def claim(self, shape: tuple[int, ...]) -> tuple[Any, tuple[int, int]] | None:
        """In a loader worker: the next slot as a tensor of `shape`, and its (worker, slot); None in
        the main process or for a batch larger than a slot."""
        from torch.utils.data import get_worker_info

        info = get_worker_info()
        n = math.prod(shape)
        if info is None or n > self.elements or info.id >= self._feats.shape[0]:
            return None
        slot = self._next % self.slots
        self._next += 1
        return self._feats[info.id, slot, :n].view(shape), (info.id, slot)

    def take(self, batch: RingBatch, pin_memory: bool = False) -> tuple[Any, ...]:
        """(feats, labels) of a batch left in the ring, copied out of it (in the main process); a
        waveform batch (--online-augment) also brings its train.online.WaveInfo."""
        import torch

        feats = torch.empty(batch.shape, dtype=torch.float32, pin_memory=pin_memory)
        feats.copy_(self._feats[batch.worker, batch.slot, :math.prod(batch.shape)].view(batch.shape))
        labels = torch.from_numpy(batch.labels)
        return (feats, labels) if batch.info is None else (feats, labels, batch.info)


@functools.cache
def _loader_class():
    from torch.utils.data import DataLoader

    class WindowLoader(DataLoader):
        """DataLoader whose iteration takes ring batches out of the ring (see the module docstring)."""

        ring: BatchRing | None = None
        pin_ring: bool = False

        def __iter__(self) -> Iterator[Any]:
            it = super().__iter__()
            return it if self.ring is None else self._take_all(it)

        def _take_all(self, it: Iterator[Any]) -> Iterator[Any]:
            for batch in it:
                yield self.ring.take(batch, self.pin_ring) if isinstance(batch, RingBatch) else batch

    return WindowLoader


def make_loader(dataset: WindowDataset, sampler: WindowBatchSampler, workers: int, seed: int, rank: int,
                pin_memory: bool = False):
    """The DataLoader: plan-driven batches, `workers` reader processes kept across epochs."""
    import torch

    # A private generator for the loader's per-iterator base seed, so that starting an iterator (at
    # each epoch, or mid-epoch on resume) never consumes the global RNG that drives head masking.
    generator = torch.Generator()
    generator.manual_seed((seed * 31 + rank) & 0x7FFFFFFF)
    kwargs: dict[str, Any] = {}
    ring = None
    if workers > 0:
        # A worker whose batch cannot reach the main process (a full /dev/shm: torch passes tensors
        # through shared memory) fails silently in a queue thread; without a timeout the run would
        # wait for that batch forever.
        kwargs.update(persistent_workers=True, prefetch_factor=PREFETCH, worker_init_fn=WorkerInit(seed, rank),
                      timeout=LOADER_TIMEOUT_S)
        if multiprocessing.get_start_method() == "fork":  # the workers inherit the mapping
            ring = BatchRing(workers, PREFETCH + 1, dataset.batch_elements(sampler.batch_size, sampler.window_frames))
    dataset.ring = ring
    loader = _loader_class()(dataset, batch_sampler=sampler, num_workers=workers, collate_fn=collate_windows,
                             pin_memory=pin_memory and ring is None, generator=generator, **kwargs)
    loader.ring, loader.pin_ring = ring, pin_memory
    return loader


__all__ = ["BatchRing", "LOADER_TIMEOUT_S", "make_loader"]
