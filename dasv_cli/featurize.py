"""The features pipeline: audio list -> audio -> log-mel (torch, `jobs` worker processes) -> one ShardWriter.

Usable without the CLI:

    from dasv_cli.featurize import featurize
    result = featurize("train.txt", "features", audio_dir="/data/vox", jobs=4)
    result.failed          # [(path, reason), ...], also in features/failed.tsv

Guarantees: keys already in the store are skipped (resume after any crash, SIGKILL included, because
shards are committed atomically and each utterance is computed on its own, so a rerun stores the
same numbers); Ctrl-C commits what was computed; one writer per directory (a lock); bad inputs are
listed, not fatal; a write failure (disk full, read-only) is one DasvError and finished shards stay.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from dasv_cli.dsp.logmel import LogMelConfig
from dasv_cli.errors import EXIT_OK, EXIT_PARTIAL, DasvError, UsageError, os_error_message
from dasv_cli.io import shards as _shards
from dasv_cli.io.lists import AudioEntry, read_audio_list

INLINE_MAX_FILES = 8  # up to this many files are computed in the main process, without workers
CHUNK_FILES = 4  # files per task sent to a worker: small enough to balance, large enough to amortise IPC


@dataclass
class FeaturizeResult:
    """What a run did (all counts refer to this run's list)."""

    directory: Path
    listed: int = 0
    stored: int = 0  # newly computed and stored by this run
    skipped: int = 0  # already in the store
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    resampled: int = 0
    frames: int = 0
    seconds: float = 0.0  # audio seconds stored by this run
    elapsed: float = 0.0  # wall-clock seconds of the computation
    jobs: int = 1
    shards: list[Path] = field(default_factory=list)  # shards written by this run

    @property
    def exit_code(self) -> int:
        return EXIT_PARTIAL if self.failed else EXIT_OK

    @property
    def realtime_factor(self) -> float:
        return self.seconds / self.elapsed if self.elapsed > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "directory": str(self.directory), "listed": self.listed, "stored": self.stored,
            "skipped": self.skipped, "failed": len(self.failed), "resampled": self.resampled,
            "frames": self.frames, "hours": self.seconds / 3600, "elapsed_s": self.elapsed,
            "x_real_time": self.realtime_factor, "jobs": self.jobs,
            "shards": [p.name for p in self.shards],
        }


