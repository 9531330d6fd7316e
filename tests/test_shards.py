"""The HDF5 feature store: writing (atomic shards, rotation, dtype), reading (index, windows, stats), fork safety, lock."""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle

import h5py
import numpy as np
import pytest

from dasv_cli.dsp.logmel import LogMelConfig, utterance_stats
from dasv_cli.errors import DasvError, InputError
from dasv_cli.io.store.layout import Part, list_shards, list_temporary
from dasv_cli.io.store.lock import StoreLock
from dasv_cli.io.store.reader import FeatureStore
from dasv_cli.io.store.writer import ShardWriter

RECIPE = LogMelConfig().to_dict()


def _utterances(n: int = 7, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {f"spk{i % 3}/utt-{i}": (rng.standard_normal((50 + 37 * i, 80)) * 2 + i).astype(np.float32)
            for i in range(n)}


def _write(directory, utts, **kw) -> list:
    with ShardWriter(directory, RECIPE, **kw) as w:
        for key, f in utts.items():
            m, s = utterance_stats(f)
            w.add(key, f, m, s, samples=f.shape[0] * 160 + 352)
    return w.completed


def test_round_trip_with_rotation_windows_and_stats(tmp_path):
    utts = _utterances()
    shards = _write(tmp_path, utts, shard_frames=300, chunk_frames=64)
    assert len(shards) > 2 and list_shards(tmp_path) == shards and not list_temporary(tmp_path)
    store = FeatureStore(tmp_path)
    assert len(store) == len(utts) and store.keys() == list(utts)
    assert "spk0/utt-0" in store and "nope" not in store
    assert store.recipe == RECIPE and store.dtype == "float32"
    for key, f in utts.items():
        np.testing.assert_array_equal(store[key], f)
        assert store.length(key) == f.shape[0]
        np.testing.assert_array_equal(store.window(key, 13, 29), f[13:42])
        np.testing.assert_array_equal(store.window(key, f.shape[0] - 5, 5), f[-5:])
        mean, std = store.stats(key)
        np.testing.assert_allclose(mean, f.mean(0), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(std, f.std(0), rtol=1e-5)
        assert store.samples(key) == f.shape[0] * 160 + 352
    with h5py.File(shards[0]) as h:
        assert h["feats"].chunks == (64, 80)  # chunked along frames
        assert h.attrs["hop_length"] == 160 and h.attrs["n_mels"] == 80 and h.attrs["format"] == "dasv-features"
    info = store.summary()
    assert info["utterances"] == len(utts) and info["frames"] == sum(f.shape[0] for f in utts.values())
    with pytest.raises(ValueError, match="outside"):
        store.window("spk0/utt-0", 40, 20)
    with pytest.raises(KeyError, match="not in the feature store"):
        store["nope"]
    store.close()


def test_utterances_across_buffer_writes_and_shard_ends(tmp_path):
    """The writer gathers BUFFER_CHUNKS chunks before a write: utterances split across writes, a
    buffer written exactly full, shards ending mid-buffer, float16 conversion on the way."""
    from dasv_cli.io.store.columns import BUFFER_CHUNKS

    size = BUFFER_CHUNKS * 2  # frames in the buffer with chunk_frames=2
    rng = np.random.default_rng(5)
    lengths = [size - 7, 7, 3 * size + 5, 1, size, 11, 2 * size - 1]
    utts = {f"u{i}": (rng.standard_normal((n, 80)) * 4).astype(np.float32) for i, n in enumerate(lengths)}
    for dtype in ("float32", "float16"):
        d = tmp_path / dtype
        shards = _write(d, utts, chunk_frames=2, shard_frames=4 * size, dtype=dtype)
        assert len(shards) == 2
        with FeatureStore(d) as store:
            for key, f in utts.items():
                np.testing.assert_array_equal(store[key], f.astype(dtype).astype(np.float32))
            assert store.total_frames() == sum(lengths)


def test_float16_store_returns_float32(tmp_path):
    utts = _utterances(3)
    _write(tmp_path, utts, dtype="float16")
    store = FeatureStore(tmp_path)
    assert store.dtype == "float16"
    for key, f in utts.items():
        got = store[key]
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, f.astype(np.float16).astype(np.float32))
        np.testing.assert_allclose(store.stats(key)[0], f.mean(0), rtol=1e-5, atol=1e-5)  # stats from float32


def test_unfinished_shard_is_invisible_and_abort_removes_it(tmp_path):
    utts = _utterances(3)
    w = ShardWriter(tmp_path, RECIPE)
    for key, f in utts.items():
        w.add(key, f, *utterance_stats(f), samples=1000)
    assert list_shards(tmp_path) == [] and len(list_temporary(tmp_path)) == 1  # only a temporary name
    with pytest.raises(InputError, match="no feature shards"):
        FeatureStore(tmp_path)
    w.abort()
    assert list_temporary(tmp_path) == [] and list_shards(tmp_path) == []
    # a new writer continues the numbering after existing complete shards
    first = _write(tmp_path, utts)
    second = _write(tmp_path, _utterances(2, seed=5))  # the same keys once more: a store refuses that
    assert [p.name for p in first + second] == ["shard-00000.h5", "shard-00001.h5"]
    with pytest.raises(InputError, match="also stored in"):
        FeatureStore(tmp_path)


def _child_read(store: FeatureStore, key: str, queue) -> None:
    queue.put((store.window(key, 3, 10), len(store._files)))


def test_store_is_fork_and_pickle_safe(tmp_path):
    utts = _utterances(3)
    _write(tmp_path, utts)
    store = FeatureStore(tmp_path)
    key = next(iter(utts))
    np.testing.assert_array_equal(store[key], utts[key])  # parent has a handle open now
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child_read, args=(store, key, queue))
    proc.start()
    window, handles = queue.get(timeout=60)
    proc.join(60)
    assert proc.exitcode == 0
    np.testing.assert_array_equal(window, utts[key][3:13])
    assert handles == 1  # the child opened its own handle
    clone = pickle.loads(pickle.dumps(store))
    np.testing.assert_array_equal(clone.window(key, 0, 5), utts[key][:5])
    np.testing.assert_array_equal(store.window(key, 0, 5), utts[key][:5])  # parent handle still fine


