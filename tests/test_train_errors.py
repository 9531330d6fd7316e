"""`dasv train` refuses bad input before any training, each time with one line naming the file."""

from __future__ import annotations

from pathlib import Path

from dasv_cli.cli.app import run
from conftest import TINY_FLAGS, run_dasv  # tests/ is on sys.path


def fail(capsys, *args: str, code: int = 1) -> str:
    """Run `dasv train ARGS` in-process; assert the exit code and a single error line; return it."""
    rc = run(["train", *args, "-q"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == code, err
    assert len(lines) == 1 and lines[0].startswith("dasv: error: "), err
    return lines[0]


def base(data: Path, out: Path, labels: Path | None = None) -> list[str]:
    return ["--train-labels", str(labels or data / "labels.txt"), "--features", str(data / "feats"),
            *TINY_FLAGS, "--max-steps", "1", "-o", str(out)]


def test_keys_missing_from_the_store(data, tmp_path, capsys):
    labels = tmp_path / "labels.txt"
    labels.write_text((data / "labels.txt").read_text() + "ghost/a 1688\nghost/b 1688\nghost/c 2033\nghost/d 2033\n")
    line = fail(capsys, *base(data, tmp_path / "o", labels))
    assert f"{labels}: 4 of 44 keys are not in the feature store" in line
    assert "(first: ghost/a, ghost/b, ghost/c, ...)" in line
    assert not (tmp_path / "o").exists()


def test_labels_not_0_to_n_minus_1(data, tmp_path, capsys):
    keys = [line.split()[0] for line in (data / "labels.txt").read_text().splitlines()]
    labels = tmp_path / "labels.txt"
    labels.write_text("".join(f"{k} {2 * (i % 3)} None\n" for i, k in enumerate(keys)))  # 0, 2, 4: gaps
    line = fail(capsys, *base(data, tmp_path / "o", labels))
    assert str(labels) in line and "labels must be 0..N-1" in line
    labels.write_text("".join(f"{k} {i % 3 - 1}\n" for i, k in enumerate(keys)))
    line = fail(capsys, *base(data, tmp_path / "o", labels))
    assert f"{labels}:1: label -1 is negative" in line


def test_empty_lists(data, tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n\n")
    assert f"{empty}: the label file is empty" in fail(capsys, *base(data, tmp_path / "o", empty))
    line = fail(capsys, *base(data, tmp_path / "o"), "--valid-trials", str(empty))
    assert f"{empty}: the trial list is empty" in line
    clients = tmp_path / "clients.txt"
    clients.write_text("1688/1688-142285-0000 1688/1688-142285-0001\n")
    line = fail(capsys, *base(data, tmp_path / "o"), "--valid-clients", str(clients), "--valid-impostors", str(empty))
    assert f"{empty}: the impostor (different-speaker) trial list is empty" in line


def test_trials_naming_unknown_keys(data, tmp_path, capsys):
    trials = tmp_path / "trials.txt"
    trials.write_text("1 1688/1688-142285-0000 nobody/x\n0 1688/1688-142285-0000 nobody/y\n")
    line = fail(capsys, *base(data, tmp_path / "o"), "--valid-trials", str(trials))
    assert f"{trials}: 2 of 3 trial keys are not in the feature store {data / 'feats'} (first: nobody/x, nobody/y)" in line
    other = tmp_path / "elsewhere"
    line = fail(capsys, *base(data, tmp_path / "o"), "--valid-trials", str(data / "trials.txt"),
                "--valid-features", str(other))
    assert f"{other}: no such feature store" in line


def test_config_file_errors(data, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dasv.toml").write_text('train_labels = "x"\nlearning_rat = 0.1\n')
    line = fail(capsys, "-o", "out")
    assert line == "dasv: error: dasv.toml: unknown option 'learning_rat' (did you mean 'learning_rate'?)"
    (tmp_path / "dasv.toml").unlink()
    line = fail(capsys, "-o", "out", code=2)
    assert "missing --train-labels, --features" in line


def test_output_and_resume_guards(data, tmp_path, capsys):
    out = tmp_path / "o"
    assert f"{out / 'last.pt'}: no checkpoint to resume from" in fail(capsys, *base(data, out), "--resume")
    out.mkdir()
    (out / "last.pt").write_bytes(b"junk")
    line = fail(capsys, *base(data, out), code=2)
    assert f"{out} already holds a training run (last.pt); continue it with --resume" in line
    assert "not a readable checkpoint" in fail(capsys, *base(data, out), "--resume")


def test_impossible_options(data, tmp_path, capsys):
    line = fail(capsys, *base(data, tmp_path / "o"), "--window-seconds", "0.1", code=2)
    assert "10 frames is shorter than the minimum of 16 frames of VGG4L with DoubleMHA pooling" in line
    # statistics pooling's unbiased std needs two frame vectors after the 8x time stride: 17 frames
    line = fail(capsys, *base(data, tmp_path / "o"), "--window-seconds", "0.16", "--pooling", "Statistical", code=2)
    assert "16 frames is shorter than the minimum of 17 frames of VGG4L with Statistical pooling" in line
    line = fail(capsys, *base(data, tmp_path / "o"), "--batch-size", "64", code=2)
    assert "40 training utterances cannot fill one batch of 64 x 1 process(es)" in line
    line = fail(capsys, *base(data, tmp_path / "o"), "--heads", "7", code=2)
    assert "model options:" in line and "heads" in line
    line = fail(capsys, *base(data, tmp_path / "o"), "--precision", "fp16", code=2)
    assert "--precision 'fp16': choose one of fp32, bf16" in line
    import torch

    if not torch.cuda.is_available():
        assert "--gpus 2: only 0 CUDA device(s) visible" in fail(capsys, *base(data, tmp_path / "o"), "--gpus", "2", code=2)


def test_a_real_process_prints_one_line_and_exits_1(data, tmp_path):
    res = run_dasv("train", *base(data, tmp_path / "o"), "--features", tmp_path / "nowhere", timeout=120)
    assert res.code == 1
    assert res.stderr.strip() == f"dasv: error: {tmp_path / 'nowhere'}: no such feature store (make one with `dasv features`)"
