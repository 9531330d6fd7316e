"""Shared fixtures: the bundled demo speech, ../shared/data when present, and a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEMO_DIR = REPO / "dasv_cli" / "data" / "demo"


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


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str


def run_dasv(*args: str, input: str | bytes | None = None, cwd: Path | str | None = None,
             env: dict[str, str] | None = None, timeout: float = 600) -> CliResult:
    """Run `python -m dasv_cli ARGS` as a user would (a real process: exit code, stdout, stderr)."""
    full_env = dict(os.environ)
    full_env.setdefault("OMP_NUM_THREADS", "2")
    if env:
        full_env.update(env)
    data = input.encode() if isinstance(input, str) else input
    proc = subprocess.run(
        [sys.executable, "-m", "dasv_cli", *map(str, args)],
        input=data, capture_output=True, cwd=cwd, env=full_env, timeout=timeout,
    )
    return CliResult(proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace"))


@pytest.fixture
def dasv():
    """`dasv(*args, input=..., cwd=...)` -> CliResult (code, stdout, stderr)."""
    return run_dasv