def test_not_a_store(tmp_path):
    with pytest.raises(InputError, match="no such feature store"):
        FeatureStore(tmp_path / "nowhere")
    (tmp_path / "shard-00000.h5").write_bytes(b"not hdf5 at all")
    with pytest.raises(InputError, match="not a readable feature shard"):
        FeatureStore(tmp_path)


def test_lock_excludes_a_second_writer(tmp_path):
    first = StoreLock(tmp_path).acquire()
    with pytest.raises(DasvError, match=rf"another `dasv features` run \(pid {os.getpid()}\)"):
        StoreLock(tmp_path).acquire()
    first.release()
    with StoreLock(tmp_path):
        pass


def test_temporary_names_are_never_shards(tmp_path):
    """io.atomic's temporary names, and the fixed `.shard-N.h5.tmp` of earlier versions, are temporaries."""
    temporaries = [".shard-00000.h5.k2j_x9.tmp", ".shard-00001.h5.tmp", ".failed.tsv.ab12cd.tmp"]
    for name in temporaries + ["shard-00002.h5.bak", ".shard-0003.h5.tmp", "notes.tmp"]:
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in list_temporary(tmp_path)] == sorted(temporaries)
    assert list_shards(tmp_path) == []


def test_part_shards_carry_the_part_and_the_reader_takes_the_union(tmp_path):
    utts = _utterances(9)
    items = list(utts.items())
    plain = _write(tmp_path, dict(items[:3]))
    with ShardWriter(tmp_path, RECIPE, part=Part(2, 8), shard_frames=300) as w:
        for key, f in items[3:6]:
            w.add(key, f, *utterance_stats(f), samples=f.shape[0] * 160 + 352)
    with ShardWriter(tmp_path, RECIPE, part=Part(1, 8)) as w:
        for key, f in items[6:]:
            w.add(key, f, *utterance_stats(f), samples=f.shape[0] * 160 + 352)
    names = [p.name for p in list_shards(tmp_path)]
    assert names[:len(plain)] == [p.name for p in plain] == ["shard-00000.h5"]
    assert names[1] == "shard-p0001of0008-00000.h5" and names[2:] == [
        f"shard-p0002of0008-{i:05d}.h5" for i in range(len(names) - 2)] and len(names) > 3
    with ShardWriter(tmp_path, RECIPE, part=Part(1, 8)) as w:  # a part's numbers go on from its own last shard
        w.add("more", items[0][1], *utterance_stats(items[0][1]), samples=1)
    assert w.completed[0].name == "shard-p0001of0008-00001.h5"
    with FeatureStore(tmp_path) as store:
        assert sorted(store.keys()) == sorted(list(utts) + ["more"])
        for key, f in utts.items():
            np.testing.assert_array_equal(store[key], f)


