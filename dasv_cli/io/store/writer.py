"""Writing a feature store: ShardWriter (shards committed atomically, so a rerun resumes) and housekeeping."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from dasv_cli.errors import DasvError, os_error_message
from dasv_cli.io.atomic import GuardedFile, atomic_path
from dasv_cli.io.store.columns import Column, starts
from dasv_cli.io.store.integrity import CHECKSUM_ATTR, checksums_attr
from dasv_cli.io.store.layout import (
    AUDIO_CHUNK_SAMPLES,
    CONTENTS,
    DEFAULT_CHUNK_FRAMES,
    DEFAULT_SHARD_FRAMES,
    DTYPES,
    Part,
    list_failed,
    list_shards,
    list_temporary,
    shard_attrs,
    shard_index,
    shard_name,
    shard_part,
)



def remove_file(path: Path) -> None:
    """Remove a store file if it is there; a failure is one DasvError line."""
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise DasvError(f"cannot remove {os_error_message(exc, path)}") from exc


def remove_temporaries(directory: Path, part: Part | None = None) -> None:
    """Remove the unfinished files of a run that was killed: all (call with the StoreLock of a run
    without a part held), or only `part`'s (with that part's lock: the other parts may be writing)."""
    for tmp in list_temporary(directory, part):
        remove_file(tmp)


def next_shard_index(directory: Path, part: Part | None = None) -> int:
    """The first shard number that `part` (or a run without a part) has not used in `directory`."""
    mine = [p for p in list_shards(directory) if shard_part(p) == part]
    return max(shard_index(p) for p in mine) + 1 if mine else 0


def clear_store(directory: Path) -> None:
    """Remove a store's shards and failed lists, parts' included (`--overwrite`; call with the
    StoreLock of a run without a part held, which no part can be running beside)."""
    for shard in list_shards(directory):
        remove_file(shard)
    for failed in list_failed(directory):
        remove_file(failed)


class _Dropped(Exception):
    """Handed to atomic_path when a shard is dropped, so that it removes the temporary file."""


def _os_cause(exc: DasvError) -> BaseException:
    """The OSError behind atomic_path's message: the writer words write failures its own way."""
    return exc.__cause__ if isinstance(exc.__cause__, OSError) else exc


