"""The training decisions as pure functions: what a validation means (improve / halve / stop) and
which options a resumed run takes from its checkpoint and which from the command line."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from dasv_cli.errors import InputError, UsageError
from dasv_cli.train.config import MODEL_FIELDS, TrainConfig
from dasv_cli.train.plateau import Plateau, exhausted, judge
from dasv_cli.train.resume import merge_resumed, resumed_config

# ---------------------------------------------------------------------------------------------- plateau


def test_a_better_eer_improves_and_resets_the_count():
    assert judge(4.0, 5.0, 7, lr_patience=15) == Plateau(
        best_eer=4.0, stopping=0, improved=True, halve=False)
    assert judge(9.0, None, 0, 15) == Plateau(best_eer=9.0, stopping=0, improved=True, halve=False)


def test_an_equal_worse_or_non_finite_eer_counts_as_no_gain():
    for eer in (5.0, 6.0, math.nan, math.inf):
        verdict = judge(eer, 5.0, 2, 15)
        assert (verdict.best_eer, verdict.stopping, verdict.improved, verdict.halve) == (5.0, 3, False, False)
    first = judge(math.nan, None, 0, 15)  # no best yet, and nothing to keep
    assert (first.best_eer, first.stopping, first.improved) == (None, 1, False)


def test_the_lr_halves_at_every_multiple_of_the_patience():
    best, stopping, halved_at = 1.0, 0, []
    for n in range(1, 46):
        verdict = judge(2.0, best, stopping, lr_patience=15)
        best, stopping = verdict.best_eer, verdict.stopping
        assert stopping == n
        if verdict.halve:
            halved_at.append(n)
    assert halved_at == [15, 30, 45]
    assert not judge(2.0, 1.0, 14, lr_patience=0).halve  # 0: never
    assert not judge(0.5, 1.0, 14, lr_patience=15).halve  # an improvement never halves


def test_the_run_stops_once_the_count_exceeds_early_stopping():
    assert [exhausted(n, 25) for n in (0, 25, 26, 40)] == [False, False, True, True]
    assert not exhausted(10**6, -1)  # -1: never
    assert exhausted(1, 0)  # 0: stop at the first validation without gain


def test_the_sequence_of_the_loop_test_replayed_without_training():
    """test_train's EER sequence (lr_patience 2, early_stopping 3) as pure decisions."""
    eers = [10.0, 20.0, 20.0, 5.0, 30.0, 30.0, 30.0, 30.0]
    lr, best, stopping, lrs = 0.01, None, 0, []
    for eer in eers:
        verdict = judge(eer, best, stopping, lr_patience=2)
        best, stopping = verdict.best_eer, verdict.stopping
        lr *= 0.5 if verdict.halve else 1.0
        lrs.append(lr)
    assert lrs == [0.01, 0.01, 0.005, 0.005, 0.005, 0.0025, 0.0025, 0.00125]
    assert best == 5.0 and stopping == 4 and exhausted(stopping, 3)


# ---------------------------------------------------------------------------------------------- resume


def stored(**over) -> dict:
    values = TrainConfig(train_labels="/data/labels.txt", features="/data/feats", out="/old/run", kernel_size=16,
                         heads=4, embedding_size=16, max_steps=100, learning_rate=0.01).to_dict()
    values.update(over)
    return values


def test_typed_flags_override_the_stored_options_and_the_rest_is_kept():
    cfg = merge_resumed(stored(), {"max_steps": 300, "validate_every": 50, "resume": True}, "runs/x", "runs/x/last.pt")
    assert (cfg.max_steps, cfg.validate_every) == (300, 50)
    assert (cfg.learning_rate, cfg.kernel_size, cfg.heads, cfg.train_labels) == (0.01, 16, 4, "/data/labels.txt")
    assert cfg.resume is True and cfg.out == "runs/x"  # the directory given now, not the stored one


def test_the_stored_network_cannot_change_but_may_be_restated():
    with pytest.raises(UsageError, match=r"^--resume keeps the network of run/last\.pt; cannot change "
                                         r"--kernel-size, --heads$"):
        merge_resumed(stored(), {"heads": 8, "kernel_size": 32, "max_steps": 5}, "run", "run/last.pt")
    for name in MODEL_FIELDS:  # every network option is guarded, and only with a different value
        value = stored()[name]
        assert getattr(merge_resumed(stored(), {name: value}, "run", "run/last.pt"), name) == value
        other = (not value if isinstance(value, bool) else value + "x" if isinstance(value, str)
                 else value * 2 + 1)
        with pytest.raises(UsageError, match=f"cannot change --{name.replace('_', '-')}$"):
            merge_resumed(stored(), {name: other}, "run", "run/last.pt")


def test_the_merged_options_are_checked_and_unknown_stored_options_refused():
    with pytest.raises(UsageError, match="--batch-size must be at least 1"):
        merge_resumed(stored(), {"batch_size": 0}, "run", "run/last.pt")
    with pytest.raises(InputError, match=r"run/last\.pt: unknown training options dropout"):
        merge_resumed(stored(dropout=0.1), {}, "run", "run/last.pt")


def test_resuming_needs_a_run_directory_with_a_checkpoint_holding_its_options(tmp_path: Path):
    from dasv_cli.io.checkpoint import save_checkpoint

    with pytest.raises(UsageError, match="--resume needs -o/--out"):
        resumed_config(TrainConfig(resume=True), {"resume": True})
    run = tmp_path / "run"
    with pytest.raises(InputError, match=f"{run / 'last.pt'}: no checkpoint to resume from"):
        resumed_config(TrainConfig(out=str(run), resume=True), {})
    run.mkdir()
    save_checkpoint(run / "last.pt", {"config": {"model": {}}, "model": {}})
    with pytest.raises(InputError, match="holds no training options to resume with"):
        resumed_config(TrainConfig(out=str(run), resume=True), {})
    save_checkpoint(run / "last.pt", {"config": {"train": stored()}, "model": {}})
    cfg = resumed_config(TrainConfig(out=str(run), resume=True, max_steps=7), {"max_steps": 900})
    assert cfg.max_steps == 900 and cfg.kernel_size == 16 and cfg.out == str(run) and cfg.resume
