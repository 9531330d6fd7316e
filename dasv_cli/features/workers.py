"""Where features are computed and stored: in this process (InlineRun: one job, or a handful of
files) or in `jobs` worker processes (WriterPool), each computing every jobs-th file of the list and
writing its own shards, so no features travel between processes (measured: handing them to one
writer process through /dev/shm cost ~1 ms of CPU per file, as much as the HDF5 write itself; a
worker that writes costs what a run of its own, or a `--part`, costs).

Both hand run.py one event per stored utterance (a file, or with `--augment` each of its copies)
or failure (Stored or Lost: for the counts, the progress bar and the failed list) and commit what
they computed when asked to stop. Worker w of J writes shards first+w, first+w+J, ... of the
directory (or of the part), so a run's layout depends only on the list, `jobs` and `shard_frames`.
No torch here: the log-mel is NumPy/SciPy.
"""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence, Union

from dasv_cli.dsp.logmel import LogMelConfig
from dasv_cli.errors import DasvError
from dasv_cli.features.augmented import ATTR as AUGMENT_ATTR, AugmentJob
from dasv_cli.features.compute import Computed, Outcome, compute_items
from dasv_cli.features.tuning import die_with_parent, tune_malloc
from dasv_cli.io.store.layout import Part
from dasv_cli.io.store.writer import ShardWriter, remove_temporaries

EVENTS_PER_MESSAGE = 8  # a worker reports in batches: fewer messages, progress still smooth


@dataclass(frozen=True)
class Stored:
    """A listed file whose features were added to a shard."""

    index: int  # its position in the run's list
    frames: int
    samples: int
    resampled: bool
    kind: str = ""  # the augmentation of a copy (`dasv features --augment`); "" for the file itself
    units: int = 1  # utterances of the run's total this event accounts for


@dataclass(frozen=True)
class Lost:
    """A listed file that gave no features (a line of the failed list)."""

    index: int
    path: str
    reason: str
    units: int = 1  # a file that could not be decoded accounts for its copies too


Event = Union[Stored, Lost]


@dataclass(frozen=True)
class StoreSpec:
    """Where and how features are stored: what a writer, in this process or a worker, opens."""

    directory: Path
    cfg: LogMelConfig
    dtype: str
    shard_frames: int
    part: Part | None
    first_index: int  # the first free shard number of the directory (or part)
    augment: AugmentJob | None = None  # with `--augment`: items are features.augmented.Work
    content: str = "features"  # with the 16-bit PCM (--keep-audio), or the PCM only (--audio-only)

    def writer(self, offset: int = 0, step: int = 1) -> ShardWriter:
        attrs = {AUGMENT_ATTR: self.augment.attr} if self.augment is not None else None
        return ShardWriter(self.directory, self.cfg.to_dict(), dtype=self.dtype, shard_frames=self.shard_frames,
                           first_index=self.first_index + offset, index_step=step, part=self.part, attrs=attrs,
                           content=self.content)

    def compute(self, item: Any) -> tuple[list[Outcome], int]:
        """(outcomes, utterances planned) of one item: a (key, path) pair, or a Work with --augment."""
        if self.augment is not None:
            return self.augment.compute(item, self.cfg, self.dtype), item.units
        return compute_items([item], self.cfg, self.dtype, self.content), 1


def compute_and_store(items: Sequence[Any], indices: Sequence[int], spec: StoreSpec,
                      writer: ShardWriter, stopping: Any) -> Iterator[Event]:
    """Compute items[i] for i in `indices` into `writer`, one Event per utterance (or failure), until
    `stopping()`."""
    for i in indices:
        if stopping():
            return
        outcomes, units = spec.compute(items[i])
        for n, outcome in enumerate(outcomes, start=1):
            share = 1 + (units - len(outcomes) if n == len(outcomes) else 0)
            if isinstance(outcome, Computed):
                f = outcome.features
                writer.add(outcome.key, f.feats, f.mean, f.std, f.samples, f.audio)
                resampled = f.source_rate != spec.cfg.sample_rate and not outcome.kind
                yield Stored(i, f.frames, int(f.samples), resampled, outcome.kind, share)
            else:
                yield Lost(i, outcome.path, outcome.reason, share)


