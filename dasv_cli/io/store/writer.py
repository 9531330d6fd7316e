"""Writing a feature store: ShardWriter (shards committed atomically, so a rerun resumes) and housekeeping."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from dasv_cli.errors import DasvError, os_error_message
from dasv_cli.io.atomic import GuardedFile, atomic_path
from dasv_cli.io.store.layout import (
    DEFAULT_CHUNK_FRAMES,
    DEFAULT_SHARD_FRAMES,
    DTYPES,
    FAILED_NAME,
    list_shards,
    list_temporary,
    shard_attrs,
    shard_index,
    shard_name,
)


def remove_file(path: Path) -> None:
    """Remove a store file if it is there; a failure is one DasvError line."""
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise DasvError(f"cannot remove {os_error_message(exc, path)}") from exc


def remove_temporaries(directory: Path) -> None:
    """Remove the unfinished shards of a run that was killed (call with the StoreLock held)."""
    for tmp in list_temporary(directory):
        remove_file(tmp)


def clear_store(directory: Path) -> None:
    """Remove a store's shards and its failed.tsv (`--overwrite`; call with the StoreLock held)."""
    for shard in list_shards(directory):
        remove_file(shard)
    remove_file(directory / FAILED_NAME)


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

    Only one writer per directory (hold a StoreLock). A shard is written under a temporary name
    and finished (index written, fsynced, renamed) when it reaches `shard_frames` or on `close()`;
    `abort()` drops the unfinished shard. Write failures (disk full, read-only) raise DasvError and
    drop only the unfinished shard.
    """

    def __init__(self, directory: str | Path, recipe: dict[str, Any], dtype: str = "float32",
                 shard_frames: int = DEFAULT_SHARD_FRAMES, chunk_frames: int = DEFAULT_CHUNK_FRAMES,
                 first_index: int | None = None) -> None:
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
        self.directory = Path(directory)
        self.recipe = dict(recipe)
        self.dtype = dtype
        self.n_mels = int(recipe["n_mels"])
        self.shard_frames = max(1, int(shard_frames))
        self.chunk_frames = max(1, int(chunk_frames))
        if first_index is None:
            shards = list_shards(self.directory)
            first_index = shard_index(shards[-1]) + 1 if shards else 0
        self._next_index = first_index
        self.completed: list[Path] = []
        self._file: Any = None
        self._pending: _PendingShard | None = None
        self._reset_shard_state()

    def _reset_shard_state(self) -> None:
        self._keys: list[str] = []
        self._lengths: list[int] = []
        self._samples: list[int] = []
        self._means: list[np.ndarray] = []
        self._stds: list[np.ndarray] = []
        self._written_frames = 0

    def _io_error(self, exc: BaseException, path: Path | None) -> DasvError:
        if isinstance(exc, OSError):
            msg = os_error_message(exc, path)
        else:
            msg = f"{path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        msg = " ".join(msg.split())[:300]  # always one line
        return DasvError(f"cannot write features: {msg}; finished shards are kept, rerun to continue")

    def _open(self) -> None:
        import h5py

        final = self.directory / shard_name(self._next_index)
        self._next_index += 1
        try:
            self._pending = _PendingShard(final)
            self._file = h5py.File(self._pending.guard, "w", rdcc_nbytes=4 << 20)
            # sized for a full shard up front (chunks are only allocated when written) and trimmed
            # when the shard is finished, so each utterance is one direct write
            self._feats = self._file.create_dataset(
                "feats", shape=(self.shard_frames, self.n_mels), maxshape=(None, self.n_mels),
                dtype=self.dtype, chunks=(self.chunk_frames, self.n_mels),
            )
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

    def add(self, key: str, feats: np.ndarray, mean: np.ndarray, std: np.ndarray, samples: int) -> None:
        """Add one utterance ([frames, n_mels]; converted to the store dtype)."""
        if feats.ndim != 2 or feats.shape[1] != self.n_mels or feats.shape[0] < 1:
            raise ValueError(f"{key}: features must be [frames>0, {self.n_mels}], got {feats.shape}")
        if self._file is None:
            self._open()
        block = np.ascontiguousarray(feats, dtype=self.dtype)
        start, end = self._written_frames, self._written_frames + block.shape[0]
        try:
            if end > self._feats.shape[0]:
                self._feats.resize(end, axis=0)
            self._feats[start:end] = block
        except (OSError, RuntimeError, MemoryError) as exc:
            self._check_io()
            target = self._pending.final if self._pending is not None else None
            self._drop()
            raise self._io_error(exc, target) from exc
        self._check_io()
        # the index entries last, so an utterance is either fully in the shard or not at all
        self._keys.append(key)
        self._lengths.append(int(block.shape[0]))
        self._samples.append(int(samples))
        self._means.append(np.asarray(mean, dtype=np.float32))
        self._stds.append(np.asarray(std, dtype=np.float32))
        self._written_frames = end
        if self._written_frames >= self.shard_frames:
            self.finish_shard()

    def finish_shard(self) -> Path | None:
        """Complete the current shard: write the index and attrs, fsync, rename. None if empty."""
        if self._file is None or self._pending is None:
            return None
        import h5py

        pending = self._pending
        try:
            f = self._file
            n = len(self._keys)
            lengths = np.asarray(self._lengths, dtype=np.int64)
            self._feats.resize(int(lengths.sum()), axis=0)
            offsets = np.zeros(n, dtype=np.int64)
            if n > 1:
                np.cumsum(lengths[:-1], out=offsets[1:])
            f.create_dataset("keys", data=np.array(self._keys, dtype=object), dtype=h5py.string_dtype("utf-8"))
            f.create_dataset("offsets", data=offsets)
            f.create_dataset("lengths", data=lengths)
            f.create_dataset("samples", data=np.asarray(self._samples, dtype=np.int64))
            f.create_dataset("mean", data=np.stack(self._means).astype(np.float32))
            f.create_dataset("std", data=np.stack(self._stds).astype(np.float32))
            for name, value in shard_attrs(self.recipe, self.dtype, n, int(lengths.sum())).items():
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