def test_a_key_in_two_parts_is_an_error_naming_both_shards(tmp_path):
    f = _utterances(1)["spk0/utt-0"]
    for part in (Part(1, 2), Part(2, 2)):
        with ShardWriter(tmp_path, RECIPE, part=part) as w:
            w.add("spk0/utt-0", f, *utterance_stats(f), samples=1)
    with pytest.raises(InputError, match=r"shard-p0002of0002-00000\.h5: key 'spk0/utt-0' is also stored in "
                                         r"shard-p0001of0002-00000\.h5"):
        FeatureStore(tmp_path)


def test_part_locks_coexist_and_exclude_the_same_part_and_a_whole_run(tmp_path):
    one, two = StoreLock(tmp_path, Part(1, 2)).acquire(), StoreLock(tmp_path, Part(2, 2)).acquire()
    with pytest.raises(DasvError, match=rf"part 2/2 is already being computed by another run \(pid {os.getpid()}\)"):
        StoreLock(tmp_path, Part(2, 2)).acquire()
    with pytest.raises(DasvError, match=r"`dasv features --part` runs are writing to this directory"):
        StoreLock(tmp_path).acquire()
    one.release()
    with pytest.raises(DasvError, match="--part` runs are writing"):  # one part is still running
        StoreLock(tmp_path).acquire()
    two.release()
    whole = StoreLock(tmp_path).acquire()
    with pytest.raises(DasvError, match=rf"a `dasv features` run without --part \(pid {os.getpid()}\) on "):
        StoreLock(tmp_path, Part(1, 2)).acquire()
    whole.release()
    with StoreLock(tmp_path, Part(1, 2)):
        pass


def test_part_temporaries_are_told_apart(tmp_path):
    names = {None: [".shard-00000.h5.k2j_x9.tmp", ".failed.tsv.ab12cd.tmp"],
             Part(1, 2): [".shard-p0001of0002-00003.h5.q8z_0a.tmp", ".failed-p0001of0002.tsv.x1y2z3.tmp"],
             Part(1, 20): [".shard-p0001of0020-00000.h5.aa11bb.tmp"],
             Part(10, 20): [".shard-p0010of0020-00000.h5.cc22dd.tmp"]}
    for group in names.values():
        for name in group:
            (tmp_path / name).write_bytes(b"")
    (tmp_path / "shard-p0001of0002-00003.h5.bak").write_bytes(b"")
    assert [p.name for p in list_temporary(tmp_path)] == sorted(n for g in names.values() for n in g)
    for part in (Part(1, 2), Part(1, 20), Part(10, 20)):
        assert [p.name for p in list_temporary(tmp_path, part)] == sorted(names[part])
    assert list_shards(tmp_path) == []
