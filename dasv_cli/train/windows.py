"""Training examples: random fixed-length windows read straight from the feature store.

All randomness lives in the *plan* (which utterance, where the window starts, how long it is), drawn
in the main process from a generator keyed by (seed, epoch). Loader workers only read and normalise,
so the examples do not depend on the number of workers, every rank can compute every other rank's
share (each rank takes a disjoint slice of the same permutation), and a resumed run re-creates the
epoch's plan and skips the batches already used without reading them.

Only the window's frames are read (`FeatureStore.read_windows`, a batch at a time); an utterance shorter than the window is
repeated (tiled) to fill it. Each example is normalised with the utterance's stored statistics
(`FeatureStore.read_stats`: the whole utterance's mean/std, as the original tool normalised whole files),
once per batch. The DataLoader that runs this in worker processes is train/loader.py.
"""

from __future__ import annotations

import math
import signal
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np

# The original tool sliced a batch to a random length between 2 s and the window (`--randomSlicing`).
MIN_SLICE_FRAMES = 200


@dataclass(frozen=True)
class Batch:
    """One rank's batch in the plan: utterance indices, window starts, and the common length."""

    index: np.ndarray  # int64 [B]
    start: np.ndarray  # int64 [B]
    frames: int


def epoch_plan(lengths: np.ndarray, batch_size: int, window_frames: int, seed: int, epoch: int,
               rank: int = 0, world: int = 1, random_slicing: bool = False,
               min_slice: int = MIN_SLICE_FRAMES) -> list[Batch]:
    """This rank's batches for one epoch (same on every machine for the same arguments).

    The epoch's permutation is cut into global batches of `batch_size * world`; rank r takes the r-th
    slice of each, so ranks never share an example and all ranks run the same number of batches (the
    remainder that does not fill a global batch is dropped, as DataLoader's drop_last would).
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    n = lengths.size
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch)])
    perm = rng.permutation(n)
    # Window starts for every utterance of the epoch, drawn in permutation order.
    room = np.maximum(lengths[perm] - window_frames, 0)
    starts = (rng.random(n) * (room + 1)).astype(np.int64)
    starts = np.minimum(starts, room)
    global_batch = batch_size * world
    n_batches = n // global_batch
    slice_rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch), 1])
    if random_slicing and window_frames > min_slice:
        frames = slice_rng.integers(min_slice, window_frames, size=n_batches)
    else:
        frames = np.full(n_batches, window_frames, dtype=np.int64)
    plan = []
    for b in range(n_batches):
        lo = (b * world + rank) * batch_size
        plan.append(Batch(index=perm[lo:lo + batch_size], start=starts[lo:lo + batch_size], frames=int(frames[b])))
    return plan


def batches_per_epoch(n_utterances: int, batch_size: int, world: int = 1) -> int:
    return n_utterances // (batch_size * world)


class WindowBatchSampler:
    """A batch sampler for DataLoader: yields lists of (utterance index, start, frames) per batch.

    `set_epoch(epoch, skip)` selects the epoch's plan and skips its first `skip` batches (resume).
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, window_frames: int, seed: int,
                 rank: int = 0, world: int = 1, random_slicing: bool = False) -> None:
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.batch_size = batch_size
        self.window_frames = window_frames
        self.seed = seed
        self.rank = rank
        self.world = world
        self.random_slicing = random_slicing
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch = epoch
        self.skip = skip

    def plan(self) -> list[Batch]:
        return epoch_plan(self.lengths, self.batch_size, self.window_frames, self.seed, self.epoch,
                          self.rank, self.world, self.random_slicing)

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        for batch in self.plan()[self.skip:]:
            yield [(int(i), int(s), batch.frames) for i, s in zip(batch.index, batch.start)]

    def __len__(self) -> int:
        return max(0, batches_per_epoch(self.lengths.size, self.batch_size, self.world) - self.skip)


