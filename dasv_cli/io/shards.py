"""The HDF5 feature store: `ShardWriter` (atomic, resumable) and `FeatureStore` (index, windows).

A store is a directory of `shard-NNNNN.h5` files. Each shard holds

    feats    [frames, n_mels] float32|float16, chunked along frames (a window read touches only
             the chunks it overlaps), utterances concatenated in order
    keys     [n] utf-8 utterance keys
    offsets  [n] int64 first frame of each utterance in `feats`
    lengths  [n] int64 frames of each utterance
    samples  [n] int64 samples at the recipe's rate (for hours of audio)
    mean     [n, n_mels] float32 per-utterance mean over time (of the float32 features)
    std      [n, n_mels] float32 per-utterance standard deviation over time (ddof=0)

and attrs: format, format_version, dasv_version, dtype, the recipe's fields one by one (sample_rate,
n_mels, n_fft, win_length, hop_length, window, preemphasis, scale, fmin, fmax, mel_scale, log_floor,
...) and `recipe` (the same as JSON, the exact round trip).

A shard is written as `.shard-NNNNN.h5.tmp`, fsynced and renamed when complete, so a
complete-looking shard is always complete; readers ignore temporary files. `DIR/failed.tsv` lists
inputs that failed (path, reason) and `DIR/.dasv-features.lock` keeps a second writer out.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from dasv_cli.errors import DasvError, InputError, os_error_message
from dasv_cli.io.atomic import GuardedFile as _GuardedFile

STORE_FORMAT = "dasv-features"
STORE_FORMAT_VERSION = 1
SHARD_RE = re.compile(r"^shard-(\d{5,})\.h5$")
TMP_RE = re.compile(r"^\.shard-(\d{5,})\.h5\.tmp$")
FAILED_NAME = "failed.tsv"
LOCK_NAME = ".dasv-features.lock"
DTYPES = ("float32", "float16")
DEFAULT_SHARD_FRAMES = 250_000  # ~42 min of audio, ~80 MB as float32; a crash loses at most one
DEFAULT_CHUNK_FRAMES = 128


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.h5"


def list_shards(directory: str | Path) -> list[Path]:
    """Complete shards in `directory`, in index order (temporary files are not shards)."""
    d = Path(directory)
    if not d.is_dir():
        return []
    found = []
    for entry in os.scandir(d):
        m = SHARD_RE.match(entry.name)
        if m and entry.is_file():
            found.append((int(m.group(1)), Path(entry.path)))
    return [p for _, p in sorted(found)]


def list_temporary(directory: str | Path) -> list[Path]:
    """Temporary shards left by an interrupted writer."""
    d = Path(directory)
    if not d.is_dir():
        return []
    return sorted(Path(e.path) for e in os.scandir(d) if TMP_RE.match(e.name))


def shard_index(path: Path) -> int:
    m = SHARD_RE.match(path.name)
    if not m:
        raise ValueError(f"not a shard name: {path.name}")
    return int(m.group(1))


def _open_h5(path: Path, mode: str = "r"):
    import h5py

    try:
        return h5py.File(path, mode)
    except OSError as exc:
        raise InputError(f"{path}: not a readable feature shard ({str(exc).splitlines()[0][:160]})") from exc


def _check_shard(f: Any, path: Path) -> dict[str, Any]:
    attrs = f.attrs
    if attrs.get("format") != STORE_FORMAT:
        raise InputError(f"{path}: not a dasv feature shard (no '{STORE_FORMAT}' format tag)")
    version = int(attrs.get("format_version", -1))
    if version > STORE_FORMAT_VERSION or version < 1:
        raise InputError(f"{path}: feature shard format version {version} is not supported by this dasv")
    for name in ("feats", "keys", "offsets", "lengths", "mean", "std"):
        if name not in f:
            raise InputError(f"{path}: feature shard has no '{name}' dataset")
    try:
        recipe = json.loads(attrs["recipe"])
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{path}: feature shard has no readable 'recipe' attribute ({exc})") from None
    # The recipe is stored twice (fields one by one, for h5dump/h5py readers, and as JSON, which dasv
    # uses); they differ only when a shard was edited by hand, and then neither can be trusted.
    edited = [f"{k}={_plain_attr(attrs[k])!r} but recipe says {v!r}" for k, v in sorted(recipe.items())
              if k in attrs and isinstance(v, (int, float, str)) and _plain_attr(attrs[k]) != v]
    if edited:
        raise InputError(f"{path}: its attributes disagree with its feature recipe ({'; '.join(edited[:3])}); "
                         f"the shard was edited or damaged: recompute it with `dasv features --overwrite`")
    return {"recipe": recipe, "dtype": str(attrs["dtype"])}


def _plain_attr(value: Any) -> Any:
    """An HDF5 attribute as a plain Python value (numpy scalars and bytes unwrapped)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value.item() if hasattr(value, "item") else value