class _PendingShard:
    """The shard being written: a temporary file beside its final name (io.atomic.atomic_path),
    written by HDF5 through a GuardedFile. A shard lives across many `add` calls, so the writer
    drives atomic_path's block by hand: entered here, left by `commit` (rename) or `drop` (remove)."""

    def __init__(self, final: Path) -> None:
        self.final = final
        self._atomic: Any = atomic_path(final, "features")
        try:
            tmp = self._atomic.__enter__()
        except DasvError as exc:
            raise _os_cause(exc) from None
        try:
            self.guard = GuardedFile(tmp)
        except OSError:
            self._leave(_Dropped())
            raise

    def _leave(self, exc: BaseException | None) -> None:
        atomic, self._atomic = self._atomic, None
        if atomic is None:
            return
        try:
            if exc is None:
                atomic.__exit__(None, None, None)  # os.replace(temporary, final)
            else:
                atomic.__exit__(type(exc), exc, None)  # the temporary is removed
        except DasvError as err:
            raise _os_cause(err) from None

    def commit(self) -> None:
        """fsync the finished file, rename it over the final name, fsync the directory."""
        self.guard.fh.flush()
        os.fsync(self.guard.fh.fileno())
        self.guard.fh.close()
        self._leave(None)
        _fsync_dir(self.final.parent)

    def drop(self) -> None:
        """Close and remove the temporary file."""
        self.guard.close()
        self._leave(_Dropped())


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class ShardWriter:
    """Appends utterances to shards of about `shard_frames` frames, each committed atomically.

    One writer per directory, or per part (`part`, whose shards carry it in their names), holding
    the matching StoreLock; or several in one run (worker processes) that number their shards apart
    (`first_index`, `index_step`). A shard is written under a temporary name and finished (index and
    checksums written (io.store.integrity), fsynced, renamed) when it reaches `shard_frames` or on `close()`; `abort()` drops the unfinished
    shard. `attrs` go into every shard beside the store's own (which they cannot replace). Write failures (disk full, read-only) raise DasvError and drop only the unfinished shard.

    Frames are gathered in a buffer of BUFFER_CHUNKS whole chunks and written once it is full, so
    HDF5 writes each chunk whole and once (measured: a write per utterance, partial chunks at both
    ends, cost 3x more per utterance than the buffered write).
    """

    def __init__(self, directory: str | Path, recipe: dict[str, Any], dtype: str = "float32",
                 shard_frames: int = DEFAULT_SHARD_FRAMES, chunk_frames: int = DEFAULT_CHUNK_FRAMES,
                 first_index: int | None = None, part: Part | None = None, index_step: int = 1,
                 attrs: dict[str, str] | None = None, content: str = "features") -> None:
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
        if content not in CONTENTS:
            raise ValueError(f"content must be one of {CONTENTS}, got {content!r}")
        self.content = content
        self.directory = Path(directory)
        self.recipe = dict(recipe)
        self.attrs = dict(attrs or {})  # more attrs for every shard (`augment`: how its copies were made)
        self.dtype = dtype
        self.part = part
        self.n_mels = int(recipe["n_mels"])
        self.shard_frames = max(1, int(shard_frames))
        self.chunk_frames = max(1, int(chunk_frames))
        # shard numbers first_index, first_index + index_step, ...: worker w of J writes w, w + J, ...
        self._next_index = next_shard_index(self.directory, part) if first_index is None else first_index
        self.index_step = max(1, int(index_step))
        self.completed: list[Path] = []
        self._file: Any = None
        self._pending: _PendingShard | None = None
        self._columns: list[Column] = []
        if content != "audio":
            self._columns.append(Column("feats", (self.n_mels,), self.dtype, self.chunk_frames))
        if content != "features":
            self._columns.append(Column("audio", (), "int16", AUDIO_CHUNK_SAMPLES))
        self._reset_shard_state()

    def _reset_shard_state(self) -> None:
        self._keys: list[str] = []
        self._lengths: list[int] = []
        self._samples: list[int] = []
        self._means: list[np.ndarray] = []
        self._stds: list[np.ndarray] = []
        for column in self._columns:
            column.reset()

    def _io_error(self, exc: BaseException, path: Path | None) -> DasvError:
        if isinstance(exc, OSError):
            msg = os_error_message(exc, path)
        else:
            msg = f"{path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        msg = " ".join(msg.split())[:300]  # always one line
        return DasvError(f"cannot write features: {msg}; finished shards are kept, rerun to continue")

    def _open(self) -> None:
        import h5py

        final = self.directory / shard_name(self._next_index, self.part)
        self._next_index += self.index_step
        try:
            self._pending = _PendingShard(final)
            # no chunk cache: every chunk is written whole, once, from the buffer
            self._file = h5py.File(self._pending.guard, "w", rdcc_nbytes=0)
            for column in self._columns:  # a full shard's frames (or samples: 160 a frame)
                column.create(self._file, self.shard_frames * (160 if column.name == "audio" else 1))
        except (OSError, RuntimeError) as exc:
            self._drop()
            raise self._io_error(exc, final) from exc

    def _check_io(self) -> None:
        """Raise the first write error of the shard in progress (the shard is dropped)."""
        pending = self._pending
        if pending is not None and pending.guard.error is not None:
            exc = pending.guard.error
            self._drop()
            raise self._io_error(exc, pending.final) from exc

    def _flush(self, column: Column) -> None:
        """Write a column's buffered rows to the shard in progress."""
        try:
            column.flush()
        except (OSError, RuntimeError, MemoryError) as exc:
            self._check_io()
            target = self._pending.final if self._pending is not None else None
            self._drop()
            raise self._io_error(exc, target) from exc
        self._check_io()

    def add(self, key: str, feats: np.ndarray | None, mean: np.ndarray | None, std: np.ndarray | None,
            samples: int, audio: np.ndarray | None = None) -> None:
        """Add one utterance: [frames, n_mels] features (converted to the store dtype) and/or, as the
        store's content asks, its int16 PCM [samples] (`samples` must then be its length)."""
        if self.content != "audio" and (feats is None or feats.ndim != 2 or feats.shape[1] != self.n_mels
                                        or feats.shape[0] < 1):
            raise ValueError(f"{key}: features must be [frames>0, {self.n_mels}], got "
                             f"{None if feats is None else feats.shape}")
        if self.content != "features" and (audio is None or audio.dtype != np.int16 or audio.ndim != 1
                                           or audio.size < 1 or audio.size != int(samples)):
            raise ValueError(f"{key}: audio must be int16 [samples={samples}], got "
                             f"{None if audio is None else (audio.dtype, audio.shape)}")
        if self._file is None:
            self._open()
        for column in self._columns:
            column.append(feats if column.name == "feats" else audio, self._flush)
        # the index entries last, so an utterance is either fully in the shard or not at all
        self._keys.append(key)
        self._lengths.append(int(feats.shape[0]) if feats is not None and self.content != "audio" else 0)
        self._samples.append(int(samples))
        if self.content != "audio":
            self._means.append(np.asarray(mean, dtype=np.float32))
            self._stds.append(np.asarray(std, dtype=np.float32))
        if any(c.written >= self.shard_frames * (160 if c.name == "audio" else 1) for c in self._columns):
            self.finish_shard()

    def finish_shard(self) -> Path | None:
        """Complete the current shard: write the index and attrs, fsync, rename. None if empty."""
        if self._file is None or self._pending is None:
            return None
        import h5py

        for column in self._columns:
            self._flush(column)
        pending = self._pending
        try:
            f = self._file
            n = len(self._keys)
            lengths = np.asarray(self._lengths, dtype=np.int64)
            samples = np.asarray(self._samples, dtype=np.int64)
            for column in self._columns:
                column.ds.resize(int((samples if column.name == "audio" else lengths).sum()), axis=0)
            f.create_dataset("keys", data=np.array(self._keys, dtype=object), dtype=h5py.string_dtype("utf-8"))
            small = {"samples": samples}
            if self.content != "audio":
                small.update(offsets=starts(lengths), lengths=lengths, mean=np.stack(self._means).astype(np.float32),
                             std=np.stack(self._stds).astype(np.float32))
            if self.content != "features":
                small["audio_offsets"] = starts(samples)
            for name, values in small.items():
                f.create_dataset(name, data=values)
            attrs = {**self.attrs, **shard_attrs(self.recipe, self.dtype, n, int(lengths.sum()), self.content)}
            attrs[CHECKSUM_ATTR] = checksums_attr({c.name: c.crc for c in self._columns}, self._keys, small)
            for name, value in attrs.items():
                f.attrs[name] = value
            f.close()
            self._file = None
            self._check_io()
            pending.commit()
        except DasvError:
            self._drop()
            raise
        except (OSError, RuntimeError, ValueError) as exc:
            self._drop()
            raise self._io_error(exc, pending.final) from exc
        self.completed.append(pending.final)
        self._pending = None
        self._reset_shard_state()
        return pending.final

    def _drop(self) -> None:
        """Close the HDF5 file of the shard in progress and remove its temporary file."""
        if self._file is not None:
            try:
                self._file.close()
            except Exception:
                pass
            self._file = None
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.drop()
        self._reset_shard_state()

    def close(self) -> None:
        """Finish the shard in progress (everything added is committed)."""
        self.finish_shard()

    def abort(self) -> None:
        """Drop the shard in progress (its utterances are recomputed by the next run)."""
        self._drop()

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type: Any, *rest: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
