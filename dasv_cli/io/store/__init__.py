"""The HDF5 feature store: a directory of `shard-NNNNN.h5` files (`shard-pIIIIofNNNN-NNNNN.h5` from parts).

    layout.py    names, attrs and checks of a shard; the recipe policy (check_recipe)
    lock.py      StoreLock: one writer per directory, or one per part (`--part I/N`)
    writer.py    ShardWriter: shards committed atomically, so a rerun resumes; store housekeeping
    index.py     StoreIndex: flat arrays (keys sorted, shard/offset/length), cached in DIR/.dasv-index.npz
    handles.py   ShardHandle: one open shard (descriptor for pread, HDF5 only where needed); the open-file budget
    reader.py    FeatureStore: the index in memory (all shards, every part's), a bounded LRU of shards, windows read by pread or HDF5

    from dasv_cli.io.store.reader import FeatureStore
    with FeatureStore("features") as store:
        x = store.window("id10270/x6uYqmx31kE/00001", 0, 350)      # float32 [350, 80]
"""
