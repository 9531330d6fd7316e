"""`dasv features` and `dasv inspect` as a user runs them (real processes): parity, bad inputs, resume
after SIGKILL, concurrent runs, duplicate keys, reruns, --overwrite, outputs that cannot be made
(Ctrl-C and a full disk: test_sweep)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from dasv_cli.features.run import featurize
from dasv_cli.io.store.layout import LOCK_NAME, list_shards, list_temporary
from dasv_cli.io.store.lock import StoreLock
from dasv_cli.io.store.reader import FeatureStore
from conftest import file_modes_bind_this_process, run_dasv, same_store_content, signal_when, start_dasv  # tests/ is on sys.path
from test_logmel import TOL, reference_logmel  # the float64 reference written from DESIGN.md


def _list(path: Path, files) -> Path:
    path.write_text("".join(f"{f}\n" for f in files))
    return path


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory, demo_dir, demo_files) -> Path:
    """The bundled set through the CLI with two jobs (shared by the tests that only read it)."""
    work = tmp_path_factory.mktemp("demo")
    lst = _list(work / "demo.lst", [f.relative_to(demo_dir) for f in demo_files])
    res = run_dasv("features", lst, "-o", work / "feats", "--audio-dir", demo_dir, "--jobs", "2")
    assert res.code == 0, res.stderr
    assert "x real-time" in res.stderr and "resampled to 16000 Hz: 0 of 40" in res.stderr
    assert res.stdout == ""
    return work / "feats"


def test_demo_store_matches_the_reference(demo_store, demo_dir, demo_files):
    store = FeatureStore(demo_store)
    assert len(store) == 40
    worst = 0.0
    for f in demo_files:
        key = str(f.relative_to(demo_dir).with_suffix(""))
        wave, sr = sf.read(str(f), dtype="float32")
        ref = reference_logmel(wave)
        got = store[key]
        assert got.shape == ref.shape
        worst = max(worst, float(np.abs(got - ref).max()))
        mean, std = store.stats(key)
        np.testing.assert_allclose(mean, got.astype(np.float64).mean(0), atol=1e-5)
        np.testing.assert_allclose(std, got.astype(np.float64).std(0), atol=1e-5)
        assert store.samples(key) == len(wave)
    assert worst <= TOL, worst
    assert store.recipe["n_fft"] == 512 and store.recipe["win_length"] == 400


def test_inspect(demo_store, dasv):
    res = dasv("inspect", demo_store)
    assert res.code == 0
    assert "utterances  40" in res.stdout and "failed      0" in res.stdout and "hop_length=160" in res.stdout
    info = json.loads(dasv("inspect", demo_store, "--json").stdout)
    assert info["utterances"] == 40 and info["failed"] == 0 and info["recipe"]["n_mels"] == 80
    assert info["frames"] == FeatureStore(demo_store).total_frames()
    assert 0.07 < info["hours"] < 0.09
    missing = dasv("inspect", demo_store.parent / "nothing-here")
    assert missing.code == 1 and missing.stderr.startswith("dasv: error: ") and "no such feature store" in missing.stderr


def test_help_shows_examples(dasv):
    for cmd in ("features", "inspect"):
        res = dasv(cmd, "--help")
        assert res.code == 0 and f"dasv {cmd} " in res.stdout and "Examples" in res.stdout


def _write_bad_inputs(d: Path, demo_files) -> tuple[list[str], dict[str, str]]:
    """A list of good and bad inputs; returns (list lines, {path: expected reason})."""
    d.mkdir()
    sf.write(d / "empty.wav", np.zeros(0, np.float32), 16000)
    sf.write(d / "short.wav", np.zeros(300, np.float32) + 0.1, 16000)  # 18.75 ms
    nan = np.full(8000, 0.1, np.float32)
    nan[7] = np.nan
    sf.write(d / "nan.wav", nan, 16000, subtype="FLOAT")
    (d / "corrupt.flac").write_bytes(b"fLaC" + os.urandom(3000))
    sf.write(d / "noext.wav", sf.read(str(demo_files[1]), dtype="float32")[0], 16000)  # listed without ext
    sf.write(d / "stereo8k.wav", np.stack([np.sin(np.arange(8000) / 5)] * 2, 1).astype(np.float32) * 0.3, 8000)
    expected = {
        str(d / "missing.wav"): "no such file",
        str(d / "empty.wav"): "empty audio",
        str(d / "short.wav"): "too short",
        str(d / "nan.wav"): "NaN or infinite",
        str(d / "corrupt.flac"): "not readable audio",
    }
    lines = [str(demo_files[0]), str(d / "missing.wav"), str(d / "empty.wav"), str(d / "short.wav"),
             str(d / "nan.wav"), str(d / "corrupt.flac"), str(d / "noext"), str(d / "stereo8k.wav")]
    return lines, expected


def test_bad_inputs_are_listed_and_the_rest_stored(tmp_path, demo_files, dasv):
    lines, expected = _write_bad_inputs(tmp_path / "audio", demo_files)
    out = tmp_path / "feats"
    res = dasv("features", "-", "-o", out, "--jobs", "2", input="".join(f"{x}\n" for x in lines))
    assert res.code == 3, res.stderr
    assert "5 of 8 inputs failed" in res.stderr and "resampled to 16000 Hz: 1 of 3" in res.stderr
    rows = (out / "failed.tsv").read_text().splitlines()
    assert rows[0] == "path\treason"
    failed = dict(r.split("\t") for r in rows[1:])
    assert set(failed) == set(expected)
    for path, reason in expected.items():
        assert reason in failed[path], (path, failed[path])
    store = FeatureStore(out)
    assert sorted(store.keys()) == sorted([str(demo_files[0].with_suffix("")), str(tmp_path / "audio" / "noext"),
                                          str(tmp_path / "audio" / "stereo8k")])
    assert store.length(str(tmp_path / "audio" / "stereo8k")) == 1 + (16000 - 512) // 160  # 1 s at 16 kHz
    info = json.loads(dasv("inspect", out, "--json").stdout)
    assert info["failed"] == 5 and info["utterances"] == 3
    # once the bad files are fixed (removed from the list), a rerun skips the stored ones: exit 0
    res = dasv("features", "-", "-o", out, input="".join(f"{x}\n" for x in lines if x not in expected))
    assert res.code == 0 and "3 of 3 listed files already stored" in res.stderr
    assert not (out / "failed.tsv").exists()


def test_duplicate_keys_refused_before_any_work(tmp_path, demo_files, dasv):
    lst = _list(tmp_path / "dup.lst", [demo_files[0], demo_files[1], demo_files[0].with_suffix("")])
    res = dasv("features", lst, "-o", tmp_path / "feats")
    assert res.code == 1
    assert f"{lst}:3: duplicate key" in res.stderr and "first at line 1" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "feats").exists()


def test_rerun_skips_overwrite_recomputes_dtype_mismatch_refused(tmp_path, demo_files, dasv):
    lst = _list(tmp_path / "a.lst", demo_files[:3])
    out = tmp_path / "feats"
    assert dasv("features", lst, "-o", out, "-j", "1", "-q").code == 0
    first = list_shards(out)
    mtime = first[0].stat().st_mtime_ns
    more = _list(tmp_path / "b.lst", demo_files[:5])
    res = dasv("features", more, "-o", out, "-j", "1")
    assert res.code == 0 and "3 of 5 listed files already stored" in res.stderr
    assert first[0].stat().st_mtime_ns == mtime and len(list_shards(out)) == 2 and len(FeatureStore(out)) == 5
    res = dasv("features", more, "-o", out, "--dtype", "float16")
    assert res.code == 2 and "already holds float32 features" in res.stderr
    res = dasv("features", lst, "-o", out, "--dtype", "float16", "--overwrite", "-q", "--json")
    assert res.code == 0 and json.loads(res.stdout)["stored"] == 3
    store = FeatureStore(out)
    assert store.dtype == "float16" and len(store) == 3 and len(list_shards(out)) == 1


def test_resume_after_sigkill_equals_an_uninterrupted_run(tmp_path, demo_files, dasv):
    lst = _list(tmp_path / "demo.lst", demo_files)
    ref = tmp_path / "ref"
    assert dasv("features", lst, "-o", ref, "-j", "2", "-q").code == 0
    out = tmp_path / "killed"
    # killed mid-run (after some shards are complete); started again if it was too quick
    killed = signal_when("features", lst, "-o", out, "-j", "1", "-q", "--shard-frames", "700", "--overwrite",
                         sig=signal.SIGKILL, ready=lambda _: len(list_shards(out)) >= 3, attempts=3)
    assert killed.code == -signal.SIGKILL
    partial = FeatureStore(out)
    assert 0 < len(partial) < len(demo_files)
    partial.close()
    res = dasv("features", lst, "-o", out, "-j", "2", "--shard-frames", "700")
    assert res.code == 0, res.stderr
    assert "already stored" in res.stderr
    assert not list_temporary(out)
    same_store_content(out, ref)


def test_a_second_concurrent_run_refuses(tmp_path, demo_files, dasv):
    copies = []  # the bundled set eight times (other keys): a run long enough to be caught holding the lock
    for i in range(8):
        (tmp_path / f"copy{i}").mkdir()
        for f in demo_files:
            copies.append(tmp_path / f"copy{i}" / f.name)
            copies[-1].symlink_to(f)
    lst = _list(tmp_path / "demo.lst", copies)
    out = tmp_path / "feats"
    first = start_dasv("features", lst, "-o", out, "-j", "1", "-q", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    lock = out / LOCK_NAME
    while time.time() < deadline and not (lock.exists() and lock.read_text().split()[:1] == [str(first.pid)]):
        time.sleep(0.005)
    # held still while the second run tries (a fast first run would otherwise finish before it)
    os.kill(first.pid, signal.SIGSTOP)
    try:
        still_running = first.poll() is None
        second = dasv("features", lst, "-o", out, "-j", "1", "-q")
    finally:
        os.kill(first.pid, signal.SIGCONT)
    first.communicate(timeout=300)
    assert still_running, "the first run ended before it took the lock"
    assert second.code == 1
    assert f"another `dasv features` run (pid {first.pid})" in second.stderr
    assert first.returncode == 0 and len(FeatureStore(out)) == len(copies)
    with StoreLock(out):  # released when the first run ended
        pass


def test_output_that_cannot_be_created(tmp_path, demo_files, dasv):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    res = dasv("features", _list(tmp_path / "a.lst", demo_files[:1]), "-o", blocker / "feats")
    assert res.code == 1 and len(res.stderr.strip().splitlines()) == 1
    assert res.stderr.startswith("dasv: error: cannot create the output directory")


@pytest.mark.skipif(not file_modes_bind_this_process(),
                    reason="root with CAP_DAC_OVERRIDE and without CAP_SETPCAP to drop it ignores modes")
def test_read_only_output(tmp_path, demo_files):
    """A directory the user may not write (0555): as root too (CI), the run drops CAP_DAC_OVERRIDE."""
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        res = run_dasv("features", _list(tmp_path / "a.lst", demo_files[:1]), "-o", ro, held_to_modes=True)
    finally:
        ro.chmod(0o755)
    assert res.code == 1 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert res.stderr.startswith("dasv: error: ") and "permission denied" in res.stderr and str(ro) in res.stderr
    assert not any(ro.iterdir()), "nothing may be written there"


def test_library_use_and_extensionless_paths(tmp_path, demo_files):
    """featurize() without the CLI; a list line without extension means .wav (as the original tool)."""
    audio = tmp_path / "audio"
    audio.mkdir()
    wave = sf.read(str(demo_files[2]), dtype="float32")[0]
    sf.write(audio / "utt.wav", wave, 16000, subtype="PCM_16")
    lst = _list(tmp_path / "l.lst", ["utt"])
    result = featurize(lst, tmp_path / "feats", audio_dir=audio, jobs=1, progress=False)
    assert result.exit_code == 0 and result.stored == 1 and result.failed == []
    store = FeatureStore(tmp_path / "feats")
    assert store.keys() == ["utt"]
    np.testing.assert_allclose(store["utt"], reference_logmel(sf.read(str(audio / "utt.wav"))[0]), atol=TOL)


def test_a_rerun_removes_what_a_killed_writer_left(tmp_path, demo_files):
    """Temporary shards of a killed run (io.atomic's names and the earlier fixed form) go; shards stay."""
    out = tmp_path / "feats"
    assert featurize(_list(tmp_path / "a.lst", demo_files[:1]), out, jobs=1, progress=False).stored == 1
    left = [out / ".shard-00001.h5.tmp", out / ".shard-00001.h5.q8z_0a.tmp", out / ".failed.tsv.x1y2z3.tmp"]
    for p in left:
        p.write_bytes(b"half a shard")
    result = featurize(_list(tmp_path / "b.lst", demo_files[:2]), out, jobs=1, progress=False)
    assert result.stored == 1 and result.skipped == 1
    assert not list_temporary(out) and not any(p.exists() for p in left)
    assert [p.name for p in list_shards(out)] == ["shard-00000.h5", "shard-00001.h5"]



def test_features_start_up_imports_neither_torch_nor_scipy_signal(tmp_path, demo_files):
    """What `dasv features` on one file imports: torch (~6 s at load) and scipy.signal (~1.7 s, only
    reverb needs it) would dominate its start-up."""
    lst = _list(tmp_path / "one.lst", demo_files[:1])
    code = ("import sys\nfrom dasv_cli.cli.app import main\nsys.argv = ['dasv', 'features', sys.argv[1], '-o', "
            "sys.argv[2], '-q']\ntry:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "print(sorted(m for m in ('torch', 'scipy.signal', 'librosa', 'sklearn') if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code, str(lst), str(tmp_path / "feats")], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "[]"
    assert len(FeatureStore(tmp_path / "feats")) == 1


def _flip_bytes_in_the_middle_of_feats(shard: Path, count: int = 16) -> None:
    """Flip `count` bytes inside a chunk of `feats` in the middle of the shard (what bit rot or a bad
    disk does: the file still opens and every value reads, some of them wrong)."""
    import h5py

    with h5py.File(shard, "r") as f:
        ds = f["feats"]
        chunk = ds.id.get_chunk_info(ds.id.get_num_chunks() // 2)
        where = chunk.byte_offset + chunk.size // 2
    with open(shard, "r+b") as fh:
        fh.seek(where)
        data = fh.read(count)
        fh.seek(where)
        fh.write(bytes(b ^ 0xFF for b in data))


def test_a_damaged_shard_is_named_by_verify_and_by_a_rerun(tmp_path, demo_files, dasv):
    import h5py

    lst = _list(tmp_path / "a.lst", demo_files[:6])
    out = tmp_path / "feats"
    first = run_dasv("features", lst, "-o", out, "--jobs", "1", "--shard-frames", "700", "-q")
    assert first.code == 0, first.stderr
    shards = list_shards(out)
    assert len(shards) >= 3
    clean = dasv("inspect", out, "--verify")
    assert clean.code == 0, clean.stderr
    assert f"verified    {len(shards)} shards: {len(shards)} ok, 0 damaged, 0 without checksum" in clean.stdout

    damaged, old = shards[1], shards[2]
    _flip_bytes_in_the_middle_of_feats(damaged)
    with h5py.File(old, "a") as f:  # as written by a dasv from before checksums
        del f.attrs["checksums"]
    res = run_dasv("inspect", out, "--verify")
    assert res.code == 3, res.stderr
    assert f"damaged     {damaged.name}: checksum of feats differs" in res.stdout
    assert f"no checksum {old.name}" in res.stdout
    assert f"{len(shards) - 2} ok, 1 damaged, 1 without checksum" in res.stdout
    assert damaged.name in res.stderr and old.name not in res.stderr
    as_json = json.loads(run_dasv("inspect", out, "--verify", "--json").stdout)["verify"]
    assert [d.split(":")[0] for d in as_json["damaged"]] == [damaged.name] and as_json["no_checksum"] == [old.name]

    rerun = run_dasv("features", _list(tmp_path / "b.lst", demo_files[:7]), "-o", out, "--jobs", "1",
                     "--shard-frames", "700", "-q")
    assert rerun.code == 1
    lines = rerun.stderr.strip().splitlines()
    assert len(lines) == 1 and damaged.name in lines[0] and "damaged" in lines[0], rerun.stderr
    assert list_shards(out) == shards  # nothing written on top of the damage

    damaged.unlink()  # what the message says to do: its utterances are computed again
    healed = run_dasv("features", lst, "-o", out, "--jobs", "1", "--shard-frames", "700", "-q")
    assert healed.code == 0, healed.stderr
    assert dasv("inspect", out, "--verify").code == 0
