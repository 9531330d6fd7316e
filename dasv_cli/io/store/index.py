"""The index of a feature store as flat numpy arrays, built once and cached beside the shards.

A million utterances as a dict of str -> tuple costs ~200 MB and seconds to build in every process;
as arrays (keys sorted in one fixed-width bytes array, looked up with searchsorted; shard, offset,
length per row) it is ~50 MB, crosses a fork without copy-on-write faults (no Python object per
key) and pickles as a few buffers. Per-utterance mean/std stay in the shards (640 MB as float32 for
1 M utterances would not fit a worker's budget; float16 would change the examples) and are read
through the reader's open datasets.

`DIR/.dasv-index.npz` caches the per-shard parts, each tagged with its shard's (name, size,
mtime_ns): a shard that is new or changed is read again, the others come from the cache, so a run
that adds shards (or another `--part`) reads only those. The cache is a plain npz loaded with
allow_pickle=False; a missing, stale, damaged or unwritable cache only costs the rebuild.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from dasv_cli.errors import DasvError, InputError
from dasv_cli.io.atomic import atomic_path
from dasv_cli.io.store.layout import REQUIRED, STORE_FORMAT, STORE_FORMAT_VERSION, check_shard, list_shards, open_shard

INDEX_NAME = ".dasv-index.npz"
INDEX_VERSION = 3


@dataclass
class ShardPart:
    """What the index holds of one shard (read from it, or from the cache)."""

    keys: np.ndarray  # bytes [n] (utf-8)
    offsets: np.ndarray  # int64 [n]
    lengths: np.ndarray  # int64 [n]
    samples: int  # total samples of the shard
    recipe_json: str
    dtype: str
    chunk_rows: int = 0  # feats rows per chunk when its chunks can be pread (raw_layout), else 0
    chunks: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # their byte offsets
    stats_at: tuple[int, int] = (-1, -1)  # byte offsets of the contiguous mean and std, or -1
    recipe_raw: Any = None  # the shard's `recipe` attr as stored (for _check)


def _signature(path: Path) -> tuple[int, int]:
    st = path.stat()
    return int(st.st_size), int(st.st_mtime_ns)


def _check(f: Any, path: Path, like: ShardPart | None) -> dict[str, Any]:
    """check_shard, in full once per store: a shard whose format and recipe attrs are byte for byte
    those of the store's first shard is that shard's recipe (the field-by-field comparison of ~20
    attrs is a third of reading a small shard's index)."""
    attrs = f.attrs
    if like is not None and attrs.get("format") == STORE_FORMAT and attrs.get("recipe") == like.recipe_raw \
            and int(attrs.get("format_version", -1)) == STORE_FORMAT_VERSION and all(n in f for n in REQUIRED):
        return {"recipe": None, "dtype": str(attrs["dtype"])}
    return check_shard(f, path)


def _blocks(ds: Any, expect: str) -> tuple[int, np.ndarray]:
    """(rows per block, byte offset of each block in row order) of a dataset whose values lie in
    the file as plain little-endian blocks (contiguous: one block; chunked without filters: its
    chunks, wherever HDF5 placed them); (0, []) when HDF5 must read it."""
    import h5py

    none = (0, np.zeros(0, dtype=np.int64))
    dsid = ds.id
    plist = dsid.get_create_plist()
    if ds.dtype.str != expect or plist.get_nfilters() != 0 or ds.size == 0:
        return none
    layout = plist.get_layout()
    if layout == h5py.h5d.CONTIGUOUS:
        offset = dsid.get_offset()
        return none if offset is None else (int(ds.shape[0]), np.array([offset], dtype=np.int64))
    if layout != h5py.h5d.CHUNKED or ds.chunks[1:] != ds.shape[1:] or not hasattr(dsid, "chunk_iter"):
        return none
    rows = int(ds.chunks[0])
    chunk_bytes = rows * int(np.prod(ds.shape[1:])) * ds.dtype.itemsize
    n = -(-ds.shape[0] // rows)
    offsets = np.full(n, -1, dtype=np.int64)

    def visit(info: Any) -> None:
        i = info.chunk_offset[0] // rows
        if info.size == chunk_bytes and i < n:
            offsets[i] = info.byte_offset

    dsid.chunk_iter(visit)
    return none if (offsets < 0).any() else (rows, offsets)


def raw_layout(f: Any, dtype: str) -> tuple[int, np.ndarray, int, int]:
    """Where feats, mean and std lie in a shard, so the reader can pread them without HDF5:
    (feats rows per chunk or 0, feats chunk offsets, mean offset or -1, std offset or -1)."""
    if sys.byteorder != "little":
        return 0, np.zeros(0, dtype=np.int64), -1, -1
    rows, chunks = _blocks(f["feats"], "<f2" if dtype == "float16" else "<f4")
    mean, std = (_blocks(f[name], "<f4") for name in ("mean", "std"))
    first = [int(b[1][0]) if b[0] == f[name].shape[0] else -1 for b, name in ((mean, "mean"), (std, "std"))]
    return rows, chunks, first[0], first[1]


def run_ends(chunks: np.ndarray, chunk_start: np.ndarray, chunk_rows: np.ndarray, row_bytes: int) -> np.ndarray:
    """Per chunk (in `chunks` order): the feats row where the run of chunks lying back to back in the
    file from it on ends, so rows [a, b) of a shard starting in chunk c are one pread when
    b <= run_end[c] (ShardWriter's chunks mostly follow each other; a window rarely crosses a gap)."""
    n = chunks.size
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    shard = np.repeat(np.arange(chunk_start.size - 1), np.diff(chunk_start))
    per = chunk_rows[shard]
    follows = np.zeros(n, dtype=bool)
    follows[:-1] = (shard[1:] == shard[:-1]) & (chunks[1:] == chunks[:-1] + per[:-1] * row_bytes)
    last = np.where(follows, n, np.arange(n))  # the chunks that end a run are their own last
    last = np.minimum.accumulate(last[::-1])[::-1]
    return (last - chunk_start[shard] + 1) * per


def read_part(path: Path, like: ShardPart | None = None) -> ShardPart:
    """One shard's keys, offsets, lengths and samples (the shard is opened once, briefly, and checked;
    `like`: a part already read from this store, whose recipe this shard shares when its attrs match)."""
    with open_shard(path) as f:
        info = _check(f, path, like)
        raw = f.attrs["recipe"]
        keys = np.asarray(f["keys"][()], dtype=object)
        part = ShardPart(
            keys=np.array([k if isinstance(k, bytes) else str(k).encode("utf-8") for k in keys], dtype=object),
            offsets=np.asarray(f["offsets"][()], dtype=np.int64),
            lengths=np.asarray(f["lengths"][()], dtype=np.int64),
            samples=int(np.asarray(f["samples"][()], dtype=np.int64).sum()) if "samples" in f else 0,
            recipe_json=like.recipe_json if info["recipe"] is None else json.dumps(info["recipe"], sort_keys=True),
            dtype=info["dtype"], recipe_raw=raw,
        )
        part.chunk_rows, part.chunks, mean_at, std_at = raw_layout(f, info["dtype"])
        part.stats_at = (mean_at, std_at)
    return part


class StoreIndex:
    """key -> row, and per row: shard, first frame in the shard's `feats`, frames, row in the shard."""

    def __init__(self, shards: Sequence[Path], parts: Sequence[ShardPart]) -> None:
        self.shards = list(shards)
        first = parts[0]
        for shard, part in zip(self.shards, parts):
            if part.recipe_json != first.recipe_json or part.dtype != first.dtype:
                raise InputError(f"{shard}: its feature recipe/dtype differs from {self.shards[0].name}; "
                                 f"a store must hold one recipe")
        self.recipe: dict[str, Any] = json.loads(first.recipe_json)
        self.dtype = first.dtype
        counts = np.array([p.keys.size for p in parts], dtype=np.int64)
        self.shard_start = np.zeros(len(parts) + 1, dtype=np.int64)  # first row of each shard
        np.cumsum(counts, out=self.shard_start[1:])
        self.shard = np.repeat(np.arange(len(parts), dtype=np.int32), counts)
        self.offset = np.concatenate([p.offsets for p in parts]) if parts else np.zeros(0, np.int64)
        self.length = np.concatenate([p.lengths for p in parts]) if parts else np.zeros(0, np.int64)
        self.shard_samples = np.array([p.samples for p in parts], dtype=np.int64)
        # pread without HDF5: feats rows per chunk (0: use HDF5), chunk offsets by shard, stats offsets
        self.chunk_rows = np.array([p.chunk_rows for p in parts], dtype=np.int64)
        self.chunk_start = np.zeros(len(parts) + 1, dtype=np.int64)
        np.cumsum([p.chunks.size for p in parts], out=self.chunk_start[1:])
        self.chunks = np.concatenate([p.chunks for p in parts]).astype(np.int64) if parts else np.zeros(0, np.int64)
        self.stats_at = np.array([p.stats_at for p in parts], dtype=np.int64).reshape(-1, 2)
        row_bytes = int(self.recipe.get("n_mels", 80)) * (2 if self.dtype == "float16" else 4)
        self.run_end = run_ends(self.chunks, self.chunk_start, self.chunk_rows, row_bytes)
        keys = np.concatenate([p.keys for p in parts]).astype(bytes) if parts else np.zeros(0, "S1")
        order = np.argsort(keys, kind="stable")
        self.sorted_keys = keys[order]
        self.sorted_rows = order.astype(np.int64)
        self.parts_meta = [(p.recipe_json, p.dtype, p.samples) for p in parts]
        same = np.flatnonzero(self.sorted_keys[1:] == self.sorted_keys[:-1])
        if same.size:
            a, b = sorted(self.sorted_rows[same[0]:same[0] + 2])
            key = self.sorted_keys[same[0]].decode("utf-8", "replace")
            raise InputError(f"{self.shards[self.shard[b]]}: key {key!r} is also stored in "
                             f"{self.shards[self.shard[a]].name}")

    def __len__(self) -> int:
        return int(self.length.size)

    def rows(self, keys: Sequence[str]) -> np.ndarray:
        """Row of each key, -1 where the store does not hold it (one vectorised search)."""
        n = len(keys)
        out = np.full(n, -1, dtype=np.int64)
        if n == 0 or not len(self):
            return out
        width = self.sorted_keys.dtype.itemsize
        enc = [k.encode("utf-8") if isinstance(k, str) else b"" for k in keys]
        fits = np.array([0 < len(e) <= width for e in enc], dtype=bool)
        if not fits.any():
            return out
        query = np.array([e for e, ok in zip(enc, fits) if ok], dtype=self.sorted_keys.dtype)
        pos = np.searchsorted(self.sorted_keys, query)
        pos = np.minimum(pos, len(self) - 1)
        hit = self.sorted_keys[pos] == query
        idx = np.flatnonzero(fits)
        out[idx[hit]] = self.sorted_rows[pos[hit]]
        return out

    def row(self, key: str) -> int:
        return int(self.rows([key])[0])

    def stored_keys(self) -> np.ndarray:
        """The keys as bytes, in stored order (shard by shard)."""
        stored = np.empty_like(self.sorted_keys)
        stored[self.sorted_rows] = self.sorted_keys
        return stored

    def keys(self) -> list[str]:
        """Keys in stored order (shard by shard)."""
        return [k.decode("utf-8") for k in self.stored_keys().tolist()]


def _load_cache(directory: Path, shards: Sequence[Path],
                sigs: Sequence[tuple[int, int]]) -> tuple[dict[str, ShardPart], bool]:
    """(cached parts whose shard is unchanged, by shard name; whether the cache is exactly current)."""
    path = directory / INDEX_NAME
    try:
        with np.load(path, allow_pickle=False) as z:
            if int(z["version"]) != INDEX_VERSION:
                return {}, False
            names = [n.decode("utf-8") for n in z["names"].tolist()]
            sig = z["sig"]
            start = z["start"]
            keys, offsets, lengths = z["keys"], z["offsets"], z["lengths"]
            samples, chunk_rows, chunk_start = z["samples"], z["chunk_rows"], z["chunk_start"]
            chunks, stats_at = z["chunks"], z["stats_at"]
            recipes = [r.decode("utf-8") for r in z["recipes"].tolist()]
            dtypes = [d.decode("utf-8") for d in z["dtypes"].tolist()]
    except (OSError, KeyError, ValueError, EOFError):
        return {}, False
    wanted = {p.name: s for p, s in zip(shards, sigs)}
    found = {}
    for i, name in enumerate(names):
        if wanted.get(name) == (int(sig[i, 0]), int(sig[i, 1])):
            lo, hi = int(start[i]), int(start[i + 1])
            found[name] = ShardPart(keys[lo:hi], offsets[lo:hi], lengths[lo:hi], int(samples[i]),
                                    recipes[i], dtypes[i], int(chunk_rows[i]),
                                    chunks[int(chunk_start[i]):int(chunk_start[i + 1])],
                                    (int(stats_at[i, 0]), int(stats_at[i, 1])))
    return found, len(found) == len(shards) == len(names)


def _save_cache(directory: Path, index: StoreIndex, sigs: Sequence[tuple[int, int]]) -> None:
    """Write the cache atomically; quietly nothing where the store is read-only or full."""
    arrays = {
        "version": np.array(INDEX_VERSION),
        "names": np.array([p.name.encode("utf-8") for p in index.shards], dtype=bytes),
        "sig": np.array(sigs, dtype=np.int64).reshape(-1, 2),
        "start": index.shard_start,
        "keys": index.stored_keys(),
        "offsets": index.offset, "lengths": index.length,
        "samples": index.shard_samples, "chunk_rows": index.chunk_rows, "chunk_start": index.chunk_start,
        "chunks": index.chunks, "stats_at": index.stats_at,
        "recipes": np.array([r.encode("utf-8") for r, _, _ in index.parts_meta], dtype=bytes),
        "dtypes": np.array([d.encode("utf-8") for _, d, _ in index.parts_meta], dtype=bytes),
    }
    try:
        with atomic_path(directory / INDEX_NAME, "feature store index") as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)
    except DasvError:
        pass


def open_index(directory: Path, shards: Sequence[Path]) -> StoreIndex:
    """The index of `shards` (the store's list_shards): unchanged shards from the cache, the rest read."""
    sigs = [_signature(p) for p in shards]
    cached, current = _load_cache(directory, shards, sigs)
    parts: list[ShardPart] = []
    like = None
    for p in shards:
        part = cached.get(p.name)
        if part is None:
            part = read_part(p, like)
            like = like or part
        parts.append(part)
    index = StoreIndex(shards, parts)
    if not current:
        _save_cache(directory, index, sigs)
    return index


def refresh_index(directory: Path) -> None:
    """Bring DIR's index cache up to date with its shards (the end of `dasv features` calls it, so that
    the first training open reads one file instead of every shard). A store that cannot be indexed
    is left as it is: the reader reports its problem when it is opened."""
    shards = list_shards(directory)
    if shards:
        try:
            open_index(directory, shards)
        except DasvError:
            pass
