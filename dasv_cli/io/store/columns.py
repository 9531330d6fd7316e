"""The buffered datasets of a shard being written: features and 16-bit PCM, appended in whole chunks."""

from __future__ import annotations

from typing import Any

import numpy as np

from dasv_cli.io.store.integrity import array_crc

BUFFER_CHUNKS = 64  # chunks gathered in memory before one write (64 x 128 frames x 80 x 4 B = 2.6 MB)


class Column:
    """One dataset of a shard appended to through a buffer of whole chunks (`feats`, or `audio`),
    so HDF5 writes each chunk whole and once."""

    def __init__(self, name: str, width: tuple[int, ...], dtype: str, chunk: int) -> None:
        self.name, self.width, self.dtype, self.chunk = name, width, dtype, max(1, int(chunk))
        self.buffer = np.empty((BUFFER_CHUNKS * self.chunk,) + width, dtype=dtype)
        self.ds: Any = None
        self.reset()

    def reset(self) -> None:
        self.ds = None
        self.written = 0  # rows added to the shard in progress
        self.flushed = 0  # of which in the file; the rest in the buffer
        self.crc = 0  # CRC-32 of the rows written so far (io.store.integrity)

    def create(self, f: Any, rows: int) -> None:
        """The dataset, sized for `rows` up front (chunks are allocated only when written; trimmed at the end)."""
        self.ds = f.create_dataset(self.name, shape=(max(rows, self.chunk),) + self.width,
                                   maxshape=(None,) + self.width, dtype=self.dtype, chunks=(self.chunk,) + self.width)

    def flush(self) -> None:
        count = self.written - self.flushed
        if count <= 0:
            return
        if self.written > self.ds.shape[0]:
            self.ds.resize(self.written, axis=0)
        self.ds[self.flushed:self.written] = self.buffer[:count]
        self.crc = array_crc(self.buffer[:count], self.crc)
        self.flushed = self.written

    def append(self, data: np.ndarray, flush: Any) -> None:
        """Copy `data` in (converting to the column's dtype), calling `flush()` whenever the buffer fills."""
        size = self.buffer.shape[0]
        done, rows = 0, int(data.shape[0])
        while done < rows:
            used = self.written - self.flushed
            take = min(rows - done, size - used)
            self.buffer[used:used + take] = data[done:done + take]
            done += take
            self.written += take
            if used + take == size:
                flush(self)


def pcm16(wave: np.ndarray) -> np.ndarray:
    """A float waveform in [-1, 1) as 16-bit PCM (what a 16-bit source file held: exact for those)."""
    return np.clip(np.rint(np.asarray(wave, dtype=np.float64) * 32768.0), -32768, 32767).astype(np.int16)


def starts(lengths: np.ndarray) -> np.ndarray:
    """int64 offset of each of a run of back-to-back pieces of `lengths`."""
    offsets = np.zeros(lengths.size, dtype=np.int64)
    if lengths.size > 1:
        np.cumsum(lengths[:-1], out=offsets[1:])
    return offsets
