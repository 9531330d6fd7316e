"""Shared fixtures and helpers: the bundled demo speech, ../shared/data when present, the one CLI runner
(a real process, or in this process where no process of its own is needed) and the tiny training setup
(the demo training data, one thread, the TINY config).

Test modules import the helpers with `from conftest import ...` (pytest puts tests/ on sys.path).
"""

from __future__ import annotations

import contextlib
import gc
import io
import itertools
import os
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

import pytest

REPO = Path(__file__).resolve().parents[1]
DEMO_DIR = REPO / "dasv_cli" / "data" / "demo"

# A tiny training setup: a few thousand parameters, 1 s windows (TrainConfig fields, and as flags).
TINY = dict(kernel_size=16, heads=4, embedding_size=16, window_seconds=1.0, batch_size=8, workers=0,
            learning_rate=0.01, print_every=2, validate_every=1000, save_every=1000)
TINY_FLAGS = ["--kernel-size", "16", "--heads", "4", "--embedding-size", "16", "--window-seconds", "1",
              "--batch-size", "8", "--learning-rate", "0.01", "--print-every", "2"]


def pytest_configure(config: pytest.Config) -> None:
    """Run the signal tests with Ctrl-C deliverable. A suite started as a background job of a
    non-interactive shell (`... &`, nohup, some CI runners) inherits SIGINT ignored, every dasv process
    it starts inherits that too, and Python then never raises KeyboardInterrupt in them: the Ctrl-C
    tests would see runs that carry on to exit 0."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def shared_data_dir() -> Path | None:
    """`$DASV_SHARED_DATA`, else `../shared/data` beside the checkout; None when neither exists."""
    env = os.environ.get("DASV_SHARED_DATA")
    candidates = [Path(env)] if env else []
    candidates.append(REPO.parent / "shared" / "data")
    for c in candidates:
        if c.is_dir():
            return c
    return None


@pytest.fixture(scope="session")
def demo_dir() -> Path:
    """The bundled demo set: 8 LibriSpeech speakers x 5 utterances (FLAC, 16 kHz)."""
    assert DEMO_DIR.is_dir(), f"bundled demo audio missing at {DEMO_DIR}"
    return DEMO_DIR


@pytest.fixture(scope="session")
def demo_files(demo_dir: Path) -> list[Path]:
    return sorted(demo_dir.glob("*/*.flac"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (or $DASV_SHARED_DATA); tests that need it are skipped with a visible reason."""
    d = shared_data_dir()
    if d is None:
        pytest.skip("real-speech data not found: set DASV_SHARED_DATA or place shared/data beside the checkout")
    return d


def make_demo_data(root: Path, demo_dir: Path) -> Path:
    """Features of the 40 demo files (keys `spk/spk-chapter-utt`), labels by name, all-pairs trials."""
    root.mkdir(parents=True, exist_ok=True)
    if (root / "labels.txt").exists():
        return root
    from dasv_cli.features.run import featurize

    rel = sorted(str(p.relative_to(demo_dir)) for p in demo_dir.glob("*/*.flac"))
    (root / "audio.lst").write_text("".join(r + "\n" for r in rel))
    featurize(root / "audio.lst", root / "feats", audio_dir=demo_dir, jobs=1, progress=False)
    keys = [r[:-5] for r in rel]
    (root / "labels.txt").write_text("".join(f"{k} spk{k.split('/')[0]}\n" for k in keys))
    lines = [f"{int(a.split('/')[0] == b.split('/')[0])} {a} {b}\n" for a, b in itertools.combinations(keys, 2)]
    (root / "trials.txt").write_text("".join(lines))
    return root


def same_store_content(a: Path, b: Path) -> None:
    """Two feature stores hold the same keys with bit-identical features, statistics and sample counts."""
    import numpy as np

    from dasv_cli.io.store.reader import FeatureStore

    with FeatureStore(a) as sa, FeatureStore(b) as sb:
        assert sorted(sa.keys()) == sorted(sb.keys())
        for key in sa.keys():
            np.testing.assert_array_equal(sa[key], sb[key])
            for x, y in zip(sa.stats(key), sb.stats(key)):
                np.testing.assert_array_equal(x, y)
            assert sa.samples(key) == sb.samples(key)


