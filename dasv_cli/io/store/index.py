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
from dasv_cli.io.store.layout import (
    STORE_FORMAT,
    STORE_FORMAT_VERSION,
    check_shard,
    list_shards,
    open_shard,
    required,
    shard_content,
)
from dasv_cli.io.store.rawlayout import RawColumn, blocks, raw_layout

INDEX_NAME = ".dasv-index.npz"
INDEX_VERSION = 4


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
    content: str = "features"  # layout.CONTENTS
    audio_offsets: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # [n] or [] without audio
    audio_lengths: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # [n] samples
    audio_rows: int = 0  # samples per `audio` chunk when pread-able, else 0
    audio_chunks: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


def _signature(path: Path) -> tuple[int, int]:
    st = path.stat()
    return int(st.st_size), int(st.st_mtime_ns)


def _check(f: Any, path: Path, like: ShardPart | None) -> dict[str, Any]:
    """check_shard, in full once per store: a shard whose format and recipe attrs are byte for byte
    those of the store's first shard is that shard's recipe (the field-by-field comparison of ~20
    attrs is a third of reading a small shard's index)."""
    attrs = f.attrs
    if like is not None and attrs.get("format") == STORE_FORMAT and attrs.get("recipe") == like.recipe_raw \
            and int(attrs.get("format_version", -1)) == STORE_FORMAT_VERSION and shard_content(attrs) == like.content \
            and all(n in f for n in required(like.content)):
        return {"recipe": None, "dtype": str(attrs["dtype"]), "content": like.content}
    return check_shard(f, path)


def read_part(path: Path, like: ShardPart | None = None) -> ShardPart:
    """One shard's keys, offsets, lengths and samples (the shard is opened once, briefly, and checked;
    `like`: a part already read from this store, whose recipe this shard shares when its attrs match)."""
    with open_shard(path) as f:
        info = _check(f, path, like)
        raw = f.attrs["recipe"]
        keys = np.asarray(f["keys"][()], dtype=object)
        n = keys.size
        samples = np.asarray(f["samples"][()], dtype=np.int64) if "samples" in f else np.zeros(n, np.int64)
        features = info["content"] != "audio"
        part = ShardPart(
            keys=np.array([k if isinstance(k, bytes) else str(k).encode("utf-8") for k in keys], dtype=object),
            offsets=np.asarray(f["offsets"][()], dtype=np.int64) if features else np.zeros(n, np.int64),
            lengths=np.asarray(f["lengths"][()], dtype=np.int64) if features else np.zeros(n, np.int64),
            samples=int(samples.sum()),
            recipe_json=like.recipe_json if info["recipe"] is None else json.dumps(info["recipe"], sort_keys=True),
            dtype=info["dtype"], recipe_raw=raw, content=info["content"],
        )
        part.chunk_rows, part.chunks, mean_at, std_at = raw_layout(f, info["dtype"])
        part.stats_at = (mean_at, std_at)
        if info["content"] != "features":
            part.audio_offsets = np.asarray(f["audio_offsets"][()], dtype=np.int64)
            part.audio_lengths = samples
            if sys.byteorder == "little":
                part.audio_rows, part.audio_chunks = blocks(f["audio"], "<i2")
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
            if part.content != first.content:
                raise InputError(f"{shard}: holds {part.content} but {self.shards[0].name} holds {first.content}; "
                                 f"a store holds one kind of content (rerun `dasv features` with the same options)")
        self.recipe: dict[str, Any] = json.loads(first.recipe_json)
        self.dtype = first.dtype
        self.content = first.content if parts else "features"
        counts = np.array([p.keys.size for p in parts], dtype=np.int64)
        self.shard_start = np.zeros(len(parts) + 1, dtype=np.int64)  # first row of each shard
        np.cumsum(counts, out=self.shard_start[1:])
        self.shard = np.repeat(np.arange(len(parts), dtype=np.int32), counts)
        self.offset = np.concatenate([p.offsets for p in parts]) if parts else np.zeros(0, np.int64)
        self.length = np.concatenate([p.lengths for p in parts]) if parts else np.zeros(0, np.int64)
        self.shard_samples = np.array([p.samples for p in parts], dtype=np.int64)
        # pread without HDF5: feats rows per chunk (0: use HDF5), chunk offsets by shard, stats offsets
        row_bytes = int(self.recipe.get("n_mels", 80)) * (2 if self.dtype == "float16" else 4)
        self.feats = RawColumn.of("feats", row_bytes, [(p.chunk_rows, p.chunks) for p in parts])
        self.chunk_rows, self.chunk_start = self.feats.chunk_rows, self.feats.chunk_start
        self.chunks, self.run_end = self.feats.chunks, self.feats.run_end
        self.stats_at = np.array([p.stats_at for p in parts], dtype=np.int64).reshape(-1, 2)
        # the waveforms (content with audio): per row first sample and samples; their chunks
        self.has_audio = self.content != "features"
        self.audio = RawColumn.of("audio", 2, [(p.audio_rows, p.audio_chunks) for p in parts])
        self.audio_offset = np.concatenate([p.audio_offsets for p in parts]) if self.has_audio else np.zeros(0, np.int64)
        self.audio_length = np.concatenate([p.audio_lengths for p in parts]) if self.has_audio else np.zeros(0, np.int64)
        keys = np.concatenate([p.keys for p in parts]).astype(bytes) if parts else np.zeros(0, "S1")
        order = np.argsort(keys, kind="stable")
        self.sorted_keys = keys[order]
        self.sorted_rows = order.astype(np.int64)
        self.parts_meta = [(p.recipe_json, p.dtype, p.samples, p.content) for p in parts]
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
            contents = [c.decode("utf-8") for c in z["contents"].tolist()]
            audio_offsets, audio_lengths = z["audio_offsets"], z["audio_lengths"]
            audio_rows, audio_chunk_start, audio_chunks = z["audio_rows"], z["audio_chunk_start"], z["audio_chunks"]
    except (OSError, KeyError, ValueError, EOFError):
        return {}, False
    wanted = {p.name: s for p, s in zip(shards, sigs)}
    found = {}
    for i, name in enumerate(names):
        if wanted.get(name) == (int(sig[i, 0]), int(sig[i, 1])):
            lo, hi = int(start[i]), int(start[i + 1])
            audio = slice(lo, hi) if contents[i] != "features" else slice(0, 0)
            found[name] = ShardPart(keys[lo:hi], offsets[lo:hi], lengths[lo:hi], int(samples[i]),
                                    recipes[i], dtypes[i], int(chunk_rows[i]),
                                    chunks[int(chunk_start[i]):int(chunk_start[i + 1])],
                                    (int(stats_at[i, 0]), int(stats_at[i, 1])), content=contents[i],
                                    audio_offsets=audio_offsets[audio], audio_lengths=audio_lengths[audio],
                                    audio_rows=int(audio_rows[i]),
                                    audio_chunks=audio_chunks[int(audio_chunk_start[i]):int(audio_chunk_start[i + 1])])
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
        "recipes": np.array([m[0].encode("utf-8") for m in index.parts_meta], dtype=bytes),
        "dtypes": np.array([m[1].encode("utf-8") for m in index.parts_meta], dtype=bytes),
        "contents": np.array([m[3].encode("utf-8") for m in index.parts_meta], dtype=bytes),
        # rows of a store with audio (every row has audio: a store holds one content), else empty
        "audio_offsets": index.audio_offset, "audio_lengths": index.audio_length,
        "audio_rows": index.audio.chunk_rows, "audio_chunk_start": index.audio.chunk_start,
        "audio_chunks": index.audio.chunks,
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
