"""`dasv demo`'s working directory: it writes only in a directory of its own, and `--fresh` removes only
what it wrote (real processes, real files)."""

from __future__ import annotations

from pathlib import Path

from conftest import run_dasv


def test_fresh_removes_only_what_the_demo_made(tmp_path: Path):
    work = tmp_path / "demo"
    first = run_dasv("demo", "-o", work, "--setup-only")
    assert first.code == 0, first.stderr
    (work / "notes.txt").write_text("mine\n")  # the user's own file beside the demo's
    (work / "scores.tsv").write_text("a\tb\t0.5\t1\n")  # an output of an earlier demo run
    (work / "features").mkdir()
    (work / "features" / "shard-00000.h5").write_bytes(b"x")

    again = run_dasv("demo", "-o", work, "--fresh", "--setup-only")
    assert again.code == 0, again.stderr
    assert (work / "notes.txt").read_text() == "mine\n"
    assert not (work / "scores.tsv").exists() and not (work / "features").exists()
    assert (work / "audio.lst").is_file() and (work / "dasv.toml").is_file()


def test_a_directory_the_demo_did_not_make_is_refused(tmp_path: Path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work\n")
    for extra in ([], ["--fresh"]):
        res = run_dasv("demo", "-o", mine, "--setup-only", *extra)
        assert res.code != 0
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and str(mine) in lines[0] and "not made by `dasv demo`" in lines[0], res.stderr
        assert sorted(p.name for p in mine.iterdir()) == ["thesis.tex"]
        assert (mine / "thesis.tex").read_text() == "years of work\n"
    # `-o .` in a directory holding the user's files: the same refusal
    res = run_dasv("demo", "-o", ".", "--fresh", "--setup-only", cwd=mine)
    assert res.code != 0 and (mine / "thesis.tex").exists()


def test_an_empty_directory_and_an_earlier_demo_directory_are_taken(tmp_path: Path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_dasv("demo", "-o", empty, "--setup-only").code == 0
    assert (empty / ".dasv-demo").is_file()
    old = tmp_path / "old"  # made by a dasv from before the marker: recognised by its dasv.toml
    old.mkdir()
    (old / "dasv.toml").write_text("# dasv demo: a small configuration\nmax-steps = 3\n")
    (old / "det.png").write_bytes(b"png")
    res = run_dasv("demo", "-o", old, "--fresh", "--setup-only")
    assert res.code == 0, res.stderr
    assert not (old / "det.png").exists() and (old / ".dasv-demo").is_file()
