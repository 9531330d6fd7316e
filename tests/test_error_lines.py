"""Errors that name a trial key also name the file and line that holds it."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import run_inprocess
from dasv_cli.errors import InputError
from dasv_cli.eval.trials import trial_indices
from dasv_cli.io.lists import read_trial_pair, read_trials


def test_a_trial_key_without_an_embedding_is_named_with_its_file_and_line(tmp_path) -> None:
    (tmp_path / "clients.lst").write_text("a b\n# a comment\nc d\n")
    (tmp_path / "impostors.lst").write_text("a c\n\nb ghost\nghost a\n")
    trials = read_trial_pair(tmp_path / "clients.lst", tmp_path / "impostors.lst")
    with pytest.raises(InputError, match=rf"^{tmp_path / 'impostors.lst'}:3: 1 of 5 trial keys are not in T: ghost"):
        trial_indices(trials, ["a", "b", "c", "d"], "T")
    (tmp_path / "t.txt").write_text("1 a b\n0 a c\n0 c nobody\n")
    with pytest.raises(InputError, match=rf"^{tmp_path / 't.txt'}:3: 1 of 4 trial keys"):
        trial_indices(read_trials(tmp_path / "t.txt"), ["a", "b", "c"], "T")


def test_score_names_the_trials_line(tmp_path) -> None:
    from dasv_cli.io.embeddings import Embeddings, write_embeddings

    write_embeddings(tmp_path / "emb.h5", Embeddings(["a", "b", "c"], np.eye(3, dtype=np.float32), {}))
    (tmp_path / "trials.txt").write_text("1 a b\n0 a c\n\n1 b missing/key\n")
    r = run_inprocess("score", "--trials", tmp_path / "trials.txt", "-e", tmp_path / "emb.h5")
    assert r.code == 1 and f"dasv: error: {tmp_path / 'trials.txt'}:4: 1 of 4 trial keys" in r.stderr, r.stderr
    assert "missing/key" in r.stderr