def recipe_differences(expected: dict[str, Any] | None, actual: dict[str, Any] | None) -> list[str]:
    """Recipe fields both dicts name with different values ('field: expected != actual')."""
    if not expected or not actual:
        return []
    return [f"{k}: {expected[k]!r} != {actual[k]!r}" for k in sorted(set(expected) & set(actual))
            if expected[k] != actual[k]]


def check_recipe(store_path: str | Path, store_recipe: dict[str, Any] | None,
                 expected: dict[str, Any] | None, expected_from: str) -> None:
    """Refuse a store whose features were made with another recipe than `expected_from` needs.

    A network sees only numbers: features with another hop, FFT size or mel range give it
    plausible-looking but meaningless embeddings, so this is an error, not a warning.
    """
    diff = recipe_differences(expected, store_recipe)
    if diff:
        more = f"; and {len(diff) - 4} more" if len(diff) > 4 else ""
        raise InputError(
            f"{store_path}: features were made with another recipe than {expected_from} "
            f"({'; '.join(diff[:4])}{more}); recompute them with the same `dasv features` settings"
        )


def read_shard_header(path: str | Path) -> tuple[list[str], dict[str, Any]]:
    """(keys, {"recipe", "dtype"}) of one complete shard, reading only its small datasets."""
    path = Path(path)
    with _open_h5(path) as f:
        info = _check_shard(f, path)
        keys = [k for k in f["keys"].asstr()[()]]
    return keys, info


# ---------------------------------------------------------------------------------------------
# Writing


