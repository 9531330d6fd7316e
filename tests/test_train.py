"""`dasv train`: configuration, training windows, the loop (loss falls, checkpoints, non-finite
batches, exact resume after SIGKILL) on the bundled demo speech with a tiny network (Ctrl-C: test_sweep)."""

from __future__ import annotations

import signal
from pathlib import Path

import numpy as np
import pytest
import torch

from dasv_cli.errors import DasvError, InputError, UsageError
from dasv_cli.train.config import TrainConfig, read_toml, resolve_config
from dasv_cli.train.config_text import format_config
from dasv_cli.train.windows import WindowBatchSampler, WindowDataset, epoch_plan, tile_to
from conftest import TINY_FLAGS, read_metrics, run_dasv, run_inprocess, signal_when, start_dasv, tiny_config

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------------------------------- config


def test_defaults_are_the_papers():
    cfg = TrainConfig()
    assert (cfg.front_end, cfg.kernel_size, cfg.heads, cfg.embedding_size, cfg.pooling) == ("VGG4L", 1024, 32, 400, "DoubleMHA")
    assert (cfg.mask_prob, cfg.scale, cfg.margin, cfg.optimizer) == (0.3, 30.0, 0.4, "Adam")
    assert (cfg.learning_rate, cfg.weight_decay, cfg.batch_size, cfg.grad_accumulation) == (1e-4, 1e-3, 64, 2)
    assert (cfg.window_seconds, cfg.window_frames, cfg.norm, cfg.early_stopping, cfg.lr_patience) == (3.5, 350, "cmn", 25, 15)
    assert (cfg.print_every, cfg.validate_every, cfg.workers) == (1000, 10000, 2)


def test_toml_then_flags_and_relative_paths(tmp_path):
    sub = tmp_path / "prep"
    sub.mkdir()
    (sub / "dasv.toml").write_text('train_labels = "lab.txt"\nfeatures = "/abs/feats"\nbatch-size = 32\n'
                                   'learning_rate = 1\nrandom_slicing = true\n')
    cfg, source = resolve_config({"batch_size": 16, "heads": None}, cwd=sub)
    assert source == sub / "dasv.toml"
    assert cfg.batch_size == 16  # the flag wins
    assert cfg.learning_rate == 1.0 and isinstance(cfg.learning_rate, float)
    assert cfg.random_slicing is True and cfg.heads == 32
    assert cfg.train_labels == str(sub / "lab.txt") and cfg.features == "/abs/feats"
    assert "batch_size" in format_config(cfg, source)
    # an explicit --config wins over ./dasv.toml; a [train] table is accepted
    other = tmp_path / "other.toml"
    other.write_text("[train]\nheads = 8\n")
    cfg2, source2 = resolve_config({}, config_file=other, cwd=sub)
    assert source2 == other and cfg2.heads == 8 and cfg2.batch_size == 64


def test_toml_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("bach_size = 3\n")
    with pytest.raises(InputError, match=r"bad.toml: unknown option 'bach_size' \(did you mean 'batch_size'\?\)"):
        read_toml(bad)
    bad.write_text('batch_size = "big"\n')
    with pytest.raises(InputError, match="bad.toml: 'batch_size' must be an integer"):
        read_toml(bad)
    bad.write_text("batch_size = \n")
    with pytest.raises(InputError, match="bad.toml: not valid TOML"):
        read_toml(bad)
    with pytest.raises(InputError, match="no such config file"):
        read_toml(tmp_path / "missing.toml")


def test_option_checks():
    with pytest.raises(UsageError, match="--precision 'fp16'"):
        TrainConfig(precision="fp16").check()
    with pytest.raises(UsageError, match="--gpus and --procs"):
        TrainConfig(gpus=2, procs=2).check()
    with pytest.raises(UsageError, match="--grad-accumulation must be at least 1"):
        TrainConfig(grad_accumulation=0).check()
    with pytest.raises(UsageError, match="--valid-clients and --valid-impostors go together"):
        TrainConfig(train_labels="a", features="b", out="c", valid_clients="x").check_paths()


# ---------------------------------------------------------------------------------------------- windows


