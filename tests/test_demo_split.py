"""The demo chooses its checkpoint on one set of trials and reports the EER on another: disjoint
recordings of the held-out speakers."""

from __future__ import annotations

from dasv_cli.demo.layout import HELD_OUT_SPEAKERS, TRAIN_SPEAKERS, prepare
from dasv_cli.demo.run import demo_steps
from dasv_cli.train.config import read_toml


def _keys(*files) -> set[str]:
    return {k for f in files for line in f.read_text().splitlines() for k in line.split()}


def test_the_checkpoint_is_chosen_on_other_trials_than_the_reported_ones(tmp_path) -> None:
    layout = prepare(tmp_path / "demo")
    d = layout.workdir
    toml = read_toml(d / layout.config)
    chosen_on = (d / layout.valid_clients, d / layout.valid_impostors)
    assert {toml["valid_clients"], toml["valid_impostors"]} == {str(f) for f in chosen_on}
    steps = {s.name: s.argv for s in demo_steps(layout, "cpu", resume=False)}
    assert steps["score"][1:3] == [layout.clients, layout.impostors]
    reported = _keys(d / layout.clients, d / layout.impostors)
    selection = _keys(*chosen_on)
    assert reported and selection and not reported & selection
    for keys in (reported, selection):
        assert {k.split("/")[0] for k in keys} == set(HELD_OUT_SPEAKERS)
        assert not {k.split("/")[0] for k in keys} & set(TRAIN_SPEAKERS)
    both = (d / layout.clients).read_text().splitlines() + (d / layout.impostors).read_text().splitlines()
    assert len(both) == len(set(both)) == 36  # every pair of the 9 reporting recordings once


def test_the_summary_table_says_where_the_checkpoint_was_chosen(capsys) -> None:
    from dasv_cli import progress
    from dasv_cli.cli.demo import _print_summary

    progress._console = None  # a console on this test's captured stderr
    _print_summary({"utterances": 40, "train_speakers": 5, "trial_speakers": 3, "trials": 36, "targets": 9,
                    "nontargets": 27, "max_steps": 300, "best_step": 250, "selection_trials": 15, "eer": 5.0,
                    "min_dcf_p01": 0.5, "min_dcf_p05": 0.4, "seconds": {"train": 1.0}, "outputs": {}})
    err = " ".join(capsys.readouterr().err.replace("│", " ").split())
    assert "chosen on 15 other trials" in err and "not on those reported here" in err and "optimistic" not in err
