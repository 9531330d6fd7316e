"""The training batches, pinned: what the loader hands the model for a fixed store and seed.

The digests were recorded with the implementation before the batched fast path (main at aa92a24:
one read and one numpy normalisation per window), so a faster loader must hand over the very same
numbers; each batch is also checked against a plain reference read straight through h5py.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import h5py
import torch
import numpy as np
import pytest

from dasv_cli.dsp.logmel import LogMelConfig, utterance_stats
from dasv_cli.io.store.reader import FeatureStore
from dasv_cli.io.store.writer import ShardWriter
from dasv_cli.train.loader import make_loader
from dasv_cli.train.windows import WindowBatchSampler, WindowDataset

EPS = 1e-5  # dsp.logmel.normalise's


def write_store(directory: Path, dtype: str) -> list[str]:
    """40 utterances of 40-420 frames over ~8 shards (those under the window are tiled)."""
    rng = np.random.default_rng(11)
    keys = []
    with ShardWriter(directory, LogMelConfig().to_dict(), dtype=dtype, shard_frames=6 * 230) as w:
        for i in range(40):
            f = (rng.standard_normal((int(rng.integers(40, 420)), 80)) * 3 + i % 5).astype(np.float32)
            key = f"spk{i % 4}/u{i:03d}"
            w.add(key, f, *utterance_stats(f), samples=f.shape[0] * 160)
            keys.append(key)
    return keys


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    os_fsync = os.fsync
    os.fsync = lambda fd: None  # durability is not under test
    try:
        out = {}
        for dtype in ("float16", "float32"):
            d = tmp_path_factory.mktemp(dtype)
            out[dtype] = (d, write_store(d, dtype))
        return out
    finally:
        os.fsync = os_fsync


def loader_batches(directory: Path, keys: list[str], norm: str, workers: int = 0, pause: float = 0.0,
                   batch_size: int = 8):
    store = FeatureStore(directory)
    rows = store.rows(keys)
    lengths = store.row_lengths(rows)
    labels = np.arange(len(keys)) % 7
    ds = WindowDataset(str(directory), keys, labels, lengths, norm, store=store, rows=rows)
    sampler = WindowBatchSampler(lengths, batch_size, 350, seed=5, random_slicing=True)
    loader = make_loader(ds, sampler, workers, seed=5, rank=0)
    assert (loader.ring is not None) == (workers > 0)  # with workers the batches come through the ring
    out = []
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        plan = sampler.plan()
        for batch, (feats, y) in zip(plan, loader, strict=True):
            out.append((batch, feats.numpy(), y.numpy()))  # kept, not copied: they are the consumer's
            time.sleep(pause)  # a slow consumer: the workers fill every slot they may
    it = getattr(loader, "_iterator", None)
    if it is not None and hasattr(it, "_shutdown_workers"):
        it._shutdown_workers()
    ds.close()
    return out, labels


def reference(directory: Path, key: str, start: int, frames: int, norm: str) -> np.ndarray:
    """One window as the recipe defines it, read through h5py: clamped start, tiled when short,
    minus the utterance mean (and over its std + eps)."""
    for shard in sorted(directory.glob("shard-*.h5")):
        with h5py.File(shard, "r") as f:
            names = [k.decode() if isinstance(k, bytes) else k for k in f["keys"][()]]
            if key not in names:
                continue
            i = names.index(key)
            off, n = int(f["offsets"][i]), int(f["lengths"][i])
            utt = f["feats"][off:off + n].astype(np.float32)
            mean, std = f["mean"][i], f["std"][i]
    if n >= frames:
        start = min(max(start, 0), n - frames)
        x = utt[start:start + frames]
    else:
        x = utt[np.arange(frames) % n]
    if norm == "none":
        return x
    x = x - mean
    return x / (std + EPS) if norm == "cmvn" else x


def digest(batches) -> str:
    h = hashlib.sha256()
    for _, feats, y in batches:
        h.update(np.asarray(feats.shape, dtype=np.int64).tobytes())
        h.update(np.ascontiguousarray(feats, dtype=np.float32).tobytes())
        h.update(y.astype(np.int64).tobytes())
    return h.hexdigest()[:24]


PINNED = {
    ("float16", "cmn"): "f9e073b81bc9de60263f655a",
    ("float16", "cmvn"): "e6cf81c98b1f10f24d4d3959",
    ("float16", "none"): "270bdf2af7d7179e2f9a216f",
    ("float32", "cmn"): "21608f00d0975ef0a575c15a",
    ("float32", "cmvn"): "121d3d18b8c4303ca671fdcb",
    ("float32", "none"): "4b0e49185f948ead2a50e0b3",
}

SMALL_BATCHES = "5ce0fe04ac3ec0a3574bd25d"  # float16, cmn, batches of 2


@pytest.mark.parametrize("dtype, norm", sorted(PINNED))
def test_batches_are_the_pinned_ones(stores, dtype, norm):
    directory, keys = stores[dtype]
    batches, labels = loader_batches(directory, keys, norm)
    assert len(batches) == 2 * (len(keys) // 8)
    lengths = FeatureStore(directory).lengths()
    short = [lengths[keys[i]] < b.frames for b, _, _ in batches for i in b.index]
    assert any(short) and not all(short)  # windows inside utterances, and tiled ones
    assert digest(batches) == PINNED[(dtype, norm)]
    for batch, feats, y in batches[:3] + batches[-2:]:
        assert feats.dtype == np.float32 and feats.shape == (8, batch.frames, 80) and feats.flags.c_contiguous
        assert y.tolist() == labels[batch.index].tolist()
        for j, (i, s) in enumerate(zip(batch.index, batch.start)):
            assert np.array_equal(feats[j], reference(directory, keys[i], int(s), batch.frames, norm))


def test_loader_workers_hand_over_the_same_batches(stores):
    """Through the workers' shared ring (train.loader.BatchRing), with a consumer slower than them."""
    directory, keys = stores["float16"]
    two, _ = loader_batches(directory, keys, "cmvn", workers=2, pause=0.05)
    assert digest(two) == PINNED[("float16", "cmvn")]
    # 20 batches per epoch: each worker writes every one of its slots several times over
    small, _ = loader_batches(directory, keys, "cmn", workers=2, pause=0.01, batch_size=2)
    assert len(small) == 40 and digest(small) == SMALL_BATCHES


