"""Room simulation (energy decay against RT60, Kaldi's room ranges) and `dasv rirs` as a user runs it:
N files, reruns that write nothing new, interruption and kill leaving no partial WAV."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import run_dasv, signal_when
from dasv_cli.augment import rirs
from dasv_cli.augment.rirset import LOCK, room_of, slots, write_rirs
from dasv_cli.augment.sources import rirs as rir_source
from dasv_cli.errors import UsageError

RATE = 16000


def _edc_db(h: np.ndarray) -> np.ndarray:
    """Schroeder's backward-integrated energy decay curve, dB re the total, from the direct path on."""
    h = np.asarray(h, dtype=np.float64)[int(np.argmax(np.abs(h))):]
    e = np.cumsum((h * h)[::-1])[::-1]
    return 10.0 * np.log10(np.maximum(e / e[0], 1e-30))


def _t30(h: np.ndarray) -> float:
    """RT60 from the -5..-35 dB stretch of the decay curve (ISO 3382 T30), by a least-squares line."""
    d = _edc_db(h)
    i5, i35 = int(np.argmax(d <= -5.0)), int(np.argmax(d <= -35.0))
    assert i35 > i5 > 0, "the RIR does not decay 35 dB"
    slope = np.polyfit(np.arange(i5, i35) / RATE, d[i5:i35], 1)[0]
    return -60.0 / slope


@pytest.mark.parametrize("dims,rt60", [((4.0, 3.5, 2.8), 0.3), ((7.0, 6.0, 4.0), 0.5)])
def test_a_simulated_room_decays_60_db_in_its_rt60(dims, rt60):
    room = rirs.room_for_rt60(dims, rt60, mic=(2.1, 1.7, 1.3))
    assert room.rt60 == pytest.approx(rt60)
    h = rirs.simulate(room, (3.2, 2.6, 1.6), RATE)
    assert h.dtype == np.float32 and np.abs(h).max() == pytest.approx(1.0)
    assert _t30(h) == pytest.approx(rt60, rel=0.25)
    d = _edc_db(h)
    t60 = int(np.argmax(d <= -60.0)) / RATE
    assert 0.7 * rt60 < t60 < 1.3 * rt60  # 60 dB down in about RT60 seconds
    assert -45.0 < d[int(rt60 * RATE / 2)] < -15.0  # and about halfway there at half of it
    # the image order matters: cut to 3 reflections the tail is lost and the decay is far too fast
    short = rirs.Room(room.size, room.dims, room.absorption, room.mic, 3)
    assert _t30(rirs.simulate(short, (3.2, 2.6, 1.6), RATE)) < 0.5 * rt60


def test_rooms_are_drawn_from_kaldis_ranges():
    rng = np.random.default_rng(3)
    for size, (lo, hi) in rirs.ROOM_SIZES.items():
        rooms = [rirs.draw_room(rng, size) for _ in range(300)]
        dims = np.array([r.dims for r in rooms])
        assert dims[:, :2].min() >= lo and dims[:, :2].max() <= hi
        assert dims[:, :2].min() < lo + 0.5 and dims[:, :2].max() > hi - 0.5
        assert dims[:, 2].min() >= 2.0 and dims[:, 2].max() <= 5.0
        a = np.array([r.absorption for r in rooms])
        assert a.min() >= 0.2 and a.max() <= 0.8 and a.min() < 0.25 and a.max() > 0.75
        for r in rooms[:50]:
            assert 1 <= r.max_order <= rirs.MAX_ORDER
            assert all(0 < m < d for m, d in zip(r.mic, r.dims))
            s = np.array(rirs.draw_source(rng, r))
            assert np.all(s > 0) and np.all(s < np.array(r.dims))
            assert rirs.MIN_DISTANCE <= np.linalg.norm(s - np.array(r.mic)) <= rirs.MAX_DISTANCE


def _wavs(d: Path) -> list[Path]:
    return sorted(d.rglob("*.wav"))