class StoreLock:
    """An exclusive advisory lock on a store directory (`DIR/.dasv-features.lock`).

    flock is released by the kernel when the holder dies (even by SIGKILL), so a crashed run never
    leaves a stale lock behind.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.path = self.directory / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> "StoreLock":
        import fcntl

        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise DasvError(f"cannot write to {os_error_message(exc, self.directory)}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            try:
                holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            except OSError:
                holder = "unknown"
            os.close(fd)
            raise DasvError(
                f"{self.directory}: another `dasv features` run (pid {holder}) is writing to this "
                f"directory; wait for it to finish or choose another -o"
            ) from None
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError:
            pass
        self._fd = fd
        return self

    @property
    def fd(self) -> int | None:
        """The lock file's descriptor while held (forked helpers close their copy)."""
        return self._fd

    def release(self) -> None:
        if self._fd is not None:
            import fcntl

            try:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> "StoreLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


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

    Only one writer per directory (hold a StoreLock). A shard is written under its temporary name
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
        self._file = None
        self._guard: _GuardedFile | None = None
        self._tmp: Path | None = None
        self._final: Path | None = None
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

        index = self._next_index
        self._next_index += 1
        self._final = self.directory / shard_name(index)
        self._tmp = self.directory / f".{shard_name(index)}.tmp"
        try:
            self._guard = _GuardedFile(self._tmp)
            self._file = h5py.File(self._guard, "w", rdcc_nbytes=4 << 20)
            # sized for a full shard up front (chunks are only allocated when written) and trimmed
            # when the shard is finished, so each utterance is one direct write
            self._feats = self._file.create_dataset(
                "feats", shape=(self.shard_frames, self.n_mels), maxshape=(None, self.n_mels),
                dtype=self.dtype, chunks=(self.chunk_frames, self.n_mels),
            )
        except (OSError, RuntimeError) as exc:
            self._cleanup_tmp()
            raise self._io_error(exc, self._final) from exc

    def _check_io(self) -> None:
        """Raise the first write error of the shard in progress (the shard is dropped)."""
        if self._guard is not None and self._guard.error is not None:
            exc, target = self._guard.error, self._final
            self._cleanup_tmp()
            raise self._io_error(exc, target) from exc

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
            target = self._final
            self._cleanup_tmp()
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
        if self._file is None:
            return None
        from dasv_cli import __version__

        import h5py

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
            attrs = f.attrs
            attrs["format"] = STORE_FORMAT
            attrs["format_version"] = STORE_FORMAT_VERSION
            attrs["dasv_version"] = __version__
            attrs["dtype"] = self.dtype
            attrs["n_utterances"] = n
            attrs["n_frames"] = int(lengths.sum())
            for name, value in self.recipe.items():
                if isinstance(value, (int, float, str)):
                    attrs[name] = value
            attrs["recipe"] = json.dumps(self.recipe, sort_keys=True)
            f.close()
            self._file = None
            self._check_io()
            self._guard.fh.flush()
            os.fsync(self._guard.fh.fileno())
            self._guard.fh.close()
            self._guard = None
            os.replace(self._tmp, self._final)
            _fsync_dir(self.directory)
        except DasvError:
            self._cleanup_tmp()
            raise
        except (OSError, RuntimeError, ValueError) as exc:
            target = self._final
            self._cleanup_tmp()
            raise self._io_error(exc, target) from exc
        done = self._final
        self.completed.append(done)
        self._tmp = self._final = None
        self._reset_shard_state()
        return done

    def _cleanup_tmp(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except Exception:
                pass
            self._file = None
        if self._guard is not None:
            self._guard.close()
            self._guard = None
        if self._tmp is not None:
            try:
                os.unlink(self._tmp)
            except OSError:
                pass
        self._tmp = self._final = None
        self._reset_shard_state()

    def close(self) -> None:
        """Finish the shard in progress (everything added is committed)."""
        self.finish_shard()

    def abort(self) -> None:
        """Drop the shard in progress (its utterances are recomputed by the next run)."""
        self._cleanup_tmp()

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type: Any, *rest: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


# ---------------------------------------------------------------------------------------------
# Reading


class FeatureStore:
    """Read access to a feature store directory: index in memory, HDF5 opened lazily per process.

    Safe after fork (DataLoader workers): handles opened in another process are never reused.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise InputError(f"{self.path}: no such feature store")
        if not self.path.is_dir():
            raise InputError(f"{self.path}: not a feature store (expected a directory of shard-*.h5)")
        self._shards = list_shards(self.path)
        if not self._shards:
            raise InputError(f"{self.path}: no feature shards (shard-*.h5); create them with `dasv features`")
        self._index: dict[str, tuple[int, int]] = {}
        self._offsets: list[np.ndarray] = []
        self._lengths: list[np.ndarray] = []
        self._keys: list[str] = []
        self._recipe: dict[str, Any] | None = None
        self._dtype: str | None = None
        for s, shard in enumerate(self._shards):
            with _open_h5(shard) as f:
                info = _check_shard(f, shard)
                keys = f["keys"].asstr()[()]
                offsets = f["offsets"][()].astype(np.int64)
                lengths = f["lengths"][()].astype(np.int64)
            if self._recipe is None:
                self._recipe, self._dtype = info["recipe"], info["dtype"]
            elif info["recipe"] != self._recipe or info["dtype"] != self._dtype:
                raise InputError(
                    f"{shard}: its feature recipe/dtype differs from {self._shards[0].name}; "
                    f"a store must hold one recipe"
                )
            for row, key in enumerate(keys):
                if key in self._index:
                    other = self._shards[self._index[key][0]].name
                    raise InputError(f"{shard}: key {key!r} is also stored in {other}")
                self._index[key] = (s, row)
            self._keys.extend(keys)
            self._offsets.append(offsets)
            self._lengths.append(lengths)
        self._files: dict[int, Any] = {}
        self._pid = os.getpid()

    # -- process-local handles ------------------------------------------------------------------
    def _file(self, s: int) -> Any:
        if self._pid != os.getpid():  # forked: never touch the parent's HDF5 handles
            self._files = {}
            self._pid = os.getpid()
        f = self._files.get(s)
        if f is None:
            import h5py

            f = h5py.File(self._shards[s], "r", rdcc_nbytes=4 << 20)
            self._files[s] = f
        return f

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_files"] = {}
        return state

    def close(self) -> None:
        if self._pid == os.getpid():
            for f in self._files.values():
                try:
                    f.close()
                except Exception:
                    pass
        self._files = {}

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
        return len(self._index)

    def __contains__(self, key: object) -> bool:
        return key in self._index

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def keys(self) -> list[str]:
        """Keys in stored order (shard by shard)."""
        return list(self._keys)

    @property
    def recipe(self) -> dict[str, Any]:
        """The feature recipe (LogMelConfig.to_dict() of the writer)."""
        return dict(self._recipe or {})

    @property
    def dtype(self) -> str:
        return self._dtype or "float32"

    @property
    def n_mels(self) -> int:
        return int(self.recipe.get("n_mels", 80))

    @property
    def shards(self) -> list[Path]:
        return list(self._shards)

    def _locate(self, key: str) -> tuple[int, int]:
        try:
            return self._index[key]
        except KeyError:
            raise KeyError(f"{key!r} is not in the feature store {self.path}") from None

    def length(self, key: str) -> int:
        """Frames of utterance `key`."""
        s, row = self._locate(key)
        return int(self._lengths[s][row])

    def lengths(self) -> dict[str, int]:
        """{key: frames} for every utterance."""
        return {k: int(self._lengths[s][r]) for k, (s, r) in self._index.items()}

    def total_frames(self) -> int:
        return int(sum(int(x.sum()) for x in self._lengths))

    # -- data -------------------------------------------------------------------------------
    def __getitem__(self, key: str) -> np.ndarray:
        """The whole utterance, float32 [frames, n_mels] (raw log-mel, as stored)."""
        s, row = self._locate(key)
        off, n = int(self._offsets[s][row]), int(self._lengths[s][row])
        return np.asarray(self._file(s)["feats"][off:off + n], dtype=np.float32)

    def window(self, key: str, start: int, frames: int) -> np.ndarray:
        """Frames [start, start + frames) of `key`, float32 [frames, n_mels]; reads only those chunks."""
        s, row = self._locate(key)
        off, n = int(self._offsets[s][row]), int(self._lengths[s][row])
        start, frames = int(start), int(frames)
        if start < 0 or frames < 0 or start + frames > n:
            raise ValueError(f"{key!r}: window [{start}, {start + frames}) outside its {n} frames")
        return np.asarray(self._file(s)["feats"][off + start:off + start + frames], dtype=np.float32)

    def stats(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(mean, std) over time of the whole utterance, float32 [n_mels] each."""
        s, row = self._locate(key)
        f = self._file(s)
        return (np.asarray(f["mean"][row], dtype=np.float32), np.asarray(f["std"][row], dtype=np.float32))

    def samples(self, key: str) -> int:
        """Samples of the source audio at the recipe's rate."""
        s, row = self._locate(key)
        return int(self._file(s)["samples"][row])

    def summary(self) -> dict[str, Any]:
        """Utterances, frames, hours of audio, shards, dtype and recipe (what `dasv inspect` prints)."""
        rate = float(self.recipe.get("sample_rate", 16000))
        total_samples = 0
        for s in range(len(self._shards)):
            total_samples += int(np.asarray(self._file(s)["samples"][()], dtype=np.int64).sum())
        size = sum(p.stat().st_size for p in self._shards)
        return {
            "path": str(self.path),
            "utterances": len(self),
            "frames": self.total_frames(),
            "hours": total_samples / rate / 3600.0,
            "shards": len(self._shards),
            "bytes": size,
            "dtype": self.dtype,
            "recipe": self.recipe,
        }