def default_jobs() -> int:
    """All cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


# ---------------------------------------------------------------------------------------------
# Work done per file (in a worker process, or inline for a handful of files)

_OK, _FAIL = "ok", "fail"


def compute_one(path: str, cfg: LogMelConfig, dtype: str = "float32") -> tuple:
    """(feats as dtype [frames, n_mels], mean, std, samples, source_rate) for one file.

    Raises AudioError for unusable audio and ValueError for audio shorter than one window.
    """
    from dasv_cli.dsp.logmel import logmel, utterance_stats
    from dasv_cli.io.audio import read_audio

    audio = read_audio(path, cfg.sample_rate)
    n = len(audio.wave)
    if n < cfg.min_samples:
        raise ValueError(
            f"too short: {1000 * n / cfg.sample_rate:.1f} ms, less than one "
            f"{1000 * cfg.win_length / cfg.sample_rate:g} ms analysis window"
        )
    feats = logmel(audio.wave, cfg)
    mean, std = utterance_stats(feats)
    if dtype != "float32":
        feats = feats.astype(dtype)
    return feats, mean, std, n, audio.source_rate


def _process(items: Sequence[tuple[str, str]], cfg: LogMelConfig, dtype: str) -> list[tuple]:
    from dasv_cli.io.audio import AudioError

    out = []
    for key, path in items:
        try:
            feats, mean, std, n, rate = compute_one(path, cfg, dtype)
        except AudioError as exc:
            out.append((_FAIL, key, path, exc.reason))
        except ValueError as exc:
            out.append((_FAIL, key, path, str(exc)))
        except MemoryError:
            out.append((_FAIL, key, path, "out of memory while computing features (file too long?)"))
        except Exception as exc:  # one odd file must not stop a million-file run
            out.append((_FAIL, key, path, f"unexpected error: {type(exc).__name__}: {exc}"))
        else:
            out.append((_OK, key, feats, mean, std, n, rate))
    return out


_worker_cfg: LogMelConfig | None = None
_worker_dtype = "float32"


_worker_shm: str | None = None  # "<dir>/dasv-<parent pid>-": where a worker puts features for the parent
_worker_seq = 0
SHM_DIR = "/dev/shm"


def _shm_prefix(parent_pid: int) -> str | None:
    """Features travel from workers to the writer through files in /dev/shm (RAM), which costs a
    fraction of pickling them through a pipe; None where there is no /dev/shm (then: the pipe)."""
    if not (sys.platform.startswith("linux") and os.path.isdir(SHM_DIR) and os.access(SHM_DIR, os.W_OK)):
        return None
    return os.path.join(SHM_DIR, f"dasv-{parent_pid}-")


def _remove_shm(prefix: str | None, stale: bool = False) -> None:
    """Remove this run's transfer files (or, with `stale`, those of runs whose process is gone)."""
    if prefix is None:
        return
    directory, start = os.path.split(prefix)
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        if not name.startswith("dasv-"):
            continue
        if stale:
            pid = name.split("-")[1]
            if not pid.isdigit() or _alive(int(pid)):
                continue
        elif not name.startswith(start):
            continue
        try:
            os.unlink(os.path.join(directory, name))
        except OSError:
            pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _pack(results: list[tuple]) -> tuple[str | None, list[tuple]]:
    """Move the features of a batch into one /dev/shm file; (path, results with (offset, shape, dtype))."""
    global _worker_seq
    oks = [r for r in results if r[0] == _OK]
    if _worker_shm is None or not oks:
        return None, results
    import mmap

    total = sum(r[2].nbytes for r in oks)
    _worker_seq += 1
    path = f"{_worker_shm}{os.getpid()}-{_worker_seq}"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.ftruncate(fd, total)
            mm = mmap.mmap(fd, total)
        finally:
            os.close(fd)
    except OSError:  # /dev/shm full or unusable: send through the pipe instead
        try:
            os.unlink(path)
        except OSError:
            pass
        return None, results
    packed = []
    offset = 0
    for r in results:
        if r[0] != _OK:
            packed.append(r)
            continue
        feats = r[2]
        dest = np.frombuffer(mm, dtype=feats.dtype, count=feats.size, offset=offset)
        dest[:] = feats.reshape(-1)
        del dest
        packed.append((r[0], r[1], (offset, feats.shape, feats.dtype.str)) + tuple(r[3:]))
        offset += feats.nbytes
    mm.close()
    return path, packed


def _unpack(path: str | None, batch: list[tuple]) -> Iterator[tuple]:
    """Parent side of _pack: results whose features are read-only views of the mapped file."""
    if path is None:
        yield from batch
        return
    import mmap

    with open(path, "rb") as fh:
        mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    os.unlink(path)  # the name goes at once; the memory lives while it is mapped
    try:
        for r in batch:
            if r[0] != _OK:
                yield r
                continue
            offset, shape, dtype = r[2]
            count = int(np.prod(shape))
            view = np.frombuffer(mm, dtype=np.dtype(dtype), count=count, offset=offset).reshape(shape)
            yield (r[0], r[1], view) + tuple(r[3:])
            del view
    finally:
        try:
            mm.close()
        except BufferError:  # a caller still holds a view: the mapping goes with it
            pass


def _worker_init(cfg_dict: dict[str, Any], dtype: str, lock_fd: int | None,
                 shm_prefix: str | None = None) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops the pool
    if lock_fd is not None:  # the store lock belongs to the parent: a worker must never keep it alive
        try:
            os.close(lock_fd)
        except OSError:
            pass
    _die_with_parent()
    tune_malloc()
    import torch

    torch.set_num_threads(1)
    global _worker_cfg, _worker_dtype, _worker_shm
    _worker_cfg = LogMelConfig.from_dict(cfg_dict)
    _worker_dtype = dtype
    _worker_shm = shm_prefix


