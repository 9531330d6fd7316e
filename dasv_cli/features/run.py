"""featurize(): an audio list -> log-mel features (`jobs` processes, each writing its shards) -> DIR/failed.tsv.

Guarantees: keys already in the store are skipped (resume after any crash, SIGKILL included, because
shards are committed atomically and each utterance is computed on its own, so a rerun stores the
same numbers); Ctrl-C commits what was computed; one writer per directory, or one per part with
`part` (features.parts: N jobs fill one directory, each skipping what any of them stored); bad
inputs are listed, not fatal; a write failure (disk full, read-only) is one DasvError and finished
shards stay. With `augment`, each file's augmented copies are stored beside it (features.augmented),
under the same guarantees, key by key.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from dasv_cli.dsp.logmel import LogMelConfig
from dasv_cli.errors import EXIT_OK, EXIT_PARTIAL, InputError, UsageError
from dasv_cli.features.augmented import AugmentJob, AugmentOptions, check_store, prepare_job
from dasv_cli.features.failed import write_failed
from dasv_cli.features.parts import select_part
from dasv_cli.features.workers import InlineRun, Stored, StoreSpec, WriterPool
from dasv_cli.interrupts import InterruptFlag
from dasv_cli.io.lists import AudioEntry, read_audio_list
from dasv_cli.io.paths import create_dir
from dasv_cli.io.store.index import refresh_index
from dasv_cli.io.store.integrity import DAMAGED, NO_CHECKSUM, damaged_message, verify_shards
from dasv_cli.io.store.layout import (
    DEFAULT_SHARD_FRAMES,
    DTYPES,
    Part,
    failed_name,
    list_shards,
    read_shard_header,
    shard_part,
)
from dasv_cli.io.store.lock import StoreLock
from dasv_cli.io.store.writer import clear_store, next_shard_index, remove_temporaries

INLINE_MAX_FILES = 8  # up to this many files are computed in the main process, without workers


@dataclass
class FeaturizeResult:
    """What a run did (all counts refer to this run's list)."""

    directory: Path
    part: Part | None = None
    listed: int = 0  # in this run's list (this part's entries with a part)
    stored: int = 0  # newly computed and stored by this run
    copies: int = 0  # augmented copies newly stored (`augment`)
    augment: dict[str, int] | None = None  # {kind: copies per file} with `augment`
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
            "directory": str(self.directory), "part": str(self.part) if self.part else None,
            "listed": self.listed, "stored": self.stored, "copies": self.copies, "augment": self.augment,
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


CONTENT_FLAGS = {"features": "neither --keep-audio nor --audio-only", "features+audio": "--keep-audio",
                 "audio": "--audio-only"}


def _stored_keys(out: Path, cfg: LogMelConfig, dtype: str, content: str = "features") -> set[str]:
    """Keys in the complete shards of `out`; a store with another recipe, dtype or content is refused."""
    stored: set[str] = set()
    recipe = cfg.to_dict()
    for shard in list_shards(out):
        keys, info = read_shard_header(shard)
        if info["content"] != content:
            raise UsageError(
                f"{out}: {shard.name} holds {info['content']} (made with {CONTENT_FLAGS[info['content']]}); "
                f"rerun with the same option, or --overwrite to replace the store, or choose another -o"
            )
        if info["dtype"] != dtype and content != "audio":
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


def _verify_stored(out: Path, part: Part | None, show: bool) -> None:
    """Before a rerun builds on the shards already in `out` (a part's: its own), recompute their
    checksums (io.store.integrity): a damaged shard stops the run, named, before any work."""
    from dasv_cli import progress as ui

    mine = [p for p in list_shards(out) if part is None or shard_part(p) == part]
    verdicts = verify_shards(mine, progress=show and not ui.is_quiet())
    damaged = [v for v in verdicts if v.status == DAMAGED]
    if damaged:
        raise InputError(damaged_message(out, damaged))
    unchecked = sum(v.status == NO_CHECKSUM for v in verdicts)
    if unchecked:
        ui.log(f"{unchecked} of {len(verdicts)} stored shards have no checksum (written by an earlier dasv): "
               f"not verified")


def featurize(
    audio_list: str | Path | Sequence[AudioEntry],
    out_dir: str | Path = "features",
    *,
    audio_dir: str | Path | None = None,
    jobs: int | None = None,
    dtype: str = "float32",
    overwrite: bool = False,
    cfg: LogMelConfig = LogMelConfig(),
    shard_frames: int = DEFAULT_SHARD_FRAMES,
    progress: bool = True,
    part: Part | None = None,
    augment: AugmentOptions | None = None,
    content: str = "features",
) -> FeaturizeResult:
    """Compute and store the log-mel features of every file in `audio_list` (a path, `-`, or entries).

    With `part`, only that part's entries (every N-th, features.parts), written beside the other
    parts' under the part's names. Returns a FeaturizeResult; `result.exit_code` is 3 when some inputs
    failed (they are listed in DIR/failed.tsv, or the part's failed list; the others are stored).
    `overwrite`: the existing store in `out_dir` (shards and failed lists) is removed first (not with
    `part`: one part would delete the others'). `augment`: store augmented copies of every file too
    (features.augmented; the sources are checked before anything is written). Raises DasvError for
    problems that stop the run. `content`: "features+audio" keeps each file's 16-bit PCM beside its
    features (online augmentation reads waveform windows), "audio" stores the PCM only (a waveform
    store of a noise or RIR corpus), under the same resume, part and failed-list rules.
    """
    from dasv_cli import progress as ui

    if dtype not in DTYPES:
        raise UsageError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if content not in CONTENT_FLAGS:
        raise UsageError(f"unknown store content {content!r}")
    if augment is not None and content != "features":
        raise UsageError("--augment stores copies; --keep-audio/--audio-only store waveforms for online "
                         "augmentation (`dasv train --online-augment`): use one or the other")
    if jobs is not None and jobs < 1:
        raise UsageError(f"--jobs must be at least 1, got {jobs}")
    if audio_dir is not None and not Path(audio_dir).is_dir():
        raise UsageError(f"{audio_dir}: no such directory (--audio-dir)")
    if overwrite and part is not None:
        raise UsageError(f"--overwrite cannot be used with --part (part {part} would delete the other parts' "
                         f"shards); remove the old store first, then start the parts")
    if isinstance(audio_list, (str, Path)):
        entries = read_audio_list(audio_list, audio_dir)  # the whole list: duplicates are refused
    else:
        entries = list(audio_list)
    job = prepare_job(augment, entries, cfg, str(audio_list) if isinstance(audio_list, (str, Path)) else
                      "the audio list") if augment is not None else None
    entries = select_part(entries, part)
    out = Path(out_dir)
    create_dir(out, "the output directory", " (choose another -o)")
    result = FeaturizeResult(directory=out, part=part, listed=len(entries),
                             augment=dict(job.spec) if job is not None else None)
    lock = StoreLock(out, part).acquire()
    if not lock.supported:
        ui.warn(f"{out}: the file system does not support locks; make sure no other `dasv features` run "
                f"writes {'part ' + str(part) if part else 'to this directory'} at the same time")
    try:
        remove_temporaries(out, part)  # left by a killed run (of this part); we hold its lock
        if overwrite:
            clear_store(out)
            stored: set[str] = set()
        else:
            stored = _stored_keys(out, cfg, dtype, content)
            _verify_stored(out, part, progress)
        if job is not None and not overwrite:
            check_store(out, job)
        todo: list[Any] = (job.todo(entries, stored) if job is not None
                           else [(e.key, str(e.path)) for e in entries if e.key not in stored])
        result.skipped = len(entries) - len(todo)
        n_jobs = max(1, min(jobs or default_jobs(), len(todo) or 1))
        result.jobs = n_jobs
        which = f"part {part} of the list: " if part else ""
        if result.skipped:
            ui.log(f"{which}{result.skipped} of {len(entries)} listed files already stored in {out}: skipped")
        if not todo:
            write_failed(out, [], part)
            ui.log(f"{which}nothing to do: all {len(entries)} listed files are stored in {out}")
            return result
        copies = f" (and {sum(len(w.copies) for w in todo)} augmented copies)" if job is not None else ""
        ui.log(f"{which}computing features for {len(todo)} files{copies} with {n_jobs} job{'s' if n_jobs > 1 else ''} "
               f"-> {out}")
        _run(todo, out, cfg, dtype, n_jobs, shard_frames, result, progress and not ui.is_quiet(), lock.fds, job,
             content)
        write_failed(out, result.failed, part)
        refresh_index(out)  # the first training open then reads DIR/.dasv-index.npz, not every shard
    finally:
        lock.release()
    ui.log(
        f"stored {result.stored} utterances{f' and {result.copies} augmented copies' if job else ''} "
        f"({result.seconds / 3600:.2f} h of audio, {result.frames} frames) "
        f"in {result.elapsed:.1f} s: {result.realtime_factor:.0f}x real-time"
    )
    ui.log(f"resampled to {cfg.sample_rate} Hz: {result.resampled} of {result.stored} stored files")
    if result.failed:
        what = "inputs or copies" if job is not None else f"of {len(todo)} inputs"
        ui.warn(f"{len(result.failed)} {what} failed; reasons in {out / failed_name(part)}")
    return result


def _run(todo: list[Any], out: Path, cfg: LogMelConfig, dtype: str, jobs: int, shard_frames: int,
         result: FeaturizeResult, show: bool, lock_fds: Sequence[int] = (), job: AugmentJob | None = None,
         content: str = "features") -> None:
    """Compute `todo` ((key, path) pairs, or Work with `job`) and store it, counting into `result`;
    Ctrl-C keeps what was computed."""
    from rich.progress import TextColumn

    from dasv_cli import progress as ui

    spec = StoreSpec(out, cfg, dtype, shard_frames, result.part, next_shard_index(out, result.part), job, content)
    # A handful of files runs in this process (no worker start-up: `dasv features` on one file starts fast)
    runner: InlineRun | WriterPool
    if jobs > 1 and len(todo) > INLINE_MAX_FILES:
        runner = WriterPool(jobs, todo, spec, lock_fds)
    else:
        runner = InlineRun(todo, spec)
    columns = (TextColumn("{task.fields[hours]:.2f} h"), TextColumn("{task.fields[xrt]:.0f}x real-time"))
    bar = ui.make_progress(*columns, transient=False) if show else None
    start = time.perf_counter()
    # Ctrl-C asks the runner to stop between files and commit the shards in progress; a second
    # Ctrl-C stops at once (the unfinished shards are then dropped).
    interrupt = InterruptFlag()
    failed: list[tuple[int, str, str]] = []
    ok = False
    try:
        interrupt.install()
        if bar is not None:
            bar.start()
            units = sum(w.units for w in todo) if job is not None else len(todo)
            task = bar.add_task("features", total=units, hours=0.0, xrt=0.0)
        for event in runner.events(lambda: interrupt.requested):
            if isinstance(event, Stored):
                result.copies += int(bool(event.kind))
                result.stored += int(not event.kind)
                result.frames += event.frames
                result.seconds += event.samples / cfg.sample_rate
                result.resampled += int(event.resampled)
            else:
                failed.append((event.index, event.path, event.reason))
            if bar is not None:
                elapsed = time.perf_counter() - start
                bar.update(task, advance=event.units, hours=result.seconds / 3600,
                           xrt=result.seconds / elapsed if elapsed > 0 else 0.0)
        ok = True
    except KeyboardInterrupt:  # the second Ctrl-C
        result.shards = runner.abort()
        ok = True  # handled
        if bar is not None:
            bar.stop()
            bar = None
        ui.warn(f"interrupted: the shards finished so far are kept in {out}; rerun the same command to continue")
        raise
    finally:
        interrupt.restore()
        result.elapsed = time.perf_counter() - start
        result.failed = [(path, reason) for _, path, reason in sorted(failed)]  # in list order
        if bar is not None:
            bar.stop()
        if not ok:
            runner.abort()
    result.shards = runner.close()
    if interrupt.requested:
        ui.warn(f"interrupted: the {result.stored} utterances computed so far are stored in {out}; "
                f"rerun the same command to continue")
        raise KeyboardInterrupt