def test_plan_is_deterministic_disjoint_across_ranks_and_equal_in_length():
    lengths = np.arange(50, 150)
    one = epoch_plan(lengths, 8, 100, seed=3, epoch=0)
    assert [b.index.tolist() for b in one] == [b.index.tolist() for b in epoch_plan(lengths, 8, 100, 3, 0)]
    assert [b.index.tolist() for b in one] != [b.index.tolist() for b in epoch_plan(lengths, 8, 100, 3, 1)]
    r0 = epoch_plan(lengths, 8, 100, 3, 0, rank=0, world=2)
    r1 = epoch_plan(lengths, 8, 100, 3, 0, rank=1, world=2)
    assert len(r0) == len(r1) == 100 // 16
    seen0 = set(np.concatenate([b.index for b in r0]).tolist())
    seen1 = set(np.concatenate([b.index for b in r1]).tolist())
    assert not seen0 & seen1
    for b in one:  # windows stay inside the utterance (or start at 0 when it is shorter)
        assert np.all(b.start >= 0)
        assert np.all((b.start + 100 <= lengths[b.index]) | (b.start == 0))
    sliced = epoch_plan(np.full(64, 400), 8, 350, 3, 0, random_slicing=True)
    assert all(200 <= b.frames < 350 for b in sliced) and len({b.frames for b in sliced}) > 1


def test_sampler_skip_resumes_the_same_stream():
    sampler = WindowBatchSampler(np.full(40, 120), 4, 100, seed=1)
    sampler.set_epoch(2)
    full = list(sampler)
    sampler.set_epoch(2, skip=3)
    assert list(sampler) == full[3:] and len(sampler) == len(full) - 3


def test_tile_repeats_short_utterances():
    x = np.arange(6, dtype=np.float32).reshape(3, 2)
    assert tile_to(x, 7).tolist() == [[0, 1], [2, 3], [4, 5], [0, 1], [2, 3], [4, 5], [0, 1]]


def test_dataset_reads_only_the_window_and_normalises(data, monkeypatch):
    from dasv_cli.io.store.reader import FeatureStore

    store = FeatureStore(data / "feats")
    key = sorted(store.keys())[0]
    n = store.length(key)
    ds = WindowDataset(str(data / "feats"), [key], [3], [n], norm="cmvn")
    calls = []
    real_window = FeatureStore.window
    monkeypatch.setattr(FeatureStore, "window", lambda self, k, s, f: calls.append((k, s, f)) or real_window(self, k, s, f))
    monkeypatch.setattr(FeatureStore, "__getitem__", lambda self, k: pytest.fail("read the whole utterance"))
    x, y = ds[(0, 10, 100)]
    assert calls == [(key, 10, 100)] and y == 3 and x.shape == (100, 80) and x.dtype == np.float32
    mean, std = store.stats(key)
    raw = real_window(store, key, 10, 100)
    assert np.allclose(x, (raw - mean) / std, atol=1e-4)
    monkeypatch.undo()
    long = ds[(0, 0, n + 50)][0]  # longer than the utterance: tiled
    assert long.shape == (n + 50, 80)
    assert np.allclose(long[n:n + 50], long[:50])
    store.close()


# ---------------------------------------------------------------------------------------------- the loop


def test_loss_falls_checkpoints_load_safely_and_are_complete(data, tmp_path):
    from dasv_cli.io.checkpoint import load_checkpoint
    from dasv_cli.train.loop import train

    out = tmp_path / "run"
    cfg = tiny_config(data, out, max_steps=16, valid_trials=str(data / "trials.txt"), validate_every=8)
    result = train(cfg)
    assert result.step == 16 and result.reason == "max_steps" and result.exit_code == 0
    rows = read_metrics(out)
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 8 and all(r["step"] > 0 and ("loss" in r or "eer" in r) for r in rows)
    assert np.mean(losses[-3:]) < 0.9 * np.mean(losses[:3]), losses
    eers = [r["eer"] for r in rows if "eer" in r]
    assert len(eers) == 2 and all(0 <= e <= 100 for e in eers)
    for name in ("last.pt", "best.pt"):
        raw = torch.load(out / name, weights_only=True)  # plain tensors and values only
        ckpt = load_checkpoint(out / name)
        assert set(ckpt["config"]) == {"model", "train", "features"}
        assert ckpt["config"]["train"]["kernel_size"] == 16 and ckpt["config"]["features"]["norm"] == "cmn"
        assert ckpt["config"]["features"]["recipe"]["n_mels"] == 80
        assert ckpt["speakers"] == sorted(f"spk{d.name}" for d in (REPO / "dasv_cli/data/demo").iterdir() if d.is_dir())
        assert raw["best_eer"] == min(eers)
    last = load_checkpoint(out / "last.pt")
    assert last["step"] == 16 and last["optimizer"]["state"]
    from dasv_cli.model import ModelConfig, SpeakerNet

    net = SpeakerNet(ModelConfig.from_dict(last["config"]["model"]))
    net.load_state_dict(last["model"])
    assert any(p.name.startswith("events.out.tfevents") for p in (out / "tb").iterdir())