def _worker_task(items: Sequence[tuple[str, str]]) -> tuple[str | None, list[tuple]]:
    assert _worker_cfg is not None
    return _pack(_process(items, _worker_cfg, _worker_dtype))


def _chunks(items: Sequence[tuple[str, str]], size: int) -> Iterator[list[tuple[str, str]]]:
    for i in range(0, len(items), size):
        yield list(items[i:i + size])


def _results_inline(items: Sequence[tuple[str, str]], cfg: LogMelConfig, dtype: str) -> Iterator[tuple]:
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # one job = one core, as with worker processes
    try:
        for chunk in _chunks(items, CHUNK_FILES):
            yield from _process(chunk, cfg, dtype)
    finally:
        torch.set_num_threads(previous)


def tune_malloc() -> None:
    """glibc: serve allocations below 32 MB from the heap and keep up to 128 MB of freed memory, so
    each file's arrays reuse memory instead of faulting in fresh pages (measured: 10-15% faster).
    Process-wide, so the CLI and the workers call it; a library caller may too."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 128 << 20)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):  # not glibc
        pass


def _die_with_parent() -> None:
    """Linux: the kernel kills this worker when the parent dies (even by SIGKILL), so no orphan
    keeps computing after the run is gone."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
        if os.getppid() == 1:  # the parent died before prctl took effect
            os._exit(1)
    except (OSError, AttributeError):
        pass


def _widen_pipe(pool: Any) -> None:
    """Let results queue in a 1 MB pipe (Linux; default 64 KB) so that workers keep computing while
    this process holds the GIL writing HDF5, instead of blocking on a full pipe."""
    try:
        import fcntl

        fd = pool._outqueue._writer.fileno()
        limit = int(Path("/proc/sys/fs/pipe-max-size").read_text())
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, min(1 << 20, limit))
    except (AttributeError, OSError, ValueError):  # other platforms / Python internals: keep the default
        pass


class _Pool:
    """`jobs` worker processes; results come back in list order (so a run is deterministic)."""

    def __init__(self, jobs: int, cfg: LogMelConfig, dtype: str, lock_fd: int | None = None) -> None:
        import multiprocessing as mp

        # fork (Linux): workers share the parent's imported torch instead of importing it again;
        # they run torch with one thread, so a thread pool started in the parent is never needed.
        import torch  # noqa: F401  (imported before the fork on purpose)

        method = "fork" if sys.platform.startswith("linux") else "spawn"
        ctx = mp.get_context(method)
        self.shm_prefix = _shm_prefix(os.getpid())
        _remove_shm(self.shm_prefix, stale=True)  # left by runs that were killed
        self.pool = ctx.Pool(jobs, initializer=_worker_init,
                             initargs=(cfg.to_dict(), dtype, lock_fd, self.shm_prefix))
        _widen_pipe(self.pool)

    def results(self, items: Sequence[tuple[str, str]]) -> Iterator[tuple]:
        for path, batch in self.pool.imap(_worker_task, _chunks(items, CHUNK_FILES), chunksize=1):
            yield from _unpack(path, batch)

    def close(self, terminate: bool = False) -> None:
        if terminate:
            self.pool.terminate()
        else:
            self.pool.close()
        self.pool.join()
        _remove_shm(self.shm_prefix)  # batches computed but never collected (interrupt, error)


# ---------------------------------------------------------------------------------------------
# The run