def tile_to(feats: np.ndarray, frames: int) -> np.ndarray:
    """Repeat a short utterance along time until it fills `frames` frames."""
    n = feats.shape[0]
    if n >= frames:
        return feats[:frames]
    if n == 0:
        raise ValueError("cannot tile an utterance with no frames")
    from dasv_cli.io.store.reader import tile_rows

    out = np.empty((frames,) + feats.shape[1:], dtype=feats.dtype)
    out[:n] = feats
    tile_rows(out, n)
    return out


class WindowDataset:
    """Map-style dataset over (utterance index, start, frames) -> (normalised window, label).

    Holds the run's FeatureStore (its flat index is built once, in the main process, and crosses the
    fork to loader workers as a few numpy buffers; HDF5 handles are per process) and the store row of
    each example, so a worker never looks a key up. A batch is read in one `__getitems__` call, in
    shard/offset order (FeatureStore.read_windows); its examples equal `__getitem__`'s one by one.
    """

    def __init__(self, store_path: str, keys: Sequence[str], labels: Sequence[int],
                 lengths: Sequence[int], norm: str = "cmn", store=None, rows: np.ndarray | None = None,
                 waveform: bool = False) -> None:
        self.store_path = str(store_path)
        self.keys = keys if isinstance(keys, list) else list(keys)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.norm = norm
        self._store = store
        self._rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        self.ring: Any = None  # train.loader.BatchRing: the loader's shared slots, set before its workers fork
        self.waveform = waveform  # --online-augment: batches of PCM windows (train.online), not features

    def batch_elements(self, batch: int, frames: int) -> int:
        """float32 values of a batch of `frames`-frame windows (features, or their waveforms)."""
        if self.waveform:
            from dasv_cli.train.online import window_samples

            return batch * window_samples(frames, self.store().recipe)
        return batch * frames * self.store().n_mels

    def __len__(self) -> int:
        return len(self.keys)

    def store(self):
        if self._store is None:
            from dasv_cli.io.store.reader import FeatureStore

            self._store = FeatureStore(self.store_path)
        return self._store

    def rows(self) -> np.ndarray:
        """The store row of every example (looked up once)."""
        if self._rows is None:
            self._rows = self.store().rows(self.keys)
        return self._rows

    def read(self, i: int, start: int, frames: int) -> np.ndarray:
        """The raw window (tiled when the utterance is shorter), float32 [frames, n_mels]."""
        store = self.store()
        key = self.keys[i]
        length = int(self.lengths[i])
        if length >= frames:
            start = min(max(int(start), 0), length - frames)
            feats = store.window(key, start, frames)
        else:
            feats = tile_to(np.asarray(store[key]), frames)
        return np.asarray(feats, dtype=np.float32)

    def __getitem__(self, item: tuple[int, int, int]) -> tuple[np.ndarray, int]:
        from dasv_cli.dsp.logmel import normalise

        i, start, frames = item
        feats = self.read(i, start, frames)
        if self.norm != "none":
            mean, std = self.store().stats(self.keys[i])
            feats = normalise(feats, mean, std, self.norm)
        return np.ascontiguousarray(feats, dtype=np.float32), int(self.labels[i])

    def __getitems__(self, items: list[tuple[int, int, int]]) -> "WindowBatch":
        """A whole batch (DataLoader calls this with the sampler's list): one batched read in the
        stored dtype, then one conversion to float32 and one in-place normalisation for the batch."""
        import torch

        from dasv_cli.dsp.logmel import normalise

        index = np.fromiter((it[0] for it in items), dtype=np.int64, count=len(items))
        starts = np.fromiter((it[1] for it in items), dtype=np.int64, count=len(items))
        frames = {int(it[2]) for it in items}
        if len(frames) != 1:
            raise ValueError(f"a batch holds windows of one length, got {sorted(frames)}")
        store = self.store()
        rows = self.rows()[index]
        if self.waveform:
            return self._waveforms(store, rows, starts, frames.pop(), self.labels[index])
        raw = store.read_windows(rows, starts, frames.pop())
        claimed = self.ring.claim(raw.shape) if self.ring is not None else None
        feats = claimed[0] if claimed is not None else batch_tensor(raw.shape)
        feats.copy_(torch.from_numpy(raw))
        if self.norm != "none":
            mean, std = store.read_stats(rows, std=self.norm == "cmvn")
            normalise(feats, torch.from_numpy(mean), None if std is None else torch.from_numpy(std), self.norm,
                      inplace=True)
        if claimed is not None:
            return RingBatch(*claimed[1], tuple(raw.shape), self.labels[index])
        return WindowBatch(feats, torch.from_numpy(self.labels[index]))

    def _waveforms(self, store, rows: np.ndarray, starts: np.ndarray, frames: int, labels: np.ndarray):
        """The batch's PCM windows (float32 in [-1, 1)), with each row's frames and stored statistics."""
        import torch

        from dasv_cli.train.online import WaveInfo, window_samples

        hop = int(store.recipe.get("hop_length", 160))
        samples = window_samples(frames, store.recipe)
        pcm = store.read_audio_windows(rows, np.minimum(starts, np.maximum(store.row_lengths(rows) - frames, 0)) * hop,
                                       samples)
        mean, std = store.read_stats(rows, std=self.norm == "cmvn")
        info = WaveInfo(np.minimum(store.row_lengths(rows), frames), mean, std)
        claimed = self.ring.claim(pcm.shape) if self.ring is not None else None
        waves = claimed[0] if claimed is not None else batch_tensor(pcm.shape)
        torch.mul(torch.from_numpy(pcm), 1.0 / 32768.0, out=waves)
        if claimed is not None:
            return RingBatch(*claimed[1], tuple(pcm.shape), labels, info)
        return WindowBatch(waves, torch.from_numpy(labels), info)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