class NaNOnce:
    """Mixin: the k-th batch's features become NaN (its forward would poison BatchNorm statistics)."""

    nan_batches: set = {3}

    def compute_logits(self, feats, labels):
        self.calls = getattr(self, "calls", 0) + 1
        if self.calls in self.nan_batches or "all" in self.nan_batches:
            feats = torch.full_like(feats, float("nan"))
        return super().compute_logits(feats, labels)


def test_nonfinite_batch_is_skipped_before_weights_or_batchnorm(data, tmp_path):
    from dasv_cli.train.loop import Trainer, train

    class T(NaNOnce, Trainer):
        nan_batches = {3}

    out = tmp_path / "nan"
    result = train(tiny_config(data, out, max_steps=4, print_every=1), trainer_cls=T)
    assert result.skipped == 1 and result.step == 4
    ckpt = torch.load(out / "last.pt", weights_only=True)
    for name, t in ckpt["model"].items():
        assert torch.isfinite(t.float()).all(), f"{name} was poisoned"
    assert "bn2.running_mean" in ckpt["model"]
    rows = read_metrics(out)
    assert all("loss" in r for r in rows) and rows[-1]["skipped"] == 1


def test_run_that_keeps_diverging_stops_with_a_clear_error(data, tmp_path):
    from dasv_cli.train.loop import Trainer, train
    from dasv_cli.train.update import DivergedError

    class T(NaNOnce, Trainer):
        nan_batches = {"all"}

    with pytest.raises(DivergedError, match="training diverged: 3 batches in a row gave a non-finite loss"):
        train(tiny_config(data, tmp_path / "div", max_steps=4, max_nonfinite=3), trainer_cls=T)
    assert (tmp_path / "div" / "last.pt").exists()


def test_resume_after_sigkill_equals_uninterrupted_run(data, tmp_path):
    """A real process killed with SIGKILL mid-run and resumed ends with the same weights (and with
    loader workers in one run and none in the other: the examples do not depend on the workers)."""
    common = ["--train-labels", str(data / "labels.txt"), "--features", str(data / "feats"), *TINY_FLAGS,
              "--max-steps", "12", "--save-every", "3", "-q", "--valid-trials", str(data / "trials.txt"),
              "--validate-every", "5"]
    ref = run_inprocess("train", *common, "--workers", "0", "-o", str(tmp_path / "ref"))  # the same run, no start-up
    assert ref.code == 0, ref.stderr
    out = tmp_path / "killed"
    killed = signal_when("train", *common, "--workers", "2", "-o", out, sig=signal.SIGKILL,
                         ready=lambda _: (out / "last.pt").exists())
    assert killed.code == -signal.SIGKILL
    killed_at = torch.load(out / "last.pt", weights_only=True)["step"]
    assert 0 < killed_at < 12
    res = run_dasv("train", "-o", str(out), "--resume", "-q")
    assert res.code == 0, res.stderr
    a = torch.load(tmp_path / "ref" / "last.pt", weights_only=True)
    b = torch.load(out / "last.pt", weights_only=True)
    assert a["step"] == b["step"] == 12 and a["epoch"] == b["epoch"]
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert all(torch.equal(sa[k]["exp_avg"], sb[k]["exp_avg"]) for k in sa)
    assert a["best_eer"] == b["best_eer"]
    steps = [r["step"] for r in read_metrics(out) if "loss" in r]
    assert steps == sorted(set(steps)), "metrics.jsonl repeats steps after the resume"


