"""`dasv features` with many writers, as users run it (real processes).

--part I/N (cluster jobs): N parts fill one directory at once, readers see the union (equal to one
run), a killed part resumes, bad --part values and lock conflicts are one-line errors, failed lists
are per part and `dasv inspect` reports all of them. --jobs N: worker processes that write their
own shards give the same layout every time, commit on Ctrl-C, and report a write failure or a
killed worker as one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from dasv_cli.io.store.layout import Part, list_shards, list_temporary, shard_part
from dasv_cli.io.store.lock import StoreLock
from dasv_cli.io.store.reader import FeatureStore
from conftest import run_dasv, same_store_content, signal_when, start_dasv  # tests/ is on sys.path


def _list(path: Path, files) -> Path:
    path.write_text("".join(f"{f}\n" for f in files))
    return path


def _start(*args: str) -> subprocess.Popen:
    """`dasv ARGS` running, its stdout and stderr piped."""
    return start_dasv(*args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _remove_shards(out: Path) -> None:
    for s in list_shards(out):
        s.unlink()


@pytest.fixture(scope="module")
def single_run(tmp_path_factory, demo_files) -> tuple[Path, Path]:
    """(list, store) of the bundled set computed by one run without --part."""
    work = tmp_path_factory.mktemp("single")
    lst = _list(work / "demo.lst", demo_files)
    res = run_dasv("features", lst, "-o", work / "feats", "-j", "2", "-q")
    assert res.code == 0, res.stderr
    return lst, work / "feats"


def test_parts_fill_one_directory_at_once_and_read_as_one_store(tmp_path, single_run, dasv):
    lst, ref = single_run
    out = tmp_path / "feats"
    out.mkdir()
    # part 1 holds its lock meanwhile: part 2 (a real process) must run beside it, not wait or fail
    with StoreLock(out, Part(1, 3)):
        res = dasv("features", lst, "-o", out, "--part", "2/3", "-j", "1", "--json")
        assert res.code == 0, res.stderr
        assert json.loads(res.stdout)["part"] == "2/3" and "part 2/3 of the list" in res.stderr
    # the other two as concurrent processes, one with worker processes
    procs = [_start("features", lst, "-o", out, "--part", "1/3", "-j", "2", "-q"),
             _start("features", lst, "-o", out, "--part", "3/3", "-j", "1", "-q", "--shard-frames", "3000")]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err.decode()
    shards = list_shards(out)
    assert {shard_part(s) for s in shards} == {Part(1, 3), Part(2, 3), Part(3, 3)}
    assert all(s.name.startswith("shard-p000") and "of0003-" in s.name for s in shards)
    keys = [str(Path(line).with_suffix("")) for line in lst.read_text().split()]
    with FeatureStore(out) as store:  # every 3rd entry from the I-th (one job: stored in list order)
        for i in (1, 2, 3):
            mine = [k for s, k in zip(*_rows(store)) if shard_part(s) == Part(i, 3)]
            if i == 1:  # two jobs: each worker's shards hold its own half
                assert sorted(mine) == sorted(keys[0::3])
            else:
                assert mine == keys[i - 1::3]
    same_store_content(out, ref)
    info = json.loads(dasv("inspect", out, "--json").stdout)
    assert info["utterances"] == len(keys) and info["parts"] == ["1/3", "2/3", "3/3"] and info["failed"] == 0
    assert "parts       3 of 3" in dasv("inspect", out).stdout
    # a rerun of a finished part, or a run without --part, finds everything stored
    res = dasv("features", lst, "-o", out, "--part", "2/3")
    assert res.code == 0 and "nothing to do" in res.stderr
    res = dasv("features", lst, "-o", out, "-j", "1")
    assert res.code == 0 and f"{len(keys)} of {len(keys)} listed files already stored" in res.stderr


def _rows(store: FeatureStore) -> tuple[list[Path], list[str]]:
    """(shard, key) of every stored utterance, in stored order."""
    import h5py

    shards, keys = [], []
    for s in store.shards:
        with h5py.File(s, "r") as f:
            k = list(f["keys"].asstr()[()])
        shards += [s] * len(k)
        keys += k
    return shards, keys


def test_a_killed_part_resumes_and_leaves_the_other_parts_alone(tmp_path, single_run, dasv):
    lst, ref = single_run
    out = tmp_path / "feats"
    out.mkdir()
    other = out / ".shard-p0001of0002-00000.h5.x1y2z3.tmp"  # as if part 1 were writing it right now
    other.write_bytes(b"half a shard")
    # part 2 killed mid-run (some shards complete); started again if it was too quick
    killed = signal_when("features", lst, "-o", out, "--part", "2/2", "-j", "1", "-q", "--shard-frames", "1500",
                         sig=signal.SIGKILL, ready=lambda _: len(list_shards(out)) >= 2, attempts=3,
                         again=lambda: _remove_shards(out))
    assert killed.code == -signal.SIGKILL
    with FeatureStore(out) as partial:
        assert 0 < len(partial) < 20
        done = len(partial)
    res = dasv("features", lst, "-o", out, "--part", "2/2", "-j", "2", "--shard-frames", "1500")
    assert res.code == 0, res.stderr
    assert f"{done} of 20 listed files already stored" in res.stderr
    assert other.exists() and list_temporary(out, Part(2, 2)) == []  # only its own leftovers went
    assert dasv("features", lst, "-o", out, "--part", "1/2", "-j", "1", "-q").code == 0
    assert not other.exists() and not list_temporary(out)  # part 1 holds its lock: the file was a leftover
    same_store_content(out, ref)


@pytest.mark.parametrize("value, message", [
    ("0/4", "parts are numbered from 1 to 4"),
    ("5/4", "there are only 4 parts"),
    ("1/0", "N must be at least 1"),
    ("two/4", "--part must be I/N"),
    ("1/2/3", "--part must be I/N"),
    ("-1/4", "--part must be I/N"),
    ("", "--part must be I/N"),
])
def test_bad_part_values_are_one_line_usage_errors(tmp_path, demo_files, dasv, value, message):
    lst = _list(tmp_path / "a.lst", demo_files[:2])
    res = dasv("features", lst, "-o", tmp_path / "feats", "--part", value)
    assert res.code == 2, res.stderr
    assert message in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "feats").exists()


def test_who_may_write_beside_whom(tmp_path, demo_files, dasv):
    lst = _list(tmp_path / "a.lst", demo_files[:4])
    out = tmp_path / "feats"
    out.mkdir()
    with StoreLock(out, Part(1, 2)):
        same = dasv("features", lst, "-o", out, "--part", "1/2")
        assert same.code == 1 and f"part 1/2 is already being computed by another run (pid {os.getpid()})" in same.stderr
        whole = dasv("features", lst, "-o", out)
        assert whole.code == 1 and "`dasv features --part` runs are writing to this directory" in whole.stderr
    with StoreLock(out):
        part = dasv("features", lst, "-o", out, "--part", "2/2")
        assert part.code == 1 and f"a `dasv features` run without --part (pid {os.getpid()})" in part.stderr
    both = dasv("features", lst, "-o", out, "--part", "2/2", "--overwrite")
    assert both.code == 2 and "--overwrite cannot be used with --part" in both.stderr
    assert list_shards(out) == []


def test_failed_lists_per_part_and_inspect_reports_all(tmp_path, demo_files, dasv):
    bad = tmp_path / "bad"
    bad.mkdir()
    sf.write(bad / "short.wav", np.zeros(300, np.float32) + 0.1, 16000)
    lines = [demo_files[0], bad / "missing.wav", demo_files[1], bad / "short.wav", demo_files[2], demo_files[3]]
    lst = _list(tmp_path / "a.lst", lines)  # part 1: lines 1, 3, 5 (all good); part 2: lines 2, 4, 6
    out = tmp_path / "feats"
    assert dasv("features", lst, "-o", out, "--part", "1/2", "-q").code == 0
    res = dasv("features", lst, "-o", out, "--part", "2/2")
    assert res.code == 3 and "failed-p0002of0002.tsv" in res.stderr
    assert not (out / "failed.tsv").exists() and not (out / "failed-p0001of0002.tsv").exists()
    rows = (out / "failed-p0002of0002.tsv").read_text().splitlines()
    assert rows[0] == "path\treason" and sorted(r.split("\t")[0] for r in rows[1:]) == [
        str(bad / "missing.wav"), str(bad / "short.wav")]
    info = json.loads(dasv("inspect", out, "--json").stdout)
    assert info["utterances"] == 4 and info["failed"] == 2
    assert info["failed_lists"] == {str(out / "failed-p0002of0002.tsv"): 2}
    assert "failed      2 (see " in dasv("inspect", out).stdout
    # the bad files fixed (gone from the list): part 2's rerun removes its own failed list
    good = _list(tmp_path / "b.lst", [x for x in lines if x.parent != bad])
    assert dasv("features", good, "-o", out, "--part", "2/2", "-q").code == 0
    assert not (out / "failed-p0002of0002.tsv").exists()
    assert json.loads(dasv("inspect", out, "--json").stdout)["failed"] == 0


# -- --jobs N: worker processes that each compute and write their own shards ----------------------------

def _children(pid: int) -> list[int]:
    """Processes whose parent is `pid` (Linux /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def _when(proc: subprocess.Popen, ready, timeout: float = 120) -> bool:
    """Wait until `ready()` or the process ends; True when it is still running."""
    deadline = time.time() + timeout
    while time.time() < deadline and not ready() and proc.poll() is None:
        time.sleep(0.01)
    return proc.poll() is None


def test_jobs_lay_out_the_same_store_every_time(tmp_path, single_run):
    lst, ref = single_run
    layouts = []
    for name in ("a", "b"):
        out = tmp_path / name
        proc = _start("features", lst, "-o", out, "-j", "2", "-q", "--shard-frames", "4000")
        assert proc.wait(timeout=600) == 0
        with FeatureStore(out) as store:
            layouts.append([(s.name, k) for s, k in zip(*_rows(store))])
        same_store_content(out, ref)
    assert layouts[0] == layouts[1]
    names = sorted({name for name, _ in layouts[0]})
    assert names[:2] == ["shard-00000.h5", "shard-00001.h5"] and len(names) > 2  # one sequence per worker


def test_jobs_ctrl_c_commits_what_every_worker_computed(tmp_path, single_run, dasv):
    lst, ref = single_run
    out = tmp_path / "feats"
    r = signal_when("features", lst, "-o", out, "-j", "2", "-q", "--shard-frames", "1500",
                    ready=lambda _: len(list_shards(out)) >= 2, attempts=3, again=lambda: _remove_shards(out))
    assert r.code == 130, r.stderr
    with FeatureStore(out) as store:
        kept = len(store)
    assert f"interrupted: the {kept} utterances computed so far are stored" in r.stderr
    assert 2 <= kept < 40 and not list_temporary(out)
    res = dasv("features", lst, "-o", out, "-j", "2", "--shard-frames", "1500")
    assert res.code == 0 and f"{kept} of 40 listed files already stored" in res.stderr
    same_store_content(out, ref)


def test_jobs_write_failure_is_one_line_and_loses_nothing_done(tmp_path, single_run, demo_files, dasv):
    lst, ref = single_run
    out = tmp_path / "feats"
    assert dasv("features", _list(tmp_path / "a.lst", demo_files[:2]), "-o", out, "-q").code == 0
    before = {p.name: p.read_bytes() for p in list_shards(out)}
    res = run_dasv("features", lst, "-o", out, "-j", "2", "-q", file_size_limit=2_000_000)  # a full disk
    assert res.code == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dasv: error: cannot write features:"), res.stderr
    after = {p.name: p.read_bytes() for p in list_shards(out)}
    assert all(after[name] == data for name, data in before.items())  # finished work intact; the other
    with FeatureStore(out) as store:  # worker may have committed what it had: complete, readable shards
        assert len(store) >= 2
    assert not list_temporary(out)
    assert dasv("features", lst, "-o", out, "-q").code == 0
    same_store_content(out, ref)


def test_a_worker_killed_is_one_line_and_a_rerun_finishes(tmp_path, single_run, dasv):
    lst, ref = single_run
    out = tmp_path / "feats"
    for attempt in range(3):
        proc = _start("features", lst, "-o", out, "-j", "2", "-q", "--shard-frames", "1500")
        running = _when(proc, lambda: len(list_shards(out)) >= 1 and len(_children(proc.pid)) >= 2)
        workers = _children(proc.pid)
        if running and workers:
            os.kill(workers[0], signal.SIGKILL)
        _, err = proc.communicate(timeout=120)
        if running and workers:
            break
    assert running and workers, "the run finished before a worker could be killed"
    err = err.decode().strip().splitlines()
    assert proc.returncode == 1 and len(err) == 1 and "a worker process died" in err[0], err
    assert not list_temporary(out)
    res = dasv("features", lst, "-o", out, "-j", "2")
    assert res.code == 0, res.stderr
    same_store_content(out, ref)