def batch_tensor(shape: tuple[int, ...]):
    """An empty float32 tensor for a batch; inside a loader worker in shared memory, where the batch
    must go anyway to reach the main process (as torch's default_collate does: saves a copy)."""
    import torch
    from torch.utils.data import get_worker_info

    if get_worker_info() is None:
        return torch.empty(shape, dtype=torch.float32)
    storage = torch.UntypedStorage._new_shared(math.prod(shape) * 4)
    return torch.empty(0, dtype=torch.float32).set_(storage).view(shape)


@dataclass
class WindowBatch:
    """A batch read at once: feats float32 [B, T, F], labels int64 [B] (torch tensors)."""

    feats: Any
    labels: Any
    info: Any = None  # train.online.WaveInfo of a waveform batch


@dataclass
class RingBatch:
    """A batch a loader worker left in slot `slot` of its row `worker` of the loader's shared ring
    (train.loader.BatchRing): what crosses to the main process instead of the batch itself."""

    worker: int
    slot: int
    shape: tuple[int, ...]
    labels: np.ndarray  # int64 [B]
    info: Any = None  # train.online.WaveInfo of a waveform batch


def collate_windows(items: "list[tuple[np.ndarray, int]] | WindowBatch | RingBatch"):
    """Stack equal-length windows into (feats float32 [B, T, F], labels int64 [B]) tensors (a
    RingBatch passes through: the main process takes it out of the ring)."""
    import torch

    if isinstance(items, RingBatch):
        return items
    if isinstance(items, WindowBatch):
        return (items.feats, items.labels) if items.info is None else (items.feats, items.labels, items.info)
    feats = torch.from_numpy(np.stack([x for x, _ in items]))
    labels = torch.as_tensor([y for _, y in items], dtype=torch.int64)
    return feats, labels


class WorkerInit:
    """DataLoader worker set-up: ignore Ctrl-C (the main process saves and stops the run), seed
    per rank and worker (workers draw nothing from the plan, but any library randomness stays
    reproducible), and one thread per worker."""

    def __init__(self, seed: int, rank: int) -> None:
        self.seed = seed
        self.rank = rank

    def __call__(self, worker_id: int) -> None:
        import torch

        signal.signal(signal.SIGINT, signal.SIG_IGN)
        torch.set_num_threads(1)
        s = (self.seed * 1_000_003 + self.rank * 1009 + worker_id) & 0xFFFFFFFF
        np.random.seed(s)
        torch.manual_seed(s)
