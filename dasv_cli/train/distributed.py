"""Many processes: `--gpus N` (NCCL) and `--procs N` (CPU, gloo) through torch's elastic launcher.

`run_training(cfg)` is the one entry the CLI calls:
- under an external `torchrun` (RANK, WORLD_SIZE and LOCAL_RANK set) this process *is* a rank: it
  joins the process group and trains, without launching anything;
- with `--gpus N` / `--procs N` (N > 1) it checks the inputs once, then starts N ranks with
  `torch.distributed.launcher.api.elastic_launch` (the machinery behind torchrun: a c10d rendezvous on
  a free local port, no restarts) and waits;
- otherwise it trains in this process.

Failure and shutdown: each rank writes its error (one line, with a time stamp) to a private
directory before exiting non-zero; the launcher's agent stops the other ranks, and the first error is
raised here as a DasvError, so the user sees one line. Ctrl-C reaches every rank (directly from the
terminal and again from the agent): the ranks agree at the next update, rank 0 writes last.pt, all
exit, and the launcher returns 130. The agent SIGKILLs any rank still alive 30 s after asking it to
stop, so no process outlives the command.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterator

from dasv_cli import progress
from dasv_cli.devices import resolve_device
from dasv_cli.errors import EXIT_ERROR, EXIT_INTERRUPTED, DasvError, UsageError
from dasv_cli.io.atomic import write_text_atomic
from dasv_cli.train.config import TrainConfig, config_from_dict
from dasv_cli.train.ranks import RunContext

PG_TIMEOUT = timedelta(minutes=60)  # rank 0 validates while the others wait at a collective
_ELASTIC_LOGGERS = ("torch.distributed.elastic", "torch.distributed.launcher", "torch.distributed.run")


def under_torchrun() -> bool:
    """True when an external launcher made this process a rank (torchrun sets these)."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))


def _backend_and_device(cfg: TrainConfig, local_rank: int) -> tuple[str, str]:
    """gloo on CPUs; NCCL with one GPU per local rank for --gpus, or when --device finds a GPU."""
    import torch

    if cfg.procs or cfg.device == "cpu":
        return "gloo", "cpu"
    if cfg.gpus and not torch.cuda.is_available():
        raise UsageError("--gpus: no CUDA device is available (use --procs N to train with CPU processes)")
    if cfg.gpus or resolve_device(cfg.device).startswith("cuda"):
        return "nccl", f"cuda:{local_rank}"
    return "gloo", "cpu"


def _set_threads(local_world: int) -> None:
    import torch

    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(local_world, 1)))


def _join(cfg: TrainConfig):
    """Join the process group described by the environment; returns the RunContext."""
    import torch
    import torch.distributed as dist

    rank = int(os.environ["RANK"])
    world = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ["LOCAL_RANK"])
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    backend, device = _backend_and_device(cfg, local_rank)
    if backend == "nccl":
        if local_rank >= torch.cuda.device_count():
            raise UsageError(f"rank {rank}: local rank {local_rank} but only {torch.cuda.device_count()} GPU(s)")
        torch.cuda.set_device(local_rank)
    _set_threads(local_world)
    if not dist.is_initialized():
        kwargs = {"device_id": torch.device(device)} if backend == "nccl" else {}
        dist.init_process_group(backend, timeout=PG_TIMEOUT, **kwargs)
    return RunContext(rank=rank, world=world, local_rank=local_rank, device=device)


def _leave() -> None:
    try:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
    except Exception:  # pragma: no cover - best effort at exit
        pass


def run_rank(cfg: TrainConfig, data: Any = None) -> int:
    """This process is one rank (under torchrun or started by `launch`): join, train, leave.

    `data` is the launcher's checked TrainData (its store index included), so a launched rank does
    not read and check the inputs again; under an external torchrun each rank prepares its own."""
    from dasv_cli.train.loop import train

    with sigterm_unwinds():
        ctx = _join(cfg)
        if ctx.rank != 0:
            progress.set_quiet(True)
        try:
            result = train(cfg, ctx, data)
            return result.exit_code
        finally:
            _leave()


@contextlib.contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """Inside: SIGTERM (the launcher stopping the ranks after another one failed) unwinds this rank
    through its `finally` blocks, so loader workers are shut down and the process group left and
    nothing (not even a leaked-semaphore warning) outlives it. A rank stuck inside a collective gets
    the signal when the collective fails on the dead peer, or is SIGKILLed by the launcher 30 s later.

    After: SIGTERM is ignored. The rank has left and is already on its way out (writing its error,
    running atexit); a SystemExit raised from inside an atexit callback would print a traceback
    that buries the one-line error (seen in CI when the launcher's SIGTERM met a rank mid-exit)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):  # noqa: ARG001
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second one ends the process at once
        raise SystemExit(128 + signal.SIGTERM)

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _rank_entry(cfg_dict: dict[str, Any], err_dir: str, debug: bool, quiet: bool, data: Any = None) -> int:
    """What each launched rank runs (module-level so the spawn start method can pickle it)."""
    rank = os.environ.get("RANK", "?")
    progress.set_quiet(quiet)
    try:
        code = run_rank(config_from_dict(cfg_dict), data)
    except DasvError as exc:
        _write_error(err_dir, rank, exc.message, exc.exit_code)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        _write_error(err_dir, rank, "interrupted", EXIT_INTERRUPTED)
        sys.exit(EXIT_INTERRUPTED)
    except Exception as exc:  # a crash: its first line becomes the user's one-line message
        if debug:
            import traceback

            traceback.print_exc()
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        _write_error(err_dir, rank, f"rank {rank} failed: {type(exc).__name__}: {first}", EXIT_ERROR)
        sys.exit(EXIT_ERROR)
    if code == EXIT_INTERRUPTED:
        # Exit rather than return: a returned value is handed to the launcher through a queue that
        # the child then waits on, and a launcher that is itself shutting down (Ctrl-C) never reads
        # it, which would hold every rank until the agent's 30 s kill timeout.
        _write_error(err_dir, rank, "interrupted", EXIT_INTERRUPTED)
        sys.exit(EXIT_INTERRUPTED)
    return code


def _write_error(err_dir: str, rank: str, message: str, code: int) -> None:
    """This rank's error for the launcher (atomic: the launcher may read while ranks are failing)."""
    record = json.dumps({"time": time.time(), "rank": rank, "message": message, "code": code})
    try:
        write_text_atomic(Path(err_dir) / f"rank{rank}.json", "the rank's error", lambda fh: fh.write(record))
    except DasvError:  # pragma: no cover - the exit code still tells the launcher
        pass