@pytest.fixture(scope="session")
def data(tmp_path_factory, demo_dir: Path) -> Path:
    """The demo training data (features, labels, trials of `make_demo_data`), built once per session."""
    return make_demo_data(tmp_path_factory.getbasetemp() / "train-demo-data", demo_dir)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """In-process training on one thread: tiny models gain nothing from more on a shared machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_config(data: Path, out: Path, **over: object):
    """The TINY TrainConfig on `data`'s labels and features, written to `out`; `over` as typed flags
    (resolved as `dasv train` resolves them: defaults <- recipe <- flags, then checked)."""
    from dasv_cli.train.config import resolve_config

    flags = dict(TINY, train_labels=str(data / "labels.txt"), features=str(data / "feats"), out=str(out))
    flags.update(over)
    cfg, _ = resolve_config(flags, cwd=out.parent)
    return cfg


class StopAt:
    """Trainer mixin: behave like a Ctrl-C after update `stop_at` (last.pt is written, the run ends)."""

    stop_at = 5

    def _after_update(self, started):
        if self.state.step == self.stop_at:
            self.interrupts.count = 1
        return super()._after_update(started)


def read_metrics(out: Path) -> list[dict]:
    """The rows of a training run's OUT/metrics.jsonl."""
    import json

    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str


def _dasv_env(env: dict[str, str] | None) -> dict[str, str]:
    """This environment, one thread per process unless `env` says otherwise (tiny models gain nothing
    from more on a shared machine, and runs compared bit for bit then use the same count), then `env`."""
    return {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}


CAP_DAC_OVERRIDE, CAP_SETPCAP = 1, 8  # linux/capability.h


def effective_capabilities() -> int:
    """This process's effective capability set (a bit per capability; 0 where /proc does not say)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def file_modes_bind_this_process() -> bool:
    """Whether a `run_dasv(..., held_to_modes=True)` process is refused what a file's mode forbids:
    without CAP_DAC_OVERRIDE (any ordinary user) it is; root is when it may drop that capability."""
    caps = effective_capabilities()
    return not caps >> CAP_DAC_OVERRIDE & 1 or bool(caps >> CAP_SETPCAP & 1)


def _drop_dac_override() -> None:
    """In the forked child before exec: CAP_DAC_OVERRIDE out of the bounding set, so that the exec'd
    process, root or not, is held to file modes (a 0555 directory refuses it as it refuses a user)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(24, CAP_DAC_OVERRIDE, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
        raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP, CAP_DAC_OVERRIDE) failed")


