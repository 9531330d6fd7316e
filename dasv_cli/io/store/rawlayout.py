"""Where a shard's datasets lie in its file, so a reader can pread them without HDF5.

ShardWriter writes `feats` (and `audio`) uncompressed, in chunks that mostly follow each other in
the file, and `mean`/`std` contiguous; checked once per shard at index time (raw_layout, blocks),
the byte offsets let FeatureStore read a window with one os.preadv instead of an HDF5 open and
read. RawColumn holds one dataset's offsets for a whole store (feats; audio for waveform windows).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np


def blocks(ds: Any, expect: str) -> tuple[int, np.ndarray]:
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
    if sys.byteorder != "little" or "feats" not in f:
        return 0, np.zeros(0, dtype=np.int64), -1, -1
    rows, chunks = blocks(f["feats"], "<f2" if dtype == "float16" else "<f4")
    mean, std = (blocks(f[name], "<f4") for name in ("mean", "std"))
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



@dataclass
class RawColumn:
    """Where one dataset (`feats`, or `audio`) lies in every shard's file, so a reader can pread
    rows of it without HDF5: per shard its rows per chunk (0: read through HDF5), its chunks' byte
    offsets in row order, and where each run of chunks lying back to back ends (run_ends)."""

    name: str
    row_bytes: int
    chunk_rows: np.ndarray  # int64 [shards]
    chunk_start: np.ndarray  # int64 [shards + 1]: first entry of each shard's chunks
    chunks: np.ndarray  # int64: byte offsets
    run_end: np.ndarray  # int64 per chunk

    @classmethod
    def of(cls, name: str, row_bytes: int, layouts: Sequence[tuple[int, np.ndarray]]) -> "RawColumn":
        """From each shard's (rows per chunk, chunk offsets)."""
        chunk_rows = np.array([rows for rows, _ in layouts], dtype=np.int64)
        chunk_start = np.zeros(len(layouts) + 1, dtype=np.int64)
        np.cumsum([c.size for _, c in layouts], out=chunk_start[1:])
        chunks = np.concatenate([c for _, c in layouts]).astype(np.int64) if layouts else np.zeros(0, np.int64)
        return cls(name, row_bytes, chunk_rows, chunk_start, chunks,
                   run_ends(chunks, chunk_start, chunk_rows, row_bytes))

    def locate(self, shard: np.ndarray, first: np.ndarray, take: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(byte offset, one-pread?) of rows [first, first + take) of each shard: one pread where the
        rows lie in one run of adjacent chunks (nearly always for ShardWriter's shards)."""
        per = self.chunk_rows[shard]
        direct = per > 0
        chunk = np.where(direct, self.chunk_start[shard] + first // np.maximum(per, 1), 0)
        byte = np.zeros(shard.size, dtype=np.int64)
        if self.chunks.size:
            chunk = np.minimum(chunk, self.chunks.size - 1)
            byte = self.chunks[chunk] + (first - (chunk - self.chunk_start[shard]) * per) * self.row_bytes
            direct &= first + take <= self.run_end[chunk]
        return byte, direct