def test_dasv_rirs_writes_n_files_and_a_rerun_writes_nothing(tmp_path):
    out = tmp_path / "RIRS"
    res = run_dasv("rirs", "-o", out, "--count", "7", "--per-room", "2", "--seed", "5", "--json")
    assert res.code == 0, res.stderr
    summary = json.loads(res.stdout)
    assert (summary["count"], summary["written"], summary["skipped"]) == (7, 7, 0)
    files = _wavs(out)
    assert len(files) == 7
    assert [p.relative_to(out).as_posix() for p in files][:3] == [
        "simulated_rirs/largeroom/Room001/Room001-00001.wav",
        "simulated_rirs/largeroom/Room001/Room001-00002.wav",
        "simulated_rirs/mediumroom/Room001/Room001-00001.wav"]
    listed = []
    for lst in summary["lists"]:
        for line in Path(lst).read_text().splitlines():
            f = line.split()
            assert f[0] == "--rir-id" and f[2] == "--room-id"
            listed.append(out.parent / f[4])
    assert sorted(listed) == files
    for f in files:
        h, rate = sf.read(str(f), dtype="float32")
        assert rate == RATE and h.ndim == 1 and np.abs(h).max() == pytest.approx(1.0)
        assert 0.005 * RATE < h.size <= (rirs.MAX_SECONDS + 0.5) * RATE
    info = [line.split() for line in (out / "simulated_rirs" / "smallroom" / "room_info").read_text().splitlines()]
    assert [row[0] for row in info] == ["Room001", "Room002"] and {len(row) for row in info} == {10}
    dims, absorption, rt60 = [float(v) for v in info[0][1:4]], float(info[0][7]), float(info[0][8])
    assert rt60 == pytest.approx(rirs.sabine_rt60(tuple(dims), absorption), abs=1e-3)
    assert [p.name for p in rir_source(out, RATE).files()] == [p.name for p in files]
    stamps = {f: f.stat().st_mtime_ns for f in files}
    again = run_dasv("rirs", "-o", out, "--count", "7", "--per-room", "2", "--seed", "5", "--json")
    assert again.code == 0, again.stderr
    assert (json.loads(again.stdout)["written"], json.loads(again.stdout)["skipped"]) == (0, 7)
    assert {f: f.stat().st_mtime_ns for f in _wavs(out)} == stamps
    # more RIRs later (in-process, the same engine): the first seven are kept as they are
    more = write_rirs(out, 9, seed=5, per_room=2)
    assert (more.written, more.skipped) == (2, 7)
    assert len(_wavs(out)) == 9 and all(f.stat().st_mtime_ns == t for f, t in stamps.items())
    # RIR i is the same for any N, byte for byte (no time stamp in the header)
    fresh = tmp_path / "fresh"
    write_rirs(fresh, 9, seed=5, per_room=2)
    assert [p.relative_to(fresh) for p in _wavs(fresh)] == [p.relative_to(out) for p in _wavs(out)]
    for a, b in zip(_wavs(out), _wavs(fresh)):
        assert a.read_bytes() == b.read_bytes()
    # another seed into the same tree is refused, and nothing is written
    with pytest.raises(UsageError, match="other settings"):
        write_rirs(out, 12, seed=6, per_room=2)
    assert len(_wavs(out)) == 9


def test_the_room_and_source_draws_follow_the_slot():
    s = slots(10, 2)
    assert [(x.size, x.room, x.rir) for x in s[:6]] == [
        ("smallroom", 1, 1), ("mediumroom", 1, 1), ("largeroom", 1, 1),
        ("smallroom", 1, 2), ("mediumroom", 1, 2), ("largeroom", 1, 2)]
    assert (s[6].room, s[6].rir, s[6].rir_id) == (2, 1, "small-Room002-00001")
    assert room_of(1, "smallroom", 1) == room_of(1, "smallroom", 1) != room_of(2, "smallroom", 1)


def _complete(files: list[Path]) -> None:
    for f in files:
        h, _ = sf.read(str(f), dtype="float32")  # every WAV decodes whole: none is partial
        assert h.size > 0 and np.abs(h).max() == pytest.approx(1.0)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_interrupt_or_kill_leaves_no_partial_wav_and_a_rerun_completes(tmp_path, sig):
    out = tmp_path / "R"
    r = signal_when("rirs", "-o", out, "--count", "200", "-q", sig=sig, ready=lambda _: len(_wavs(out)) >= 2)
    if sig != signal.SIGKILL:
        assert r.code == 130, r.stderr
        assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]  # the file in progress was discarded
    else:
        assert r.code == -signal.SIGKILL
    have = _wavs(out)
    assert 2 <= len(have) < 200
    _complete(have)
    if sig != signal.SIGKILL:
        return
    n = len(have) + 4  # a rerun after the kill writes exactly what is missing
    res = run_dasv("rirs", "-o", out, "--count", str(n), "--json")
    assert res.code == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["skipped"] == len(have) and summary["written"] == 4
    assert len(_wavs(out)) == n
    _complete(_wavs(out))


def test_bad_arguments_and_a_busy_tree(tmp_path):
    res = run_dasv("rirs", "-o", tmp_path / "x", "--count", "0")
    assert res.code == 2
    (tmp_path / "file").write_text("")
    res = run_dasv("rirs", "-o", tmp_path / "file", "--count", "1")
    assert res.code == 1 and res.stderr.strip().count("\n") == 0 and "is a file" in res.stderr
    import fcntl

    busy = tmp_path / "busy"
    busy.mkdir()
    with open(busy / LOCK, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        res = run_dasv("rirs", "-o", busy, "--count", "1")
    assert res.code == 1 and "another `dasv rirs`" in res.stderr and not _wavs(busy)