def run_dasv(*args: str, input: str | bytes | None = None, cwd: Path | str | None = None,
             env: dict[str, str] | None = None, timeout: float = 600,
             file_size_limit: int | None = None, held_to_modes: bool = False) -> CliResult:
    """Run `python -m dasv_cli ARGS` as a user would (a real process: exit code, stdout, stderr).
    `file_size_limit` caps every file the process writes (RLIMIT_FSIZE): writes past it fail with
    EFBIG, as on a full disk. `held_to_modes`: file modes bind the process even when the suite runs
    as root (CI does), see file_modes_bind_this_process."""
    def before_exec() -> None:
        if file_size_limit is not None:
            import resource

            resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))
        if held_to_modes and effective_capabilities() >> CAP_DAC_OVERRIDE & 1:
            _drop_dac_override()

    data = input.encode() if isinstance(input, str) else input
    proc = subprocess.run([sys.executable, "-m", "dasv_cli", *map(str, args)], input=data, capture_output=True,
                          cwd=cwd, env=_dasv_env(env), timeout=timeout,
                          preexec_fn=before_exec if file_size_limit is not None or held_to_modes else None)
    return CliResult(proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace"))


def start_dasv(*args: str, cwd: Path | str | None = None, env: dict[str, str] | None = None,
               **popen: object) -> subprocess.Popen:
    """Start `python -m dasv_cli ARGS` and return the running process (to signal it, or watch its
    output); `popen` goes to subprocess.Popen (stdout=..., stderr=..., start_new_session=...)."""
    return subprocess.Popen([sys.executable, "-m", "dasv_cli", *map(str, args)], cwd=cwd, env=_dasv_env(env),
                            **popen)


def signal_when(*args: str, ready: Callable[[str], bool], sig: int = signal.SIGINT, cwd: Path | str | None = None,
                env: dict[str, str] | None = None, attempts: int = 1, again: Callable[[], None] | None = None,
                timeout: float = 120) -> CliResult:
    """Start `dasv ARGS` (a real process), send `sig` once `ready(its stderr so far)` holds, and collect
    the result (code 130 after a handled Ctrl-C, -9 after SIGKILL). A run that ends before it is ready
    is started again after `again()` (e.g. removing what it wrote), `attempts` runs in all; then, or
    when it is not ready within `timeout` seconds, the test fails."""
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "stderr"
        for attempt in range(1, attempts + 1):
            with open(log, "wb") as err:
                proc = start_dasv(*args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=err)
                deadline = time.monotonic() + timeout
                while not ready(log.read_text(errors="replace")) and proc.poll() is None:
                    if time.monotonic() > deadline:
                        proc.kill()
                        proc.communicate()
                        pytest.fail(f"the command never got going:\n{log.read_text(errors='replace')}")
                    time.sleep(0.01)
                running = proc.poll() is None
                if running:
                    proc.send_signal(sig)
                out, _ = proc.communicate(timeout=120)
            stderr = log.read_text(errors="replace")
            if running:
                return CliResult(proc.returncode, out.decode(errors="replace"), stderr)
            if attempt < attempts and again is not None:
                again()
    pytest.fail(f"the run ended before it could be signalled ({attempts} attempt(s)):\n{stderr}")


def _stream(data: bytes = b"") -> io.TextIOWrapper:
    """A text stream over bytes, with `.buffer` like sys.stdout (not a terminal, no file descriptor)."""
    return io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", errors="replace", write_through=True)


@contextlib.contextmanager
def _fd_to(fd: int, target: BinaryIO) -> Iterator[None]:
    """Point file descriptor `fd` at `target` meanwhile: what C code (HDF5, FFmpeg) writes to a
    process's stdout or stderr goes to the descriptor, not to sys.stdout/sys.stderr."""
    saved = os.dup(fd)
    os.dup2(target.fileno(), fd)
    try:
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


def _open_hdf5_files() -> int:
    import h5py

    return h5py.h5f.get_obj_count(h5py.h5f.OBJ_ALL, h5py.h5f.OBJ_FILE)


def run_inprocess(*args: str, input: str | bytes | None = None, cwd: Path | str | None = None,
                  env: dict[str, str] | None = None) -> CliResult:
    """`dasv ARGS` through `dasv_cli.cli.app.run` in this process: the exit code, stdout and stderr a
    real process gives (Python's streams and file descriptors 1 and 2), without the interpreter and
    torch start-up. For cases that need no process of their own (signals, file-size limits, stdin
    from another process, fork, torchrun: use `run_dasv`). Everything a run changes in the process
    is put back: cwd, standard streams, environment, the CLI's debug flag, the progress console and
    quiet flag, SIGINT/SIGTERM handlers, warning filters, torch's thread count and RNG; HDF5 files
    an error path left open are collected, as a process exit would close them."""
    import torch

    from dasv_cli import progress
    from dasv_cli.cli import app

    data = input.encode() if isinstance(input, str) else (input or b"")
    out, err = _stream(), _stream()
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    threads, rng = torch.get_num_threads(), torch.random.get_rng_state()
    old_cwd, old_env, open_files = os.getcwd(), dict(os.environ), _open_hdf5_files()
    app._state["debug"] = False
    progress._console, progress._quiet = None, False
    with tempfile.TemporaryFile() as fd_out, tempfile.TemporaryFile() as fd_err:
        try:
            torch.set_num_threads(1)
            os.environ.update({k: str(v) for k, v in (env or {}).items()})
            if cwd is not None:
                os.chdir(cwd)
            with contextlib.ExitStack() as stack:
                stack.enter_context(warnings.catch_warnings())
                stack.enter_context(_fd_to(1, fd_out))
                stack.enter_context(_fd_to(2, fd_err))
                stack.enter_context(contextlib.redirect_stdout(out))
                stack.enter_context(contextlib.redirect_stderr(err))
                saved_stdin, sys.stdin = sys.stdin, _stream(data)
                stack.callback(setattr, sys, "stdin", saved_stdin)
                try:
                    code = app.run([str(a) for a in args])
                except SystemExit as exc:  # what a real process would end with
                    code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        finally:
            os.chdir(old_cwd)
            os.environ.clear()
            os.environ.update(old_env)
            for s, h in handlers.items():
                signal.signal(s, h)
            torch.set_num_threads(threads)
            torch.random.set_rng_state(rng)
            app._state["debug"] = False
            progress._console, progress._quiet = None, False
            if _open_hdf5_files() > open_files:  # left open by an error path; a process exit closes them
                gc.collect()
        fd_out.seek(0)
        fd_err.seek(0)
        stdout = out.buffer.getvalue() + fd_out.read()
        stderr = err.buffer.getvalue() + fd_err.read()
    return CliResult(code, stdout.decode("utf-8", errors="replace"), stderr.decode("utf-8", errors="replace"))


@pytest.fixture
def dasv():
    """`dasv(*args, input=..., cwd=...)` -> CliResult (code, stdout, stderr), in a real process."""
    return run_dasv
