"""A careless user's sweep over every subcommand: each mistake must end as one `dasv: error:` line that
names the problem, the right exit code, no traceback, and nothing already done lost.

Mistakes that need no process of their own run through the CLI's entry (`dasv_cli.cli.app.run`) in
this process (`run_inprocess`: same exit code, stdout and stderr, no interpreter start-up); a full
disk (a file-size limit) and Ctrl-C (a signal) run in a real `python -m dasv_cli` process. One small
world (12 demo utterances, a tiny trained checkpoint, an embedding table) is built once for the module.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import TINY_FLAGS, CliResult, run_dasv, run_inprocess, signal_when

TINY = [*TINY_FLAGS, "-q", "--workers", "0"]


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def one_error(res: CliResult, code: int, *names: str) -> str:
    """Assert the failure contract and return the error line."""
    assert "Traceback" not in res.stderr, res.stderr
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("dasv: error:")]
    assert len(errors) == 1, res.stderr
    assert res.code == code, (res.code, res.stderr)
    for name in names:
        assert name in errors[0], (name, errors[0])
    return errors[0]


def no_temporaries(directory: Path) -> None:
    left = [p.name for p in Path(directory).rglob("*.tmp")]
    assert not left, f"temporary files left behind: {left}"


@pytest.fixture(scope="module")
def world(tmp_path_factory, demo_dir: Path) -> Path:
    """feats/ (12 utterances), run/last.pt (tiny, 2 steps), emb.h5, lists, broken files; cwd for every case."""
    root = tmp_path_factory.mktemp("sweep")
    rel = sorted(str(p.relative_to(demo_dir)) for p in demo_dir.glob("*/*.flac"))
    rel = [r for r in rel if r.rsplit("-", 1)[1] in ("0000.flac", "0001.flac", "0002.flac")][:12]
    (root / "audio.lst").write_text("".join(r + "\n" for r in rel))
    keys = [r[: -len(".flac")] for r in rel]
    (root / "labels.txt").write_text("".join(f"{k} s{k.split('/')[0]}\n" for k in keys))
    lines = []
    for i in range(len(keys)):
        for j in range(i + 1, len(keys)):
            same = keys[i].split("/")[0] == keys[j].split("/")[0]
            lines.append(f"{int(same)} {keys[i]} {keys[j]}\n")
    (root / "trials.txt").write_text("".join(lines))
    r = run_inprocess("features", "audio.lst", "-a", demo_dir, "-o", "feats", "-q", cwd=root)
    assert r.code == 0, r.stderr
    r = run_inprocess("train", "--train-labels", "labels.txt", "--features", "feats", *TINY, "--max-steps", "2",
                      "-o", "run", cwd=root)
    assert r.code == 0, r.stderr
    r = run_inprocess("embed", "-m", "run/last.pt", "-f", "feats", "-o", "emb.h5", "-q", cwd=root)
    assert r.code == 0, r.stderr
    (root / "adir").mkdir()
    (root / "empty.lst").write_bytes(b"")
    (root / "bom-only.lst").write_bytes(b"\xef\xbb\xbf# nothing but a comment\r\n\r\n")
    (root / "text.pt").write_text("this is not a checkpoint\n")
    (root / "truncated.pt").write_bytes((root / "run" / "last.pt").read_bytes()[:3000])
    (root / "emptyfile.pt").write_bytes(b"")
    import torch

    torch.save(torch.zeros(3), root / "tensor.pt")
    # A checkpoint whose config says kernel 32 over weights of kernel 16 (a config/shape mismatch).
    from dasv_cli.io.checkpoint import load_checkpoint, save_checkpoint

    ckpt = load_checkpoint(root / "run" / "last.pt")
    ckpt["config"]["model"]["kernel_size"] = 32
    save_checkpoint(root / "other-config.pt", ckpt)
    # A store made with another recipe (hop and fmax rewritten consistently: JSON and attributes),
    # and a store whose attributes were edited so that they disagree with its recipe.
    import h5py

    shutil.copytree(root / "feats", root / "feats-other-recipe")
    shutil.copytree(root / "feats", root / "feats-edited")
    for shard in (root / "feats-other-recipe").glob("shard-*.h5"):
        with h5py.File(shard, "r+") as f:
            recipe = json.loads(f.attrs["recipe"])
            recipe.update(hop_length=200, fmax=7600.0)
            f.attrs["recipe"] = json.dumps(recipe, sort_keys=True)
            f.attrs["hop_length"], f.attrs["fmax"] = 200, 7600.0
    for shard in (root / "feats-edited").glob("shard-*.h5"):
        with h5py.File(shard, "r+") as f:
            f.attrs["hop_length"] = 200
    return root


# ------------------------------------------------------------------------------------- wrong paths

MISSING = [
    (["features", "nope.lst", "-o", "f"], "nope.lst"),
    (["inspect", "nope"], "nope"),
    (["train", "--train-labels", "nope.txt", "--features", "feats", *TINY, "-o", "r"], "nope.txt"),
    (["train", "--train-labels", "labels.txt", "--features", "nope", *TINY, "-o", "r"], "nope"),
    (["validate", "-m", "nope.pt", "-f", "feats", "-t", "trials.txt"], "nope.pt"),
    (["embed", "-m", "run/last.pt", "-f", "nope", "-o", "e.h5"], "nope"),
    (["score", "-t", "nope.txt", "-e", "emb.h5"], "nope.txt"),
    (["score", "-t", "trials.txt", "-e", "nope.h5"], "nope.h5"),
    (["convert", "nope.chkpt", "-o", "x.pt"], "nope.chkpt"),
    (["model", "--from", "nope.pt"], "nope.pt"),
]


@pytest.mark.parametrize("args,name", MISSING, ids=[f"{a[0]}-{n}" for a, n in MISSING])
def test_wrong_path(world, args, name):
    one_error(run_inprocess(*args, cwd=world), 1, name)


# ------------------------------------------------- a directory for a file, a file for a directory

DIR_FOR_FILE = [
    ["features", "adir", "-o", "f"],
    ["train", "--train-labels", "adir", "--features", "feats", *TINY, "-o", "r"],
    ["validate", "-m", "run/last.pt", "-f", "feats", "-t", "adir"],
    ["embed", "-m", "run/last.pt", "-f", "feats", "-o", "adir"],
    ["score", "-t", "trials.txt", "-e", "adir"],
    ["score", "-t", "trials.txt", "-e", "emb.h5", "-o", "adir"],
    ["convert", "adir", "-o", "x.pt"],
    ["model", "--from", "adir"],
]
FILE_FOR_DIR = [
    ["features", "audio.lst", "-o", "labels.txt"],
    ["inspect", "audio.lst"],
    ["train", "--train-labels", "labels.txt", "--features", "audio.lst", *TINY, "-o", "r"],
    ["train", "--train-labels", "labels.txt", "--features", "feats", *TINY, "-o", "labels.txt"],
    ["validate", "-m", "run/last.pt", "-f", "audio.lst", "-t", "trials.txt"],
    ["embed", "-m", "run/last.pt", "-f", "feats", "-o", "audio.lst/emb.h5"],
]


@pytest.mark.parametrize("args", DIR_FOR_FILE, ids=lambda a: a[0])
def test_directory_where_a_file_is_expected(world, args):
    one_error(run_inprocess(*args, cwd=world), 1, "adir")
    assert not any((world / "adir").iterdir()), "nothing may be written into the directory"


@pytest.mark.parametrize("args", FILE_FOR_DIR, ids=lambda a: a[0])
def test_file_where_a_directory_is_expected(world, args):
    before = {p: sha(world / p) for p in ("audio.lst", "labels.txt")}
    name = "labels.txt" if "labels.txt" in args[-1:] else "audio.lst"
    one_error(run_inprocess(*args, cwd=world), 1, name)
    assert {p: sha(world / p) for p in before} == before, "an input file was overwritten"


# ------------------------------------------------------------------------------------ empty lists

EMPTY = [
    ["features", "{}", "-o", "f"],
    ["train", "--train-labels", "{}", "--features", "feats", *TINY, "-o", "r"],
    ["validate", "-m", "run/last.pt", "-f", "feats", "-t", "{}"],
    ["embed", "-m", "run/last.pt", "-f", "feats", "-k", "{}", "-o", "e.h5"],
    ["score", "-t", "{}", "-e", "emb.h5"],
]


@pytest.mark.parametrize("listfile", ["empty.lst", "bom-only.lst"])
@pytest.mark.parametrize("args", EMPTY, ids=lambda a: a[0])
def test_empty_list(world, args, listfile):
    line = one_error(run_inprocess(*[listfile if a == "{}" else a for a in args], cwd=world), 1, listfile)
    assert "empty" in line
    assert not (world / "f").exists() and not (world / "r").exists() and not (world / "e.h5").exists()


# ------------------------------------------------------- Windows line endings and a UTF-8 BOM

def test_crlf_and_bom_lists_work_like_plain_ones(world, demo_dir):
    def windows(name: str) -> str:
        text = (world / name).read_text()
        (world / f"win-{name}").write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode())
        return f"win-{name}"

    r = run_inprocess("features", windows("audio.lst"), "-a", demo_dir, "-o", "feats-win", "-q", cwd=world)
    assert r.code == 0, r.stderr
    from dasv_cli.io.store.reader import FeatureStore

    with FeatureStore(world / "feats-win") as a, FeatureStore(world / "feats") as b:
        assert a.keys() == b.keys()
    r = run_inprocess("score", "-t", windows("trials.txt"), "-e", "emb.h5", "-q", cwd=world)
    plain = run_inprocess("score", "-t", "trials.txt", "-e", "emb.h5", "-q", cwd=world)
    assert r.code == 0 and plain.code == 0, r.stderr
    assert r.stdout == plain.stdout and r.stdout.count("\n") == 66
    r = run_inprocess("train", "--train-labels", windows("labels.txt"), "--features", "feats", *TINY,
                      "--max-steps", "1", "--dry-run", "-o", "run-win", cwd=world)
    assert r.code == 0, r.stderr


# ---------------------------------------------------------------- non-ASCII paths and spaces

def test_non_ascii_paths_and_spaces(world, demo_dir):
    base = world / "dïr ü" / "äu dio"
    base.mkdir(parents=True)
    files = sorted(demo_dir.glob("1688/*.flac"))[:2] + sorted(demo_dir.glob("2033/*.flac"))[:2]
    names = []
    for i, src in enumerate(files):
        name = f"spk{src.parent.name}ö/ütt{i}.flac"
        (base / name).parent.mkdir(exist_ok=True)
        shutil.copy(src, base / name)
        names.append(name)
    (world / "dïr ü" / "lïst ä.lst").write_text("".join(n + "\n" for n in names))
    r = run_inprocess("features", "dïr ü/lïst ä.lst", "-a", base, "-o", "dïr ü/fëats ö", "-q", cwd=world)
    assert r.code == 0, r.stderr
    keys = [n[: -len(".flac")] for n in names]
    trials = [f"1 {keys[0]} {keys[1]}", f"1 {keys[2]} {keys[3]}", f"0 {keys[0]} {keys[2]}", f"0 {keys[1]} {keys[3]}"]
    (world / "dïr ü" / "trïals é.txt").write_text("\n".join(trials) + "\n")
    r = run_inprocess("embed", "-m", "run/last.pt", "-f", "dïr ü/fëats ö", "-o", "dïr ü/out ß/émb ü.h5", "-q",
                      cwd=world)
    assert r.code == 0, r.stderr
    r = run_inprocess("score", "-t", "dïr ü/trïals é.txt", "-e", "dïr ü/out ß/émb ü.h5",
                      "-o", "dïr ü/out ß/scörés.tsv", "-q", cwd=world)
    assert r.code == 0, r.stderr
    written = (world / "dïr ü" / "out ß" / "scörés.tsv").read_text().splitlines()
    assert written[0].startswith("# dasv-scores checkpoint_sha256=") and len(written) == 1 + 4  # header: the model
    # and a mistake there still names the (non-ASCII) file
    r = run_inprocess("score", "-t", "dïr ü/nöpe.txt", "-e", "dïr ü/out ß/émb ü.h5", cwd=world)
    one_error(r, 1, "dïr ü/nöpe.txt")


# ------------------------------------------------------------- a store made by another recipe

RECIPE = [
    ["embed", "-m", "run/last.pt", "-f", "feats-other-recipe", "-o", "e-recipe.h5"],
    ["validate", "-m", "run/last.pt", "-f", "feats-other-recipe", "-t", "trials.txt"],
    ["score", "-t", "trials.txt", "-m", "run/last.pt", "-f", "feats-other-recipe"],
    ["train", "--train-labels", "labels.txt", "--features", "feats", *TINY, "--max-steps", "2",
     "--valid-trials", "trials.txt", "--valid-features", "feats-other-recipe", "-o", "r-recipe"],
]


@pytest.mark.parametrize("args", RECIPE, ids=lambda a: a[0])
def test_store_from_another_recipe(world, args):
    line = one_error(run_inprocess(*args, cwd=world), 1, "feats-other-recipe", "hop_length")
    assert "recipe" in line
    assert not (world / "e-recipe.h5").exists() and not (world / "r-recipe" / "last.pt").exists()


def test_resume_on_a_store_from_another_recipe_keeps_the_run(world):
    shutil.copytree(world / "run", world / "run-recipe")
    before = sha(world / "run-recipe" / "last.pt")
    r = run_inprocess("train", "--train-labels", "labels.txt", "--features", "feats-other-recipe", *TINY,
                      "--max-steps", "4", "--resume", "-o", "run-recipe", cwd=world)
    one_error(r, 1, "feats-other-recipe", "run-recipe/last.pt", "hop_length")
    assert sha(world / "run-recipe" / "last.pt") == before


def test_store_with_edited_attributes(world):
    r = run_inprocess("inspect", "feats-edited", cwd=world)
    line = one_error(r, 1, "feats-edited/shard-00000.h5", "hop_length")
    assert "disagree" in line


# ------------------------------------------------ a checkpoint from another config, or none at all

@pytest.mark.parametrize("args", [
    ["embed", "-m", "other-config.pt", "-f", "feats", "-o", "e-cfg.h5"],
    ["validate", "-m", "other-config.pt", "-f", "feats", "-t", "trials.txt"],
    ["score", "-t", "trials.txt", "-m", "other-config.pt", "-f", "feats"],
], ids=lambda a: a[0])
def test_checkpoint_from_another_config(world, args):
    line = one_error(run_inprocess(*args, cwd=world), 1, "other-config.pt", "in the checkpoint but")
    assert "\t" not in line and not (world / "e-cfg.h5").exists()


def test_resume_with_other_speakers_keeps_the_run(world):
    shutil.copytree(world / "run", world / "run-spk")
    before = sha(world / "run-spk" / "last.pt")
    labels = (world / "labels.txt").read_text().splitlines()[:8]  # 3 speakers instead of 4
    (world / "labels-3spk.txt").write_text("\n".join(labels) + "\n")
    r = run_inprocess("train", "--train-labels", "labels-3spk.txt", "--features", "feats", *TINY,
                      "--max-steps", "4", "--resume", "-o", "run-spk", cwd=world)
    one_error(r, 1, "run-spk/last.pt", "am_softmax.weight")
    assert sha(world / "run-spk" / "last.pt") == before


@pytest.mark.parametrize("bad,why", [("text.pt", "not a PyTorch file"), ("truncated.pt", "truncated"),
                                     ("emptyfile.pt", "truncated"), ("tensor.pt", "not a dasv checkpoint")])
@pytest.mark.parametrize("command", ["embed", "validate", "convert"])
def test_not_a_checkpoint(world, bad, why, command):
    args = {"embed": ["embed", "-m", bad, "-f", "feats", "-o", "e-bad.h5"],
            "validate": ["validate", "-m", bad, "-f", "feats", "-t", "trials.txt"],
            "convert": ["convert", bad, "-o", "converted.pt"]}[command]
    line = one_error(run_inprocess(*args, cwd=world), 1, bad)
    if command != "convert" or bad != "tensor.pt":
        assert why in line
    assert not (world / "e-bad.h5").exists() and not (world / "converted.pt").exists()


# ------------------------------------------------------------------- unwritable output places

UNWRITABLE = [
    ["features", "audio.lst", "-a", "{demo}", "-o", "/proc/nonexistent/feats"],
    ["train", "--train-labels", "labels.txt", "--features", "feats", *TINY, "--max-steps", "2",
     "-o", "/proc/nonexistent/run"],
    ["embed", "-m", "run/last.pt", "-f", "feats", "-o", "/proc/nonexistent/emb.h5"],
    ["score", "-t", "trials.txt", "-e", "emb.h5", "-o", "/proc/nonexistent/scores.tsv"],
    ["score", "-t", "trials.txt", "-e", "emb.h5", "--det-plot", "/proc/nonexistent/det.png"],
]


@pytest.mark.parametrize("args", UNWRITABLE, ids=lambda a: a[0] + ("-det" if "--det-plot" in a else ""))
def test_unwritable_output(world, demo_dir, args):
    args = [str(demo_dir) if a == "{demo}" else a for a in args]
    r = run_inprocess(*args, cwd=world)
    one_error(r, 1, "/proc/nonexistent")
    # refused before the work: embed does not compute embeddings it cannot store
    assert "embedding" not in r.stderr.replace("dasv: error: cannot write embeddings", "")


# --------------------------------------------------------------------------------- a full disk

def test_full_disk_features_keeps_finished_shards(world, demo_dir):
    # One shard per utterance; the file-size cap is set between the shard sizes, so the disk "fills"
    # at the first utterance longer than all before it (chunks of 128 frames x 80 float32). The first
    # utterance is stored by an earlier run: its shard must come through byte for byte.
    from dasv_cli.io.store.layout import list_shards
    from dasv_cli.io.store.reader import FeatureStore

    keys = [line[: -len(".flac")] for line in (world / "audio.lst").read_text().split()]
    with FeatureStore(world / "feats") as store:
        chunks = [-(-store.length(k) // 128) for k in keys]
    fail_at = next(i for i in range(1, len(keys)) if chunks[i] > max(chunks[:i]))
    fsize = max(chunks[:fail_at]) * 128 * 320 + 20_000
    args = ["features", "audio.lst", "-a", str(demo_dir), "-o", "feats-full", "--shard-frames", "1", "-j", "1", "-q"]
    (world / "full-first.lst").write_text(keys[0] + ".flac\n")
    r = run_inprocess("features", "full-first.lst", *args[2:], cwd=world)
    assert r.code == 0, r.stderr
    before = {p.name: p.read_bytes() for p in list_shards(world / "feats-full")}
    assert len(before) == 1
    r = run_dasv(*args, cwd=world, file_size_limit=fsize)
    line = one_error(r, 1, "feats-full/shard-", "file too large")
    assert r.stderr.strip() == line, "one line and nothing else"
    assert line.startswith("dasv: error: cannot write features:") and "rerun to continue" in line
    no_temporaries(world / "feats-full")
    with FeatureStore(world / "feats-full") as store:
        assert store.keys() == keys[:fail_at], "the shards finished before the disk filled must be kept"
    after = {p.name: p.read_bytes() for p in list_shards(world / "feats-full")}
    assert {n: after.get(n) for n in before} == before, "an earlier run's shard changed"
    r = run_inprocess(*args, cwd=world)
    assert r.code == 0, r.stderr
    with FeatureStore(world / "feats-full") as store:
        assert sorted(store.keys()) == sorted(keys)


def test_full_disk_train_checkpoint(world):
    r = run_dasv("train", "--train-labels", "labels.txt", "--features", "feats", *TINY, "--max-steps", "2",
                 "-o", "run-full", cwd=world, file_size_limit=20_000)
    one_error(r, 1, "run-full/last.pt", "file too large")
    assert not (world / "run-full" / "last.pt").exists()
    no_temporaries(world / "run-full")


def test_full_disk_resume_keeps_the_old_checkpoint(world):
    """The save that fails half-way (the file-size cap at half of last.pt) is over an existing last.pt:
    written in place, the run would be lost; written beside it and renamed, last.pt stays as it was."""
    shutil.copytree(world / "run", world / "run-full-resume")
    last = world / "run-full-resume" / "last.pt"
    before, size = sha(last), last.stat().st_size
    r = run_dasv("train", "--train-labels", "labels.txt", "--features", "feats", *TINY, "--max-steps", "4",
                 "--resume", "-o", "run-full-resume", cwd=world, file_size_limit=size // 2)
    one_error(r, 1, "run-full-resume/last.pt", "file too large")
    assert sha(last) == before, "the failed save changed the previous last.pt"
    no_temporaries(world / "run-full-resume")


def test_full_disk_embed_keeps_the_old_table(world):
    # a table holding 4 of the 12 embeddings (an earlier run); the full disk hits when extending it
    from dasv_cli.io.embeddings import Embeddings, read_embeddings, write_embeddings

    table = read_embeddings(world / "emb.h5")
    write_embeddings(world / "emb-full.h5", Embeddings(table.keys[:4], table.vectors[:4], dict(table.attrs)))
    before = sha(world / "emb-full.h5")
    r = run_dasv("embed", "-m", "run/last.pt", "-f", "feats", "-o", "emb-full.h5", "-q", cwd=world,
                 file_size_limit=5_000)
    one_error(r, 1, "emb-full.h5", "file too large")
    assert sha(world / "emb-full.h5") == before
    no_temporaries(world)
    r = run_dasv("embed", "-m", "run/last.pt", "-f", "feats", "-o", "emb-full.txt", "-q", cwd=world,
                 file_size_limit=1_000)
    one_error(r, 1, "emb-full.txt", "file too large")
    assert not (world / "emb-full.txt").exists()
    no_temporaries(world)


def test_full_disk_score_keeps_the_old_scores(world):
    (world / "scores-full.tsv").write_text("previous scores\n")
    r = run_dasv("score", "-t", "trials.txt", "-e", "emb.h5", "-o", "scores-full.tsv", "-q", cwd=world,
                 file_size_limit=1_000)
    one_error(r, 1, "scores-full.tsv", "file too large")
    assert (world / "scores-full.tsv").read_text() == "previous scores\n"
    no_temporaries(world)


# --------------------------------------------------------------------------------------- Ctrl-C

def test_ctrl_c_features_keeps_finished_shards(world, demo_dir):
    from dasv_cli.io.store.layout import list_shards
    from dasv_cli.io.store.reader import FeatureStore

    every = sorted(str(p.relative_to(demo_dir)) for p in demo_dir.glob("*/*.flac"))
    (world / "all.lst").write_text("".join(r + "\n" for r in every))
    out = world / "feats-int"
    r = signal_when("features", "all.lst", "-a", demo_dir, "-o", out, "-j", "1", "--shard-frames", "1000", "-q",
                    cwd=world, ready=lambda _: len(list_shards(out)) >= 2)
    one_error(r, 130, "interrupted")
    assert "interrupted: the" in r.stderr and "rerun the same command to continue" in r.stderr
    no_temporaries(out)
    with FeatureStore(out) as store:
        kept = len(store)
    assert 2 <= kept < len(every)
    again = run_inprocess("features", "all.lst", "-a", demo_dir, "-o", out, "--shard-frames", "1000", cwd=world)
    assert again.code == 0, again.stderr
    assert f"{kept} of {len(every)} listed files already stored" in again.stderr
    with FeatureStore(out) as store:
        assert len(store) == len(every)


def test_ctrl_c_train_saves_last(world):
    """No periodic save (and a loader worker running): last.pt is what the interrupt wrote."""
    out = world / "run-int"
    metrics = out / "metrics.jsonl"
    r = signal_when("train", "--train-labels", "labels.txt", "--features", "feats", *TINY_FLAGS, "--workers", "1",
                    "--print-every", "1", "--max-steps", "100000", "-o", out, cwd=world,
                    ready=lambda _: metrics.exists() and bool(metrics.read_text().strip()))
    one_error(r, 130, "interrupted")
    assert r.stderr.strip().splitlines()[-1] == "dasv: error: interrupted"
    from dasv_cli.io.checkpoint import load_checkpoint

    assert load_checkpoint(out / "last.pt")["step"] >= 1
    no_temporaries(out)


@pytest.fixture(scope="module")
def slow_model(world) -> Path:
    """A larger (untrained) network, so embedding takes long enough to interrupt."""
    from dasv_cli.io.checkpoint import load_checkpoint, save_checkpoint
    from dasv_cli.model import ModelConfig, SpeakerNet

    recipe = load_checkpoint(world / "run" / "last.pt")["config"]["features"]["recipe"]
    cfg = ModelConfig(num_speakers=4)  # the paper's size: about 0.5 s per utterance on one core
    path = world / "slow.pt"
    save_checkpoint(path, {"config": {"model": cfg.to_dict(), "train": {}, "features": {"norm": "cmn",
                                                                                         "recipe": recipe}},
                           "model": SpeakerNet(cfg).state_dict(), "speakers": None, "step": 0, "epoch": 0})
    return path


def test_ctrl_c_embed_saves_what_was_embedded(world, slow_model):
    first = world / "first.lst"
    keys = (world / "labels.txt").read_text().split()[::2]
    first.write_text(keys[0] + "\n")
    r = run_inprocess("embed", "-m", slow_model, "-f", "feats", "-k", first, "-o", "emb-int.h5", "-q", cwd=world)
    assert r.code == 0, r.stderr
    # the interrupt lands once the run has said what it is about to compute
    r = signal_when("embed", "-m", slow_model, "-f", "feats", "-o", "emb-int.h5", "--max-frames", "200", cwd=world,
                    ready=lambda err: "computing 11 missing" in err)
    one_error(r, 130, "interrupted")
    from dasv_cli.io.embeddings import read_embeddings

    table = read_embeddings(world / "emb-int.h5")
    assert keys[0] in table.keys, "embeddings from before the interrupted run were lost"
    assert len(table) < 12
    if len(table) > 1:  # what the interrupted run finished is saved, and it says so
        assert f"{len(table) - 1} new embeddings saved to emb-int.h5" in r.stderr
    no_temporaries(world)


def test_ctrl_c_caught_inside_a_source_string_still_exits_130(tmp_path):
    """A Ctrl-C landing while code from a source string runs (dataclass and namedtuple creation exec
    one, e.g. while an import defines a dataclass) is caught and reported like any other, and
    `python -m dasv_cli` ends with 130, not killed by the signal (-2): the embed run above hit this when
    the interrupt landed during a lazy import just before its first batch."""
    (tmp_path / "probe.py").write_text(
        "import signal\n"
        "from dasv_cli.cli import app\n"
        "def run(argv=None):\n"
        "    try:\n"
        "        exec('signal.raise_signal(signal.SIGINT)')\n"
        "    except KeyboardInterrupt:\n"
        "        return app._fail('interrupted', 130)\n"
        "    raise AssertionError('SIGINT did not interrupt')\n"
        "app.run = run\n"
        "app.main()\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                       os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-m", "probe"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.stderr == "dasv: error: interrupted\n"
    assert proc.returncode == 130


def test_ctrl_c_validate(world, slow_model):
    started = time.time()
    r = signal_when("validate", "-m", slow_model, "-f", "feats", "-t", "trials.txt", cwd=world,
                    ready=lambda _: time.time() - started > 4)
    one_error(r, 130, "interrupted")