def test_an_epoch_left_midway_does_not_disturb_the_next(stores):
    """A run that stops or resumes mid-epoch leaves batches in the ring that are never taken; the
    persistent workers' next epoch is still exactly the plan's."""
    directory, keys = stores["float16"]
    store = FeatureStore(directory)
    rows = store.rows(keys)
    lengths = store.row_lengths(rows)
    labels = np.arange(len(keys)) % 7
    seen = {}
    for workers in (0, 2):
        ds = WindowDataset(str(directory), keys, labels, lengths, "cmn", store=FeatureStore(directory), rows=rows)
        sampler = WindowBatchSampler(lengths, 2, 350, seed=9)
        loader = make_loader(ds, sampler, workers, seed=9, rank=0)
        sampler.set_epoch(0)
        for i, _ in enumerate(loader):
            if i == 2:
                break  # left with the workers' read-ahead still in the ring
        sampler.set_epoch(1, skip=3)
        seen[workers] = [(f.clone(), y.clone()) for f, y in loader]
        it = getattr(loader, "_iterator", None)
        if it is not None and hasattr(it, "_shutdown_workers"):
            it._shutdown_workers()
        ds.close()
    assert len(seen[2]) == len(seen[0]) == 20 - 3
    assert all(torch.equal(a, c) and torch.equal(b, d) for (a, b), (c, d) in zip(seen[0], seen[2]))