def _prepare_directory(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise DasvError(f"{out}: exists and is not a directory (choose another -o)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DasvError(f"cannot create the output directory {os_error_message(exc, out)}") from exc


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise DasvError(f"cannot remove {os_error_message(exc, path)}") from exc


def _existing_keys(out: Path, cfg: LogMelConfig, dtype: str) -> set[str]:
    """Keys in the complete shards of `out`; a store with another recipe or dtype is refused."""
    stored: set[str] = set()
    recipe = cfg.to_dict()
    for shard in _shards.list_shards(out):
        keys, info = _shards.read_shard_header(shard)
        if info["dtype"] != dtype:
            raise UsageError(
                f"{out}: already holds {info['dtype']} features ({shard.name}); rerun with "
                f"--dtype {info['dtype']}, or --overwrite to replace them, or choose another -o"
            )
        if info["recipe"] != recipe:
            raise UsageError(
                f"{out}: {shard.name} was made with another feature recipe; use --overwrite to "
                f"replace the store, or choose another -o"
            )
        stored.update(keys)
    return stored


def write_failed(out: Path, failed: list[tuple[str, str]]) -> Path | None:
    """DIR/failed.tsv (path<TAB>reason, with a header), written atomically; removed when nothing failed."""
    target = out / _shards.FAILED_NAME
    if not failed:
        _remove(target)
        return None
    tmp = out / f".{_shards.FAILED_NAME}.tmp"
    clean = lambda s: " ".join(str(s).split())  # noqa: E731 - one line, no tabs
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write("path\treason\n")
            for path, reason in failed:
                fh.write(f"{path.replace(chr(9), ' ')}\t{clean(reason)}\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise DasvError(f"cannot write {os_error_message(exc, target)}") from exc
    return target


def featurize(
    audio_list: str | Path | Sequence[AudioEntry],
    out_dir: str | Path = "features",
    *,
    audio_dir: str | Path | None = None,
    jobs: int | None = None,
    dtype: str = "float32",
    overwrite: bool = False,
    cfg: LogMelConfig = LogMelConfig(),
    shard_frames: int = _shards.DEFAULT_SHARD_FRAMES,
    progress: bool = True,
) -> FeaturizeResult:
    """Compute and store the log-mel features of every file in `audio_list` (a path, `-`, or entries).

    Returns a FeaturizeResult; `result.exit_code` is 3 when some inputs failed (they are listed in
    DIR/failed.tsv, the others are stored). `--overwrite` semantics: the existing store in `out_dir`
    (shards and failed.tsv) is removed first. Raises DasvError for problems that stop the run.
    """
    from dasv_cli import progress as ui

    if dtype not in _shards.DTYPES:
        raise UsageError(f"--dtype must be one of {', '.join(_shards.DTYPES)}, got {dtype!r}")
    if jobs is not None and jobs < 1:
        raise UsageError(f"--jobs must be at least 1, got {jobs}")
    if audio_dir is not None and not Path(audio_dir).is_dir():
        raise UsageError(f"{audio_dir}: no such directory (--audio-dir)")
    if isinstance(audio_list, (str, Path)):
        entries = read_audio_list(audio_list, audio_dir)
    else:
        entries = list(audio_list)
    out = Path(out_dir)
    _prepare_directory(out)
    result = FeaturizeResult(directory=out, listed=len(entries))
    lock = _shards.StoreLock(out).acquire()
    try:
        for tmp in _shards.list_temporary(out):  # left by a killed run; we hold the lock
            _remove(tmp)
        if overwrite:
            for shard in _shards.list_shards(out):
                _remove(shard)
            _remove(out / _shards.FAILED_NAME)
            stored: set[str] = set()
        else:
            stored = _existing_keys(out, cfg, dtype)
        todo = [(e.key, str(e.path)) for e in entries if e.key not in stored]
        result.skipped = len(entries) - len(todo)
        n_jobs = max(1, min(jobs or default_jobs(), len(todo) or 1))
        result.jobs = n_jobs
        if result.skipped:
            ui.log(f"{result.skipped} of {len(entries)} listed files already stored in {out}: skipped")
        if not todo:
            write_failed(out, [])
            ui.log(f"nothing to do: all {len(entries)} listed files are stored in {out}")
            return result
        ui.log(f"computing features for {len(todo)} files with {n_jobs} job{'s' if n_jobs > 1 else ''} -> {out}")
        _run(todo, out, cfg, dtype, n_jobs, shard_frames, result, progress and not ui.is_quiet(), lock.fd)
        write_failed(out, result.failed)
    finally:
        lock.release()
    rate = cfg.sample_rate
    ui.log(
        f"stored {result.stored} utterances ({result.seconds / 3600:.2f} h of audio, {result.frames} frames) "
        f"in {result.elapsed:.1f} s: {result.realtime_factor:.0f}x real-time"
    )
    ui.log(f"resampled to {rate} Hz: {result.resampled} of {result.stored} stored files")
    if result.failed:
        ui.warn(f"{len(result.failed)} of {len(todo)} inputs failed; reasons in {out / _shards.FAILED_NAME}")
    return result


def _run(todo: list[tuple[str, str]], out: Path, cfg: LogMelConfig, dtype: str, jobs: int,
         shard_frames: int, result: FeaturizeResult, show: bool, lock_fd: int | None = None) -> None:
    from rich.progress import TextColumn

    from dasv_cli import progress as ui

    import torch  # noqa: F401  (imported before the clock starts: x real-time measures the work)

    writer = _shards.ShardWriter(out, cfg.to_dict(), dtype=dtype, shard_frames=shard_frames)
    # With two jobs or more, worker processes compute while this process writes. One job runs in
    # this process (measured: shipping features from one worker costs more than the overlap gains),
    # and so does a handful of files (no worker start-up: `dasv features` on one file starts fast).
    pool = _Pool(jobs, cfg, dtype, lock_fd) if jobs > 1 and len(todo) > INLINE_MAX_FILES else None
    results = pool.results(todo) if pool is not None else _results_inline(todo, cfg, dtype)
    columns = (TextColumn("{task.fields[hours]:.2f} h"), TextColumn("{task.fields[xrt]:.0f}x real-time"))
    bar = ui.make_progress(*columns, transient=False) if show else None
    start = time.perf_counter()
    # Ctrl-C sets a flag checked between files, so the shard in progress is committed in a consistent
    # state; a second Ctrl-C stops at once (the unfinished shard is then dropped).
    interrupt = _InterruptFlag()
    ok = False
    try:
        interrupt.install()
        if bar is not None:
            bar.start()
            task = bar.add_task("features", total=len(todo), hours=0.0, xrt=0.0)
        for item in results:
            if item[0] == _OK:
                _, key, feats, mean, std, n, rate = item
                writer.add(key, feats, mean, std, n)
                result.stored += 1
                result.frames += int(feats.shape[0])
                result.seconds += n / cfg.sample_rate
                result.resampled += int(rate != cfg.sample_rate)
            else:
                _, key, path, reason = item
                result.failed.append((path, reason))
            item = feats = None  # features may be views of a worker's transfer file: let it go
            if bar is not None:
                elapsed = time.perf_counter() - start
                bar.update(task, advance=1, hours=result.seconds / 3600,
                           xrt=result.seconds / elapsed if elapsed > 0 else 0.0)
            if interrupt.requested:
                raise KeyboardInterrupt
        ok = True
    except KeyboardInterrupt:
        interrupt.restore()
        if pool is not None:
            pool.close(terminate=True)
            pool = None
        if bar is not None:
            bar.stop()
            bar = None
        if interrupt.requested and not interrupt.forced:
            writer.close()  # keep everything computed so far
            kept = f"the {result.stored} utterances computed so far are stored in {out}"
        else:
            writer.abort()
            kept = f"the shards finished so far are kept in {out}"
        result.shards = list(writer.completed)
        ui.warn(f"interrupted: {kept}; rerun the same command to continue")
        raise
    finally:
        interrupt.restore()
        result.elapsed = time.perf_counter() - start
        if bar is not None:
            bar.stop()
        if pool is not None:
            pool.close(terminate=not ok)
        if not ok:
            writer.abort()
    writer.close()
    result.shards = list(writer.completed)


class _InterruptFlag:
    """SIGINT -> a flag (first time) or KeyboardInterrupt (second time); main thread only."""

    def __init__(self) -> None:
        self.requested = False
        self.forced = False
        self._previous: Any = None
        self._installed = False

    def _handler(self, signum: int, frame: Any) -> None:
        if self.requested:
            self.forced = True
            raise KeyboardInterrupt
        self.requested = True

    def install(self) -> None:
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)
            self._installed = True

    def restore(self) -> None:
        if self._installed:
            import signal

            signal.signal(signal.SIGINT, self._previous)
            self._installed = False
