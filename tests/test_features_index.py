"""`dasv features` leaves the store's index cache current, so the first training open reads no shard."""

from __future__ import annotations

from dasv_cli.features.run import featurize
from dasv_cli.io.store import index as store_index
from dasv_cli.io.store.index import INDEX_NAME
from dasv_cli.io.store.reader import FeatureStore


def test_features_run_writes_the_index_cache(tmp_path, demo_files, monkeypatch):
    out = tmp_path / "feats"
    lst = tmp_path / "a.lst"
    lst.write_text("".join(f"{p}\n" for p in demo_files[:2]))
    featurize(lst, out, jobs=1, progress=False, shard_frames=400)  # ~2 shards
    assert (out / INDEX_NAME).exists()
    lst.write_text("".join(f"{p}\n" for p in demo_files[:4]))  # a rerun adds shards: the cache follows
    featurize(lst, out, jobs=1, progress=False, shard_frames=400)
    reads = []
    real = store_index.read_part
    monkeypatch.setattr(store_index, "read_part", lambda p, *a: reads.append(p.name) or real(p, *a))
    store = FeatureStore(out)
    assert reads == [] and len(store) == 4 and len(store.shards) >= 3
    assert sorted(store.keys()) == sorted(str(p.with_suffix("")) for p in demo_files[:4])
