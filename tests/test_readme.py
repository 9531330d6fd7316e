"""Every command in the README runs as written: the ```sh blocks, in order, in one shell (the
blocks before the walk-through, which work in their own directory, in a shell of their own beside it)."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def readme_blocks() -> list[list[str]]:
    """The README's ```sh blocks, each as its commands (continuation lines joined), in document order."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    blocks: list[list[str]] = []
    for block in re.findall(r"```sh\n(.*?)```", text, flags=re.S):
        commands: list[str] = []
        pending = ""
        for line in block.splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            commands.append(pending + line)
            pending = ""
        blocks.append(commands)
    return blocks


def readme_commands() -> list[str]:
    """Every command of the README's ```sh blocks, in document order."""
    return [cmd for block in readme_blocks() for cmd in block]


def test_readme_has_every_subcommand():
    commands = " ".join(readme_commands())
    for sub in ("demo", "features", "inspect", "train", "validate", "embed", "score", "model"):
        assert re.search(rf"\bdasv {sub}\b", commands), f"README shows no `dasv {sub}` example"
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert "dasv convert" in text and "pip install" in text and "python -m pytest" in text


def pipeline_stages(command: str) -> str:
    """One letter per stage of the command's last pipeline: `d` for dasv, `o` for another program."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    last: list[list[str]] = [[]]
    for token in lexer:
        if token in ("&&", "||", ";"):
            last = [[]]
        elif token == "|":
            last.append([])
        else:
            last[-1].append(token)
    return "".join("d" if stage[:1] == ["dasv"] else "o" for stage in last)


# After each command: every dasv stage of its pipeline exits 0, and so does the last stage (a bare
# `set -e` looks only at the last: `dasv ... | head` passed with dasv failing). Under pipefail a list
# (`a && b`) fails when any pipeline in it fails. Another program may end by SIGPIPE (141) when a later
# stage stopped reading early (`sort | head -3`); dasv itself never does: it treats a closed stdout as
# done and exits 0. `set -e` is left out because it would end the shell on that 141 before the check.
CHECK = r"""
set -o pipefail
check() {
    local rc=$1 stages=$2 k=0 s; shift 2
    for s in "$@"; do
        k=$((k + 1))
        if [ "$s" != 0 ] && { [ "${stages:$((k - 1)):1}" = d ] || [ "$s" != 141 ] || [ "$k" = $# ]; }; then
            echo "+++ stage $k of the pipeline exited $s" >&2; exit 1
        fi
    done
    if [ "$rc" != 0 ] && [ "$rc" != 141 ]; then echo "+++ exit $rc" >&2; exit "$rc"; fi
}
"""


def readme_script(commands: list[str]) -> str:
    """The commands as one bash script that stops at the first command that fails anywhere."""
    lines = [CHECK]
    for i, cmd in enumerate(commands):
        lines.append(f"echo '+++ {i}' >&2")
        lines.append(cmd)
        lines.append(f'check $? {pipeline_stages(cmd)} "${{PIPESTATUS[@]}}"')
    return "\n".join(lines) + "\n"


def test_pipeline_stages():
    assert pipeline_stages("dasv embed -o - | head -c 300") == "do"
    assert pipeline_stages("cat t.txt | dasv score --trials - | sort -k3 -g -r | head -3") == "odoo"
    assert pipeline_stages("awk '{print 1, $1}' a > t && awk '{print 0 | \"x\"}' b >> t") == "o"
    assert pipeline_stages("cd walk") == "o"


def walk_through_start(blocks: list[list[str]]) -> int:
    """Index of the block that starts the walk-through (the first that changes directory): the blocks
    before it (`dasv demo`) work in a directory of their own and need nothing the others make."""
    return next(i for i, block in enumerate(blocks) if any(shlex.split(cmd)[:1] == ["cd"] for cmd in block))


def test_walk_through_starts_with_its_setup():
    blocks = readme_blocks()
    start = walk_through_start(blocks)
    assert [cmd for block in blocks[:start] for cmd in block] == ["dasv demo"]
    assert blocks[start][0].startswith("dasv demo --setup-only -o walk")


@pytest.mark.slow
def test_readme_commands_run_in_order(tmp_path):
    blocks = readme_blocks()
    start = walk_through_start(blocks)
    # One shell per independent block and one for the walk-through, side by side on the machine.
    scripts = [*blocks[:start], [cmd for block in blocks[start:] for cmd in block]]
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["OMP_NUM_THREADS"] = "1"  # two shells side by side, one thread each: the 2 cores the suite is sized for
    running = []
    try:
        for n, commands in enumerate(scripts):
            script = tmp_path / f"readme-{n}.sh"
            script.write_text(readme_script(commands))
            with open(f"{script}.out", "w") as out, open(f"{script}.err", "w") as err:  # no pipe to fill
                running.append((commands, script, subprocess.Popen(["bash", str(script)], cwd=tmp_path, env=env,
                                                                   stdout=out, stderr=err)))
        for _, _, proc in running:
            proc.wait(timeout=1500)
    finally:
        for _, _, proc in running:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    stdout = ""
    for commands, script, proc in running:
        stdout += Path(f"{script}.out").read_text()
        err = Path(f"{script}.err").read_text()
        if proc.returncode != 0:
            done = re.findall(r"^\+\+\+ (\d+)$", err, flags=re.M)
            failed = commands[int(done[-1])] if done else "?"
            pytest.fail(f"README command failed (exit {proc.returncode}): {failed}\n{err[-3000:]}")
        assert len(re.findall(r"^\+\+\+ \d+$", err, flags=re.M)) == len(commands)
    walk = tmp_path / "walk"
    for produced in ("features/shard-00000.h5", "runs/small/best.pt", "runs/small/last.pt",
                     "runs/small/metrics.jsonl", "runs/ddp/last.pt", "runs/torchrun/last.pt",
                     "embeddings.h5", "scores.tsv", "det.png", "trials.txt"):
        assert (walk / produced).exists(), f"the README walk-through did not produce {produced}"
    assert (tmp_path / "dasv-demo" / "det.png").exists()
    # The --json summaries on stdout are JSON documents with the documented keys.
    summaries = []
    decoder = json.JSONDecoder()
    for match in re.finditer(r"^\{", stdout, flags=re.M):
        try:
            doc, _ = decoder.raw_decode(stdout, match.start())
        except ValueError:
            continue
        if isinstance(doc, dict):
            summaries.append(doc)
    assert any({"trials", "targets", "nontargets", "eer", "min_dcf_p01", "min_dcf_p05",
                "eer_threshold"} <= set(s) for s in summaries)
    steps = [json.loads(line)["step"] for line in (walk / "runs/small/metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 15, "the resumed run did not continue to --max-steps 15"
