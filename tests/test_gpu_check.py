"""bench/gpu_check.sh, the one prepared run for a machine lent with a GPU (issue 20): its --smoke path
runs the same steps on this CPU with tiny configs, so the script is known to work before a device
minute is spent on it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "gpu_check.sh"
STEPS = ["setup", "train", "train_gpu", "model", "embed", "smi"]


def gpu_check(tmp_path: Path, *args: str, timeout: float = 400) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable}
    env.pop("OUT", None)  # the device tool's folder, were it set: the test names its own
    return subprocess.run(["bash", str(SCRIPT), "--smoke", "--out", str(tmp_path / "out"), "--work",
                           str(tmp_path / "work"), *args], capture_output=True, text=True, env=env, timeout=timeout)


def step_lines(stdout: str) -> dict[str, str]:
    return {line[5:].split(":", 1)[0]: line.split(":", 1)[1].strip()
            for line in stdout.splitlines() if line.startswith("STEP ")}


@pytest.mark.slow
def test_smoke_runs_every_step_and_writes_the_summary(tmp_path):
    r = gpu_check(tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = step_lines(r.stdout)
    assert list(lines) == STEPS, r.stdout
    for name, text in lines.items():
        assert text.startswith("ok "), f"{name}: {text}"
    out = tmp_path / "out"
    # what the device tool brings back: at most 8 files, one folder deep here
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["setup.log", "train.log", "train_gpu.log", "model.log", "embed.log", "smi.csv", "summary.txt", "summary.json"])
    text = (out / "summary.txt").read_text()
    assert text.count("STEP ") == len(STEPS) and "SUMMARY: 6 of 6 steps ok" in text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mode"] == "smoke" and summary["ok"] == 6 and summary["failed"] == []
    figures = {s["step"]: s["figures"] for s in summary["steps"]}
    assert figures["train"]["step"] == 30 and figures["train"]["validations"] == 3  # 20, then 10 resumed
    assert set(figures["train_gpu"]["results"]) == {"fp32", "bf16+cl"}  # compile is left out on the CPU
    assert {r["mode"] for r in figures["model"]["results"]} == {"fp32", "infer-fp32", "infer-bf16-cl"}
    assert figures["embed"]["utterances"] == 60 and figures["embed"]["utterances_per_s"] > 0
    assert figures["smi"]["samples"] >= 1


def test_a_step_past_its_limit_fails_alone_and_the_summary_says_so(tmp_path):
    r = gpu_check(tmp_path, "--only", "setup,model,smi", "--limit", "model=1")
    assert r.returncode == 1, r.stdout + r.stderr
    lines = step_lines(r.stdout)
    assert list(lines) == ["setup", "model", "smi"]
    assert lines["setup"].startswith("ok ")
    assert lines["model"].startswith("FAIL timed out after 1s")
    assert lines["smi"].startswith("FAIL") and "train_gpu step did not run" in lines["smi"]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["failed"] == ["model", "smi"] and "SUMMARY: 1 of 3 steps ok" in r.stdout


def test_usage_errors(tmp_path):
    for args, message in ((["--only", "setup,nope"], "no step 'nope'"), (["--limit", "train=soon"], "seconds expected"),
                          (["--frobnicate"], "unknown option --frobnicate")):
        r = gpu_check(tmp_path, *args, timeout=30)
        assert r.returncode == 2 and message in r.stderr, (args, r.stderr)
        assert not (tmp_path / "out").exists()