def _first_error(err_dir: str) -> dict | None:
    found = []
    for p in Path(err_dir).glob("rank*.json"):
        try:
            found.append(json.loads(p.read_text()))
        except (OSError, ValueError):
            continue
    # The earliest failure is the cause; later ones are usually "peer went away" echoes. An
    # interruption is reported only when nothing failed.
    real = [e for e in found if e.get("code") != EXIT_INTERRUPTED]
    pool = real or found
    return min(pool, key=lambda e: e.get("time", 0.0)) if pool else None


def launch(cfg: TrainConfig, nproc: int, debug: bool = False, data: Any = None) -> int:
    """Start `nproc` local ranks with elastic_launch and wait; returns the exit code.

    `data` (the checked TrainData) travels to every rank with the launch arguments: one index per run."""
    import uuid

    import torch
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs, SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if cfg.gpus:
        have = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if have < cfg.gpus:
            raise UsageError(f"--gpus {cfg.gpus}: only {have} CUDA device(s) visible (--procs N trains with CPU processes)")
    err_dir = tempfile.mkdtemp(prefix="dasv-train-")
    launch_cfg = LaunchConfig(
        min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=f"dasv-{uuid.uuid4().hex[:12]}",
        rdzv_backend="c10d", rdzv_endpoint="127.0.0.1:0", max_restarts=0, monitor_interval=0.2,
        start_method="spawn", logs_specs=DefaultLogsSpecs(log_dir=os.path.join(err_dir, "logs")),
        signals_to_handle="SIGTERM,SIGINT,SIGHUP,SIGQUIT",
    )
    # The launcher's own log lines ("Received SIGINT death signal, ...") would break the one-line
    # error policy: keep them off stderr unless --debug.
    root = logging.getLogger()
    null = logging.NullHandler()
    saved = {}
    if not debug:
        root.addHandler(null)
        names = [n for n in logging.root.manager.loggerDict if n.startswith(_ELASTIC_LOGGERS)]
        for name in set(names) | set(_ELASTIC_LOGGERS):
            saved[name] = logging.getLogger(name).level
            logging.getLogger(name).setLevel(logging.CRITICAL)
    import signal

    # The launcher installs its own handlers (Ctrl-C -> stop the ranks); put ours back afterwards.
    handled = [signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT]
    old_handlers = {sig: signal.getsignal(sig) for sig in handled}
    try:
        results = elastic_launch(launch_cfg, _rank_entry)(cfg.to_dict(), err_dir, debug, progress.is_quiet(), data)
    except ChildFailedError as exc:
        err = _first_error(err_dir)
        if err is None:
            rank, failure = exc.get_first_failure()
            raise DasvError(f"rank {rank} died (exit code {failure.exitcode}) before reporting an error") from None
        if err.get("code") == EXIT_INTERRUPTED:
            return EXIT_INTERRUPTED
        raise DasvError(err["message"], exit_code=int(err.get("code", EXIT_ERROR))) from None
    except SignalException:
        return EXIT_INTERRUPTED
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)
        root.removeHandler(null)
        for sig, handler in old_handlers.items():
            if handler is not None:
                signal.signal(sig, handler)
        shutil.rmtree(err_dir, ignore_errors=True)
    codes = [int(v or 0) for v in (results or {}).values()]
    return EXIT_INTERRUPTED if EXIT_INTERRUPTED in codes else max(codes, default=0)


def run_training(cfg: TrainConfig, debug: bool = False) -> int:
    """Train as configured (one process, N local ranks, or one rank of an external torchrun)."""
    from dasv_cli.train.inputs import prepare_data
    from dasv_cli.train.loop import train
    from dasv_cli.train.state import check_output, hold_output

    # One process holds OUT's lock for the run's life (state.hold_output): rank 0 under torchrun,
    # the launcher (not its ranks) with --procs/--gpus, else this process; `train` checks OUT under it.
    if under_torchrun():
        import contextlib

        with hold_output(cfg) if os.environ.get("RANK") == "0" else contextlib.nullcontext():
            return run_rank(cfg)
    nproc = cfg.gpus or cfg.procs
    if nproc > 1:
        data = prepare_data(cfg, nproc)  # fail fast, once, before any process starts
        with hold_output(cfg):
            check_output(cfg)
            return launch(cfg, nproc, debug, data)
    if cfg.gpus == 1 and cfg.device == "auto":
        cfg.device = "cuda"
    data = prepare_data(cfg, 1)
    with hold_output(cfg):
        return train(cfg, data=data).exit_code


__all__ = ["run_training", "launch", "run_rank", "under_torchrun"]