class InlineRun:
    """One job: computed and written in this process (single-threaded code: one job = one core)."""

    def __init__(self, items: Sequence[Any], spec: StoreSpec) -> None:
        self.items = items
        self.writer = spec.writer()
        self.spec = spec

    def events(self, stopping: Any = lambda: False) -> Iterator[Event]:
        """One event per file, until all are done or `stopping()` (checked between files)."""
        yield from compute_and_store(self.items, range(len(self.items)), self.spec, self.writer, stopping)

    def close(self) -> list[Path]:
        """Commit the shard in progress; the shards this run completed."""
        self.writer.close()
        return list(self.writer.completed)

    def abort(self) -> list[Path]:
        """Drop the shard in progress; the shards this run completed."""
        self.writer.abort()
        return list(self.writer.completed)


def _stop_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(1)  # unwinds through the worker's handlers: the unfinished shard is dropped


def _worker_main(w: int, jobs: int, items: Sequence[Any], spec: StoreSpec, conn: Any,
                 stop: Any, lock_fds: Sequence[int]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and tells the workers
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    for fd in lock_fds:  # the store lock belongs to the parent: a worker must never keep it alive
        try:
            os.close(fd)
        except OSError:
            pass
    die_with_parent()
    tune_malloc()
    writer = spec.writer(offset=w, step=jobs)
    batch: list[Event] = []
    error = None
    try:
        for event in compute_and_store(items, range(w, len(items), jobs), spec, writer, stop.is_set):
            batch.append(event)
            if len(batch) >= EVENTS_PER_MESSAGE:
                conn.send((batch, None, None))
                batch = []
        writer.close()
    except DasvError as exc:
        writer.abort()
        error = exc.message
    except Exception as exc:  # a bug: one line for the user rather than a hung run
        writer.abort()
        error = f"a worker failed: {type(exc).__name__}: {exc}"
    except BaseException:  # SIGTERM (a second Ctrl-C): drop the unfinished shard and go
        writer.abort()
        raise
    conn.send((batch, [str(p) for p in writer.completed], error))
    conn.close()


class WriterPool:
    """`jobs` worker processes, worker w computing and storing items w, w + jobs, ... itself.

    Each worker reports through its own pipe, so one that dies (killed for memory) shows as the end
    of its pipe at once, and can leave no lock behind that the others would wait on.
    """

    def __init__(self, jobs: int, items: Sequence[Any], spec: StoreSpec,
                 lock_fds: Sequence[int] = ()) -> None:
        import multiprocessing as mp

        # fork (Linux): workers start at once, sharing the parent's imported NumPy, SciPy and h5py
        ctx = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
        self.spec = spec
        self._stop = ctx.Event()
        self.completed: list[Path] = []
        self.error: str | None = None
        self._open: dict[Any, int] = {}  # pipe -> worker, until its last message
        self.procs = []
        for w in range(jobs):
            receive, send = ctx.Pipe(duplex=False)
            p = ctx.Process(target=_worker_main, daemon=True,
                            args=(w, jobs, items, spec, send, self._stop, list(lock_fds)))
            p.start()
            send.close()  # the worker's end: closed here, so its death is the end of the pipe
            self.procs.append(p)
            self._open[receive] = w

    def events(self, stopping: Any = lambda: False) -> Iterator[Event]:
        """Every worker's events until all have finished; DasvError for the first that failed (the
        others then commit what they computed and stop, as they do once `stopping()`)."""
        from multiprocessing.connection import wait

        while self._open:
            if stopping():
                self._stop.set()
            for conn in wait(list(self._open), timeout=0.5):
                try:
                    batch, completed, error = conn.recv()
                except (EOFError, OSError):  # gone without its last message
                    w = self._open.pop(conn)
                    self.procs[w].join()
                    self._fail(f"a worker process died (exit code {self.procs[w].exitcode}; out of memory?); "
                               f"the shards finished so far are kept, rerun to continue")
                    continue
                yield from batch
                if completed is not None:
                    self._open.pop(conn)
                    self.completed.extend(Path(p) for p in completed)
                    if error is not None:
                        self._fail(error)
        self._join()
        if self.error is not None:
            raise DasvError(self.error)

    def _fail(self, message: str) -> None:
        if self.error is None:
            self.error = message
            self._stop.set()

    def _join(self) -> None:
        for p in self.procs:
            p.join()
        remove_temporaries(self.spec.directory, self.spec.part)  # of a worker that was killed

    def close(self) -> list[Path]:
        """The shards the workers completed (after events() has run out)."""
        self._join()
        return sorted(self.completed)

    def abort(self) -> list[Path]:
        """Stop the workers now (their unfinished shards are dropped); the shards completed."""
        for p in self.procs:
            if p.is_alive():
                p.terminate()
        for p in self.procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
                p.join()
        remove_temporaries(self.spec.directory, self.spec.part)
        return sorted(self.completed)
