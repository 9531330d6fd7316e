"""The store at scale: one index per run (cached beside the shards), bounded HDF5 handles, batched
reads equal to one-by-one reads, validation on the training store, training under a low open-file limit."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dasv_cli.dsp.logmel import LogMelConfig, utterance_stats
from dasv_cli.io.store import index as store_index
from dasv_cli.io.store.index import INDEX_NAME
from dasv_cli.io.store.reader import FeatureStore
from dasv_cli.io.store.writer import ShardWriter
from dasv_cli.train.windows import WindowBatchSampler, WindowDataset, collate_windows

RECIPE = LogMelConfig().to_dict()


@pytest.fixture
def no_fsync(monkeypatch):
    """Durability is not under test here; fsync per shard on a shared disk would set the pace."""
    monkeypatch.setattr(os, "fsync", lambda fd: None)


def write_store(directory: Path, n: int, per_shard: int, frames=(60, 180), seed: int = 0,
                first: int = 0, speakers: int = 4) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    utts = {}
    with ShardWriter(directory, RECIPE, dtype="float16", shard_frames=per_shard * frames[0]) as w:
        for i in range(first, first + n):
            f = (rng.standard_normal((int(rng.integers(*frames)), 80)) * 2 + i % 7).astype(np.float32)
            key = f"spk{i % speakers}/u{i:05d}"
            w.add(key, f, *utterance_stats(f), samples=f.shape[0] * 160)
            utts[key] = f.astype(np.float16).astype(np.float32)
    return utts


def test_index_is_cached_and_only_new_shards_are_read(tmp_path, no_fsync, monkeypatch):
    utts = write_store(tmp_path, 40, per_shard=4)
    store = FeatureStore(tmp_path)
    assert (tmp_path / INDEX_NAME).exists() and len(store.shards) >= 10
    reads = []
    real = store_index.read_part
    monkeypatch.setattr(store_index, "read_part", lambda p, *a: reads.append(p.name) or real(p, *a))
    again = FeatureStore(tmp_path)
    assert reads == [] and again.keys() == store.keys() == list(utts)
    more = write_store(tmp_path, 6, per_shard=4, first=40, seed=1)  # a resumed run adds shards
    grown = FeatureStore(tmp_path)
    assert len(reads) == len(grown.shards) - len(store.shards) > 0
    assert grown.keys() == list(utts) + list(more)
    for key in (next(iter(utts)), next(iter(more))):
        np.testing.assert_array_equal(grown[key], {**utts, **more}[key])
    # a damaged cache costs only the rebuild; a key absent or longer than any stored key is absent
    (tmp_path / INDEX_NAME).write_bytes(b"garbage")
    reads.clear()
    rebuilt = FeatureStore(tmp_path)
    assert len(reads) == len(rebuilt.shards) and rebuilt.keys() == grown.keys()
    assert "spk0/u00000" in rebuilt and "spk0/u0000" not in rebuilt and "spk0/u00000" + "x" * 40 not in rebuilt
    assert rebuilt.rows(["nope", "spk1/u00001"]).tolist() == [-1, 1]


def test_handles_are_bounded_and_reads_stay_correct(tmp_path, no_fsync):
    utts = write_store(tmp_path, 30, per_shard=3)
    store = FeatureStore(tmp_path, max_open=3)
    assert len(store.shards) >= 10 and (store.index.chunk_rows > 0).all() \
        and (store.index.stats_at >= 0).all()  # ShardWriter's shards: plain preads
    hdf5 = FeatureStore(tmp_path)
    hdf5.index.chunk_rows[:] = 0  # the same store read through h5py only
    hdf5.index.stats_at[:] = -1
    rows = hdf5.rows(list(utts))
    assert np.array_equal(hdf5.read_windows(rows, np.full(rows.size, 7), 50), store.read_windows(rows, np.full(rows.size, 7), 50))
    assert all(np.array_equal(a, b) for a, b in zip(hdf5.read_stats(rows), store.read_stats(rows)))
    assert all(np.array_equal(hdf5[k], store[k]) and np.array_equal(store[k], f) for k, f in utts.items())
    hdf5.close()
    for key, f in list(utts.items()) * 2:
        np.testing.assert_array_equal(store.window(key, 5, 20), f[5:25])
        mean, std = store.stats(key)
        np.testing.assert_allclose(mean, f.mean(0), atol=2e-2)
        assert len(store._files) <= 3
    info = FeatureStore(tmp_path).summary()  # from the index: no shard opened for it
    assert info["utterances"] == 30 and info["hours"] == pytest.approx(sum(f.shape[0] for f in utts.values())
                                                                       * 160 / 16000 / 3600)
    store.close()
    assert len(store._files) == 0


@pytest.mark.parametrize("norm", ["cmn", "cmvn", "none"])
def test_batched_reads_equal_one_by_one_reads(tmp_path, no_fsync, norm):
    utts = write_store(tmp_path, 36, per_shard=5, frames=(40, 260))  # short ones are tiled
    store = FeatureStore(tmp_path)
    keys = sorted(utts)[::-1]
    rows = store.rows(keys)
    lengths = store.row_lengths(rows)
    ds = WindowDataset(str(tmp_path), keys, np.arange(len(keys)) % 4, lengths, norm, store=store, rows=rows)
    one = WindowDataset(str(tmp_path), keys, np.arange(len(keys)) % 4, lengths, norm)
    sampler = WindowBatchSampler(lengths, 8, 150, seed=3, random_slicing=True)
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        for items in sampler:
            feats, labels = collate_windows(ds.__getitems__(items))
            ref_feats, ref_labels = collate_windows([one[it] for it in items])
            assert feats.dtype == ref_feats.dtype and labels.dtype == ref_labels.dtype
            assert np.array_equal(feats.numpy(), ref_feats.numpy()) and labels.tolist() == ref_labels.tolist()


def test_validation_reuses_the_training_store_and_the_index_is_built_once(tmp_path, no_fsync, monkeypatch):
    from dasv_cli.train.config import TrainConfig
    from dasv_cli.train.inputs import prepare_data

    utts = write_store(tmp_path / "feats", 24, per_shard=4, frames=(120, 200))
    keys = list(utts)
    (tmp_path / "labels.txt").write_text("".join(f"{k} {k.split('/')[0]}\n" for k in keys))
    pairs = list(zip(keys, keys[1:])) + list(zip(keys, keys[4:]))  # 4 speakers in turn: both kinds
    (tmp_path / "trials.txt").write_text("".join(f"{int(a[:4] == b[:4])} {a} {b}\n" for a, b in pairs))
    assert not (tmp_path / "feats" / INDEX_NAME).exists()  # no index yet: prepare_data builds it
    built = []
    real = store_index.StoreIndex
    monkeypatch.setattr(store_index, "StoreIndex", lambda *a: built.append(1) or real(*a))
    cfg = TrainConfig(train_labels=str(tmp_path / "labels.txt"), features=str(tmp_path / "feats"),
                      out=str(tmp_path / "out"), valid_trials=str(tmp_path / "trials.txt"), batch_size=4)
    cfg.check()
    data = prepare_data(cfg)
    assert data.valid is data.store and len(built) == 1
    assert data.store.rows(keys).tolist() == data.rows.tolist() and data.lengths.tolist() == [
        utts[k].shape[0] for k in keys]


def _limit_files(n: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    return apply


def test_training_on_more_shards_than_open_files_allow(tmp_path, no_fsync):
    limit = 96
    utts = write_store(tmp_path / "feats", 3 * 130, per_shard=3, frames=(110, 160), speakers=6)
    assert len(list((tmp_path / "feats").glob("shard-*.h5"))) > limit
    (tmp_path / "labels.txt").write_text("".join(f"{k} {k.split('/')[0]}\n" for k in utts))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    res = subprocess.run(
        [sys.executable, "-m", "dasv_cli", "train", "--train-labels", str(tmp_path / "labels.txt"),
         "--features", str(tmp_path / "feats"), "-o", str(tmp_path / "out"), "--kernel-size", "16",
         "--heads", "4", "--embedding-size", "16", "--window-seconds", "1", "--batch-size", "16",
         "--workers", "1", "--max-epochs", "2", "--print-every", "10"],
        capture_output=True, text=True, env=env, timeout=600, preexec_fn=_limit_files(limit))
    assert res.returncode == 0, res.stderr[-2000:]
    assert "stopped (max_epochs) at step 24, epoch 2" in res.stderr and (tmp_path / "out" / "last.pt").exists()