def test_a_second_run_on_a_running_runs_directory_is_refused_and_a_requeue_resumes(data, tmp_path):
    """Real processes: while a run trains (loader workers and all), a second `dasv train` on its
    directory (here a `--resume`, which used to start from the running run's last.pt and write the same
    files) is refused with one line naming the directory and the holder; once the first is SIGKILLed
    (a SLURM preemption), its requeue with --resume takes the directory at once."""
    import subprocess
    import time

    out = tmp_path / "run"
    common = ["--train-labels", str(data / "labels.txt"), "--features", str(data / "feats"), *TINY_FLAGS]
    with open(tmp_path / "first.err", "wb") as err:
        first = start_dasv("train", *common, "--max-steps", "100000", "--save-every", "1", "--workers", "2",
                           "-o", out, stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 120
        while not (out / "last.pt").exists():
            assert first.poll() is None, (tmp_path / "first.err").read_text()
            assert time.monotonic() < deadline, "the first run never saved a checkpoint"
            time.sleep(0.05)
        step = torch.load(out / "last.pt", weights_only=True)["step"]
        second = run_dasv("train", "-o", out, "--resume", "--max-steps", str(step + 3), "-q")
        assert second.code == 1, second.stderr
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and str(out) in lines[0] and f"pid {first.pid}" in lines[0], second.stderr
        assert first.poll() is None, "the refused run disturbed the one that holds the directory"
    finally:
        first.kill()
        first.wait()
    step = torch.load(out / "last.pt", weights_only=True)["step"]
    again = run_dasv("train", "-o", out, "--resume", "--max-steps", str(step + 2), "-q")
    assert again.code == 0, again.stderr
    assert torch.load(out / "last.pt", weights_only=True)["step"] == step + 2


def test_dry_run_prints_config_and_model(data, tmp_path):
    res = run_inprocess("train", "--train-labels", str(data / "labels.txt"), "--features", str(data / "feats"),
                        *TINY_FLAGS, "-o", str(tmp_path / "x"), "--dry-run")
    assert res.code == 0, res.stderr
    assert "kernel_size = 16\n" in res.stdout and "kernel_size" not in res.stderr
    assert "total" in res.stderr and "parameters" in res.stderr
    assert "8 speakers" in res.stderr and "effective batch: 8 x 1 process(es) x 2 accumulation = 16" in res.stderr
    assert not (tmp_path / "x").exists()


def test_dry_run_toml_reads_back_unchanged(data, tmp_path):
    """dry-run > x.toml; dry-run --config x.toml prints the same TOML (escaped paths, floats, the
    modern recipe's resolved values), from another directory too: the paths in it are absolute."""
    odd = tmp_path / 'run "quoted" \\ back\tslash ü'
    res = run_inprocess("train", "--train-labels", str(data / "labels.txt"), "--features", str(data / "feats"),
                        *TINY_FLAGS, "--recipe", "modern", "--max-steps", "40", "--learning-rate", "1e-05",
                        "--seed", "7", "-o", str(odd), "--dry-run", cwd=tmp_path)
    assert res.code == 0, res.stderr
    (tmp_path / "x.toml").write_text(res.stdout)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    again = run_inprocess("train", "--config", str(tmp_path / "x.toml"), "--dry-run", cwd=elsewhere)
    assert again.code == 0, again.stderr
    assert again.stdout == res.stdout
    cfg = read_toml(tmp_path / "x.toml")
    assert cfg["out"] == str(odd) and cfg["learning_rate"] == 1e-05 and cfg["seed"] == 7
    assert cfg["recipe"] == "modern" and cfg["margin_type"] == "aam" and "valid_trials" not in cfg


def test_dry_run_without_inputs_fails_as_a_run_would(tmp_path):
    res = run_inprocess("train", "--dry-run", cwd=tmp_path)
    assert res.code == 2 and "missing --train-labels, --features, -o/--out" in res.stderr and res.stdout == ""


def test_model_prints_its_network_as_toml_that_train_reads(data, tmp_path):
    res = run_inprocess("model", "--front-end", "VGG3L", "--kernel-size", "16", "--heads", "4",
                        "--embedding-size", "16")
    assert res.code == 0, res.stderr
    assert "total" in res.stderr and "total" not in res.stdout
    (tmp_path / "net.toml").write_text(res.stdout)
    run = run_inprocess("train", "--config", str(tmp_path / "net.toml"), "--train-labels", str(data / "labels.txt"),
                        "--features", str(data / "feats"), "-o", str(tmp_path / "r"), "--dry-run")
    assert run.code == 0, run.stderr
    for line in ('front_end = "VGG3L"', "kernel_size = 16", "heads = 4", "embedding_size = 16"):
        assert line + "\n" in run.stdout, line


def test_toml_writer_round_trips_through_tomllib():
    import tomllib

    from dasv_cli.io.tomlwrite import dumps

    values = {"s": 'a "b" \\ c\n\td\x01\x7f é', "t": True, "f": False, "i": -3, "big": 10**18, "x": 1e-05,
              "y": 2.0, "z": 1e300, "n": float("inf"), "m": -float("inf"), "key with space": "v", "none": None}
    back = tomllib.loads(dumps(values, ["a comment", ""]))
    assert back == {k: v for k, v in values.items() if v is not None}
    assert isinstance(back["y"], float) and isinstance(back["i"], int)
    nan = tomllib.loads(dumps({"q": float("nan")}))["q"]
    assert nan != nan


def test_help_shows_an_example():
    res = run_inprocess("train", "--help", env={"COLUMNS": "200"})  # wide: a default is not wrapped mid-way
    assert res.code == 0
    for flag in ("--front-end", "--kernel-size", "--heads", "--embedding-size", "--pooling", "--mask-prob",
                 "--optimizer", "--learning-rate", "--weight-decay", "--batch-size", "--grad-accumulation",
                 "--window-seconds", "--max-steps", "--validate-every", "--seed", "--gpus", "--procs", "--resume"):
        assert flag in res.stdout, flag
    assert "dasv train --train-labels" in res.stdout and "[default: 400]" in res.stdout


def test_prepared_directory_trains_with_no_paths_and_resume_extends(data, tmp_path, monkeypatch, capsys):
    """`dasv train` alone in a directory with a dasv.toml; flags override it; --resume continues the
    stored run (more steps allowed, a different network refused)."""
    from dasv_cli.cli.app import run

    monkeypatch.chdir(tmp_path)
    (tmp_path / "dasv.toml").write_text(
        f'train_labels = "{data / "labels.txt"}"\nfeatures = "{data / "feats"}"\nout = "run"\n'
        'kernel_size = 16\nheads = 4\nembedding_size = 16\nwindow_seconds = 1.0\nbatch_size = 8\n'
        'workers = 0\nmax_steps = 50\nprint_every = 1\n')
    assert run(["train", "--max-steps", "2", "-q"]) == 0, capsys.readouterr().err
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert ckpt["step"] == 2 and ckpt["config"]["train"]["max_steps"] == 2
    assert ckpt["config"]["train"]["kernel_size"] == 16
    assert run(["train", "--resume", "--max-steps", "3", "-q"]) == 0, capsys.readouterr().err
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["step"] == 3
    capsys.readouterr()
    assert run(["train", "--resume", "--heads", "8", "-q"]) == 2
    assert "--resume keeps the network of run/last.pt; cannot change --heads" in capsys.readouterr().err


def test_lr_halving_and_early_stopping_follow_validations_without_gain(data, tmp_path, monkeypatch):
    """EER improves once, then never: the LR halves every `lr_patience` validations without gain and
    the run stops once that count exceeds `early_stopping` (the original's `stopping > 25`)."""
    from types import SimpleNamespace

    import dasv_cli.eval.validation as validation
    from dasv_cli.train.loop import train

    eers = iter([10.0, 20.0, 20.0, 5.0, 30.0, 30.0, 30.0, 30.0, 30.0, 30.0])
    monkeypatch.setattr(validation, "evaluate_trials",
                        lambda *a, **k: SimpleNamespace(eer=next(eers), min_dcf_p01=1.0, min_dcf_p05=1.0))
    out = tmp_path / "es"
    result = train(tiny_config(data, out, valid_trials=str(data / "trials.txt"), validate_every=1, lr_patience=2,
                            early_stopping=3, max_steps=50))
    assert result.reason == "early_stopping" and result.step == 8 and result.best_eer == 5.0
    rows = [r for r in read_metrics(out) if "eer" in r]
    assert [r["eer"] for r in rows] == [10.0, 20.0, 20.0, 5.0, 30.0, 30.0, 30.0, 30.0]
    assert [r["lr"] for r in rows] == [0.01, 0.01, 0.005, 0.005, 0.005, 0.0025, 0.0025, 0.00125]
    best = torch.load(out / "best.pt", weights_only=True)
    assert best["step"] == 4 and best["best_eer"] == 5.0
