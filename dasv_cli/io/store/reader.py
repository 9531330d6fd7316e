"""Reading a feature store: FeatureStore (the index as flat arrays, windows read from HDF5 on demand).

Callers see keys, lengths, windows and stats only. The index (io.store.index: key -> row; per row
shard, offset, length) is built once per process at most (cached beside the shards) and crosses a
fork or a pickle as a few numpy buffers. Shard handles (io.store.handles) are a per-process LRU of
at most `max_open` shards (derived from the open-file limit). Where a shard's feats/mean/std lie in
the file as plain blocks (uncompressed, chunks in row order: what ShardWriter writes; checked once,
at index time) a read is one os.pread of a plain descriptor, so a random window in any of thousands
of shards costs no HDF5 open; other shards are read through h5py with the datasets kept open.
A batch (read_windows, read_stats) is read in shard/offset order, each window one os.preadv
straight into its slot of one array in the stored dtype: the per-window Python, small arrays and
float16 conversions cost more than the reads did (bench/train_loader.py, the breakdown).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from dasv_cli.errors import InputError
from dasv_cli.io.paths import require_dir
from dasv_cli.io.store.handles import ShardHandle, default_max_open
from dasv_cli.io.store.index import StoreIndex, open_index
from dasv_cli.io.store.layout import list_shards
from dasv_cli.io.store.rawlayout import RawColumn


def tile_rows(buf: np.ndarray, n: int) -> None:
    """Fill buf[n:] with buf[:n] repeated along time, in place (np.tile of buf[:n] cut to len(buf)):
    how an utterance shorter than its window fills it, for the batched reads and train.windows alike."""
    frames = buf.shape[0]
    while n < frames:  # what is there copied after itself: n stays a multiple of the period
        k = min(n, frames - n)
        buf[n:n + k] = buf[:k]
        n += k

class FeatureStore:
    """Read access to a feature store directory: index in memory, HDF5 opened lazily per process.

    Safe after fork (DataLoader workers): handles opened in another process are never reused.
    `index` may be handed in (a StoreIndex built by another FeatureStore over the same shards).
    """

    def __init__(self, path: str | Path, index: StoreIndex | None = None, max_open: int | None = None) -> None:
        self.path = Path(path)
        require_dir(self.path, "a feature store (a directory of shard-*.h5)", missing="no such feature store")
        if index is None:
            shards = list_shards(self.path)
            if not shards:
                raise InputError(f"{self.path}: no feature shards (shard-*.h5); create them with `dasv features`")
            index = open_index(self.path, shards)
        self._ix = index
        self._n_mels = int((index.recipe or {}).get("n_mels", 80))
        self._shards = index.shards
        self._max_open = int(max_open or default_max_open())
        self._files: OrderedDict[int, ShardHandle] = OrderedDict()
        self._pid = os.getpid()

    @property
    def index(self) -> StoreIndex:
        """The flat index (for handing to another process or a second FeatureStore)."""
        return self._ix

    # -- process-local handles ------------------------------------------------------------------
    def _handle(self, s: int) -> ShardHandle:
        if self._pid != os.getpid():  # forked: never touch the parent's HDF5 handles
            for inherited in self._files.values():
                inherited.close(hdf5=False)  # the copied descriptors are this process's to close
            self._files = OrderedDict()
            self._pid = os.getpid()
        h = self._files.get(s)
        if h is not None:
            self._files.move_to_end(s)
            return h
        while len(self._files) >= self._max_open:
            _, old = self._files.popitem(last=False)
            old.close()
        h = ShardHandle(self._shards[s])
        self._files[s] = h
        return h

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_files"] = OrderedDict()
        return state

    def close(self) -> None:
        """Close this process's HDF5 handles (the index stays: reads reopen what they need)."""
        if self._pid == os.getpid():
            for h in self._files.values():
                h.close()
        self._files = OrderedDict()

    def __enter__(self) -> "FeatureStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass

    # -- index ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._ix)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._ix.row(key) >= 0

    def __iter__(self) -> Iterator[str]:
        return iter(self._ix.keys())

    def keys(self) -> list[str]:
        """Keys in stored order (shard by shard)."""
        return self._ix.keys()

    def rows(self, keys: Sequence[str]) -> np.ndarray:
        """int64 row of each key (-1 where absent): what read_windows / read_stats take."""
        return self._ix.rows(keys)

    @property
    def recipe(self) -> dict[str, Any]:
        """The feature recipe (LogMelConfig.to_dict() of the writer)."""
        return dict(self._ix.recipe or {})

    @property
    def dtype(self) -> str:
        return self._ix.dtype or "float32"

    @property
    def n_mels(self) -> int:
        return self._n_mels

    @property
    def shards(self) -> list[Path]:
        return list(self._shards)

    def _row(self, key: str) -> int:
        row = self._ix.row(key) if isinstance(key, str) else -1
        if row < 0:
            raise KeyError(f"{key!r} is not in the feature store {self.path}")
        return row

    def row_lengths(self, rows: np.ndarray) -> np.ndarray:
        """int64 frames of each row."""
        return self._ix.length[np.asarray(rows, dtype=np.int64)]

    def length(self, key: str) -> int:
        """Frames of utterance `key`."""
        return int(self._ix.length[self._row(key)])

    def lengths(self) -> dict[str, int]:
        """{key: frames} for every utterance."""
        return dict(zip(self._ix.keys(), self._ix.length.tolist()))

    def total_frames(self) -> int:
        return int(self._ix.length.sum())

    # -- data -------------------------------------------------------------------------------
    @property
    def _row_bytes(self) -> int:
        return self._n_mels * (2 if self.dtype == "float16" else 4)

    def _rows_as_stored(self, h: ShardHandle, s: int, off: int, frames: int) -> np.ndarray:
        """Rows [off, off + frames) of shard s's feats in the stored dtype (a read-only view or a copy)."""
        per = int(self._ix.chunk_rows[s])
        if per > 0 and frames > 0:
            raw = self._pread_rows(h, s, per, off, frames)
            if raw is not None:
                return raw
        return h.file()["feats"][off:off + frames]

    def _read(self, row: int, start: int, frames: int) -> np.ndarray:
        s = int(self._ix.shard[row])
        raw = self._rows_as_stored(self._handle(s), s, int(self._ix.offset[row]) + start, frames)
        return np.asarray(raw, dtype=np.float32) if raw.dtype != np.float32 else np.array(raw)

    def _pread_rows(self, h: ShardHandle, s: int, per: int, off: int, frames: int) -> np.ndarray | None:
        """Rows [off, off + frames) of a shard's feats, one pread per run of adjacent chunks."""
        row_bytes = self._row_bytes
        first, last = off // per, (off + frames - 1) // per
        where = self._ix.chunks[int(self._ix.chunk_start[s]) + first:int(self._ix.chunk_start[s]) + last + 1]
        pieces = []
        lo = off
        c = 0
        while c < where.size:  # merge chunks that follow each other in the file into one read
            d = c
            while d + 1 < where.size and where[d + 1] == where[d] + per * row_bytes:
                d += 1
            end = min(off + frames, (first + d + 1) * per)
            start_in = (lo - (first + c) * per) * row_bytes
            buf = h.pread((end - lo) * row_bytes, int(where[c]) + start_in)
            if buf is None:
                return None
            pieces.append(buf)
            lo, c = end, d + 1
        data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        return np.frombuffer(data, dtype="<f2" if self.dtype == "float16" else "<f4").reshape(frames, self.n_mels)

    def __getitem__(self, key: str) -> np.ndarray:
        """The whole utterance, float32 [frames, n_mels] (raw log-mel, as stored)."""
        row = self._row(key)
        return self._read(row, 0, int(self._ix.length[row]))

    def window(self, key: str, start: int, frames: int) -> np.ndarray:
        """Frames [start, start + frames) of `key`, float32 [frames, n_mels]; reads only those chunks."""
        row = self._row(key)
        n = int(self._ix.length[row])
        start, frames = int(start), int(frames)
        if start < 0 or frames < 0 or start + frames > n:
            raise ValueError(f"{key!r}: window [{start}, {start + frames}) outside its {n} frames")
        return self._read(row, start, frames)

    def read_windows(self, rows: np.ndarray, starts: np.ndarray, frames: int) -> np.ndarray:
        """[B, frames, n_mels] in the stored dtype (float16 or float32: the caller converts the whole
        batch in one op): row i's frames from starts[i] (clamped into the utterance), or the whole
        utterance tiled when it is shorter. Read in shard/offset order; a window whose chunks lie back
        to back in the file (StoreIndex.run_end: nearly all) is one preadv straight into its slot."""
        ix = self._ix
        rows = np.asarray(rows, dtype=np.int64)
        frames = int(frames)
        out = np.empty((rows.size, frames, self.n_mels), dtype=np.float16 if self.dtype == "float16" else np.float32)
        if rows.size == 0 or frames == 0:
            return out
        lengths = ix.length[rows]
        take = np.minimum(lengths, frames)  # rows read; a shorter utterance is read whole, then tiled
        starts = np.minimum(np.maximum(np.asarray(starts, dtype=np.int64), 0), lengths - take)
        self._gather(ix.feats, ix.shard[rows].astype(np.int64), ix.offset[rows] + starts, take, out, tile=True)
        return out

    def _gather(self, col: RawColumn, shard: np.ndarray, first: np.ndarray, take: np.ndarray,
                out: np.ndarray, tile: bool) -> None:
        """out[i, :take[i]] = rows [first[i], first[i] + take[i]) of shard[i]'s dataset `col.name`, read
        in shard/offset order, each one preadv straight into its slot where its chunks lie back to back
        in the file (nearly all), else through HDF5; the rest of each slot tiled (`tile`) or zeroed."""
        byte, direct = col.locate(shard, first, take)
        row_bytes = col.row_bytes
        slot = int(np.prod(out.shape[1:])) * out.itemsize
        view = memoryview(out.reshape(-1)).cast("B")
        order = np.lexsort((first, shard))
        last_s, h = -1, None
        for i, s, off, n, at, one in zip(order.tolist(), shard[order].tolist(), first[order].tolist(),
                                         take[order].tolist(), byte[order].tolist(), direct[order].tolist()):
            if s != last_s:
                h, last_s = self._handle(s), s
            if not (one and h.pread_into(view[i * slot:i * slot + n * row_bytes], at)):
                out[i, :n] = self._rows_as_stored(h, s, off, n) if col.name == "feats" else h.file()[col.name][off:off + n]
            if tile:
                tile_rows(out[i], n)
            else:
                out[i, n:] = 0

    # -- waveforms (a store made with --keep-audio or --audio-only) --------------------------------
    @property
    def has_audio(self) -> bool:
        """Whether the store holds each utterance's 16-bit PCM (content "features+audio" or "audio")."""
        return bool(self._ix.has_audio)

    @property
    def has_features(self) -> bool:
        return self._ix.content != "audio"

    def row_samples(self, rows: np.ndarray) -> np.ndarray:
        """int64 samples of each row's waveform (requires has_audio)."""
        return self._ix.audio_length[np.asarray(rows, dtype=np.int64)]

    def read_audio_windows(self, rows: np.ndarray, starts: np.ndarray, samples: int,
                           fill: str = "zeros") -> np.ndarray:
        """int16 [B, samples]: row i's PCM from sample starts[i] (clamped into the utterance); a
        shorter utterance read whole, then zero-padded (`fill="zeros"`: training windows, whose
        frames are tiled after the log-mel) or repeated (`fill="tile"`: a noise fills its window)."""
        ix = self._ix
        if not ix.has_audio:
            raise InputError(f"{self.path}: holds no waveforms; make the store with `dasv features --keep-audio` "
                             f"(or --audio-only for noise and RIR corpora)")
        rows = np.asarray(rows, dtype=np.int64)
        samples = int(samples)
        out = np.empty((rows.size, samples), dtype=np.int16)
        if rows.size == 0 or samples == 0:
            return out
        lengths = ix.audio_length[rows]
        take = np.minimum(lengths, samples)
        starts = np.minimum(np.maximum(np.asarray(starts, dtype=np.int64), 0), lengths - take)
        self._gather(ix.audio, ix.shard[rows].astype(np.int64), ix.audio_offset[rows] + starts, take, out,
                     tile=fill == "tile")
        return out

    def audio(self, key: str) -> np.ndarray:
        """The whole utterance's PCM, int16 [samples]."""
        row = self._row(key)
        n = int(self.row_samples(np.array([row]))[0])
        return self.read_audio_windows(np.array([row]), np.zeros(1, np.int64), n)[0]

    def read_stats(self, rows: np.ndarray, std: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """(mean, std) float32 [B, n_mels] of each row (std None unless asked: CMN needs only the
        mean), read in shard/row order, each row one preadv into its slot where the stats are plain."""
        rows = np.asarray(rows, dtype=np.int64)
        shard = self._ix.shard[rows].astype(np.int64)
        local = rows - self._ix.shard_start[shard]
        order = np.lexsort((local, shard))
        out = []
        for which, name in ((0, "mean"), (1, "std"))[:2 if std else 1]:
            stat = np.empty((rows.size, self.n_mels), dtype=np.float32)
            size = self.n_mels * 4
            base = self._ix.stats_at[shard, which]
            view = memoryview(stat).cast("B")
            last_s, h = -1, None
            for i, s, j, at in zip(order.tolist(), shard[order].tolist(), local[order].tolist(), base[order].tolist()):
                if s != last_s:
                    h, last_s = self._handle(s), s
                if not (at >= 0 and h.pread_into(view[i * size:(i + 1) * size], at + j * size)):
                    stat[i] = h.file()[name][j]
            out.append(stat)
        return out[0], out[1] if std else None

    def stats(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(mean, std) over time of the whole utterance, float32 [n_mels] each."""
        mean, std = self.read_stats(np.array([self._row(key)]))
        return mean[0], std[0]

    def samples(self, key: str) -> int:
        """Samples of the source audio at the recipe's rate."""
        row = self._row(key)
        s = int(self._ix.shard[row])
        return int(self._handle(s).file()["samples"][row - int(self._ix.shard_start[s])])

    def summary(self) -> dict[str, Any]:
        """Utterances, frames, hours of audio, shards, bytes, dtype and recipe of the store (from the index)."""
        rate = float(self.recipe.get("sample_rate", 16000))
        size = sum(p.stat().st_size for p in self._shards)
        return {
            "path": str(self.path),
            "utterances": len(self),
            "frames": self.total_frames(),
            "hours": float(self._ix.shard_samples.sum()) / rate / 3600.0,
            "shards": len(self._shards),
            "bytes": size,
            "dtype": self.dtype,
            "recipe": self.recipe,
        }
