"""Every command in the README runs as written: the ```sh blocks, in order, in one shell."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    """The README's ```sh blocks as commands (continuation lines joined), in document order."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    commands: list[str] = []
    for block in re.findall(r"```sh\n(.*?)```", text, flags=re.S):
        pending = ""
        for line in block.splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            commands.append(pending + line)
            pending = ""
    return commands


def test_readme_has_every_subcommand():
    commands = " ".join(readme_commands())
    for sub in ("demo", "features", "inspect", "train", "validate", "embed", "score", "model"):
        assert re.search(rf"\bdasv {sub}\b", commands), f"README shows no `dasv {sub}` example"
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert "dasv convert" in text and "pip install" in text and "python -m pytest" in text


@pytest.mark.slow
def test_readme_commands_run_in_order(tmp_path):
    commands = readme_commands()
    lines = ["set -e"]
    for i, cmd in enumerate(commands):
        lines.append(f"echo '+++ {i}' >&2")
        lines.append(cmd)
    script = tmp_path / "readme.sh"
    script.write_text("\n".join(lines) + "\n")
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.setdefault("OMP_NUM_THREADS", "2")
    proc = subprocess.run(["bash", str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=1500)
    if proc.returncode != 0:
        done = re.findall(r"^\+\+\+ (\d+)$", proc.stderr, flags=re.M)
        failed = commands[int(done[-1])] if done else "?"
        pytest.fail(f"README command failed (exit {proc.returncode}): {failed}\n{proc.stderr[-3000:]}")
    walk = tmp_path / "walk"
    for produced in ("features/shard-00000.h5", "runs/small/best.pt", "runs/small/last.pt",
                     "runs/small/metrics.jsonl", "runs/ddp/last.pt", "runs/torchrun/last.pt",
                     "embeddings.h5", "scores.tsv", "det.png", "trials.txt"):
        assert (walk / produced).exists(), f"the README walk-through did not produce {produced}"
    assert (tmp_path / "dasv-demo" / "det.png").exists()
    # The --json summaries on stdout are JSON documents with the documented keys.
    summaries = []
    decoder = json.JSONDecoder()
    for match in re.finditer(r"^\{", proc.stdout, flags=re.M):
        try:
            doc, _ = decoder.raw_decode(proc.stdout, match.start())
        except ValueError:
            continue
        if isinstance(doc, dict):
            summaries.append(doc)
    assert any({"trials", "targets", "nontargets", "eer", "min_dcf_p01", "min_dcf_p05",
                "eer_threshold"} <= set(s) for s in summaries)
    steps = [json.loads(line)["step"] for line in (walk / "runs/small/metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 30, "the resumed run did not continue to --max-steps 30"
