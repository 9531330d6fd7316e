"""Commands that read files and print figures start without the heavy libraries they do not use:
torch (~2-6 s to load), scipy.signal, librosa, sklearn (only `calibrate` fits with it), and for
`inspect` of a clean store the augmentation machinery."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

HEAVY = ("torch", "scipy.signal", "librosa", "sklearn", "dasv_cli.augment.augmenter", "dasv_cli.features.augmented")


def imported_by(*args: str, cwd) -> list[str]:
    """The HEAVY modules loaded once `dasv ARGS` (run in a fresh interpreter) has finished."""
    code = ("import sys\nfrom dasv_cli.cli.app import run\ncode = run(sys.argv[1:])\n"
            f"print(code, sorted(m for m in {HEAVY!r} if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120, cwd=cwd)
    assert res.returncode == 0, res.stderr
    rc, _, loaded = res.stdout.strip().splitlines()[-1].partition(" ")
    assert rc == "0", res.stdout + res.stderr
    return eval(loaded)  # noqa: S307 - the list printed just above


@pytest.fixture(scope="module")
def files(tmp_path_factory, data):
    from dasv_cli.io.embeddings import Embeddings, write_embeddings

    d = tmp_path_factory.mktemp("startup")
    keys = sorted({k for line in (data / "trials.txt").read_text().splitlines() for k in line.split()[1:]})
    vectors = np.random.default_rng(0).normal(size=(len(keys), 8)).astype(np.float32)
    write_embeddings(d / "emb.h5", Embeddings(keys, vectors, {}))
    return d


@pytest.mark.parametrize("command", [
    ["inspect", "{data}/feats"],
    ["score", "--trials", "{data}/trials.txt", "-e", "{files}/emb.h5", "-o", "{files}/scores.tsv", "-q"],
    ["prepare", "trials", "{data}/labels.txt", "-n", "20", "-o", "{files}/prepared"],
    ["calibrate", "--help"],
    ["score", "--help"],
])
def test_start_up_imports_nothing_heavy(command, data, files) -> None:
    args = [a.format(data=data, files=files) for a in command]
    assert imported_by(*args, cwd=files) == []
