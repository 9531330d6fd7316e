"""`dasv train --procs 2` (DDP over gloo, started through torch's elastic launcher): identical weights
on every rank, one-line errors when a rank crashes, Ctrl-C saves, and no process is left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import TINY_FLAGS, start_dasv  # tests/ is on sys.path

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process checks read /proc")


def session_pids(sid: int) -> list[int]:
    """Processes still alive in session `sid` (the launcher, its ranks, their loader workers)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[3]) == sid and fields[0] != "Z":
            found.append(int(entry))
    return found


def start(data: Path, out: Path, *extra: str, env: dict | None = None) -> subprocess.Popen:
    """`dasv train --procs 2` on the demo data in a session of its own (to signal and check it whole)."""
    return start_dasv("train", "--train-labels", data / "labels.txt", "--features", data / "feats", *TINY_FLAGS,
                      "--batch-size", "4", "--procs", "2", "-o", out, *extra, env=env, stdout=subprocess.PIPE,
                      stderr=subprocess.PIPE, text=True, start_new_session=True)


def finish(proc: subprocess.Popen, timeout: float = 240) -> tuple[str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    deadline = time.time() + 10
    while session_pids(proc.pid) and time.time() < deadline:
        time.sleep(0.1)
    left = session_pids(proc.pid)
    if left:
        os.killpg(proc.pid, signal.SIGKILL)
    assert not left, f"processes left behind: {left}"
    return out, err


def test_two_processes_train_identical_weights_and_exit_cleanly(data, tmp_path):
    from dasv_cli.model import ModelConfig, SpeakerNet
    from dasv_cli.train.ranks import weights_digest

    out = tmp_path / "ddp"
    # Rank 1's first batch after update 1 is all-NaN: every rank must skip it (DDP needs them to agree)
    # and no BatchNorm statistics may be poisoned.
    proc = start(data, out, "--max-steps", "4", "--workers", "1", "--valid-trials", str(data / "trials.txt"),
                 "--validate-every", "2", env={"DASV_TRAIN_FAULT": "nan:1:1"})
    stdout, err = finish(proc)
    assert proc.returncode == 0, err
    assert stdout == ""
    assert "effective batch: 4 per process x 2 process(es) x 2 accumulation = 16" in err
    assert "all 2 ranks hold identical weights" in err
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert ckpt["step"] == 4 and ckpt["world_size"] == 2 and len(ckpt["rng"]["torch"]) == 2
    assert ckpt["skipped"] == 1 and "non-finite loss at step 1" in err
    assert all(torch.isfinite(t.float()).all() for t in ckpt["model"].values())
    digests = ckpt["rank_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]
    net = SpeakerNet(ModelConfig.from_dict(ckpt["config"]["model"]))
    net.load_state_dict(ckpt["model"])
    assert weights_digest(net) == digests[0]
    assert (out / "best.pt").exists()
    assert err.count("resolved config") == 1  # printed once, by rank 0


def test_a_crashing_rank_ends_all_with_its_error_on_one_line(data, tmp_path):
    out = tmp_path / "crash"
    proc = start(data, out, "--max-steps", "50", "--workers", "1", env={"DASV_TRAIN_FAULT": "1:2"})
    _, err = finish(proc)
    assert proc.returncode == 1, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert lines[-1] == "dasv: error: rank 1 failed: RuntimeError: injected fault (DASV_TRAIN_FAULT) on rank 1 at step 2"
    assert "Traceback" not in err and "ChildFailedError" not in err


def test_ctrl_c_saves_last_and_leaves_no_process(data, tmp_path):
    out = tmp_path / "int"
    proc = start(data, out, "--max-steps", "100000", "--workers", "1", "--print-every", "1")
    deadline = time.time() + 180
    while not (out / "metrics.jsonl").exists() or not (out / "metrics.jsonl").read_text().strip():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.time() < deadline
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    _, err = finish(proc)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "dasv: error: interrupted"
    assert "Traceback" not in err
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert ckpt["step"] >= 1 and ckpt["rank_digests"][0] == ckpt["rank_digests"][1]


def test_sigterm_unwinds_a_rank_inside_and_is_ignored_once_it_has_left():
    """The launcher's SIGTERM can meet a rank that already left and is running atexit; a SystemExit
    raised there printed a traceback under the one-line error (a CI failure of the crash test)."""
    code = (
        "import atexit, os, signal, time\n"
        "from dasv_cli.train.distributed import sigterm_unwinds\n"
        "try:\n"
        "    with sigterm_unwinds():\n"
        "        os.kill(os.getpid(), signal.SIGTERM); time.sleep(5); print('not unwound')\n"
        "except SystemExit as exc:\n"
        "    print('unwound', exc.code)\n"
        "atexit.register(lambda: (os.kill(os.getpid(), signal.SIGTERM), time.sleep(0.2)))\n"
        "os.kill(os.getpid(), signal.SIGTERM); time.sleep(0.2); print('still here')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:2] == ["unwound 143", "still here"]
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr
