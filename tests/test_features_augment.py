"""`dasv features --augment`: the stored copies measured (SNR on the mixed waveform, reverb decay), the
same numbers from a rerun, from two jobs, from parts and from a resume mid-augmentation, bad sources as
one-line errors with nothing written, a source failing mid-run in failed.tsv, `dasv inspect` counts,
and `dasv train --augmented` consuming the copies. Ten bundled utterances (5 speakers x 2) and small
generated MUSAN / RIR trees keep it fast."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import TINY_FLAGS, run_inprocess

from dasv_cli.augment.augmenter import Augmenter
from dasv_cli.augment.keys import parse_key
from dasv_cli.augment.mix import fit_length
from dasv_cli.augment.plan import SNR_RANGES
from dasv_cli.dsp.logmel import LogMelConfig
from dasv_cli.errors import UsageError
from dasv_cli.features.augmented import ATTR, AugmentOptions
from dasv_cli.features.compute import features_of
from dasv_cli.features.run import featurize
from dasv_cli.io.audio import read_audio
from dasv_cli.io.lists import read_audio_list
from dasv_cli.io.store.layout import Part, list_shards
from dasv_cli.io.store.reader import FeatureStore

RATE = 16000
SPEC = "reverb,noise:2,music,babble,speed"
COPIES = {"reverb": 1, "noise": 2, "music": 1, "babble": 1, "speed0.9": 1, "speed1.1": 1}  # per file


def _wav(path: Path, data: np.ndarray, subtype: str = "FLOAT") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data, RATE, subtype=subtype)
    return path


def _rir(rt60: float, seconds: float, seed: int, direct: int = 200) -> np.ndarray:
    """Silence, the direct path, then a noise tail whose power falls 60 dB in rt60 seconds."""
    t = np.arange(int(seconds * RATE)) / RATE
    tail = np.random.default_rng(seed).normal(size=t.size) * np.exp(-6.9078 * t / rt60) * 0.3
    tail[0] = 1.0
    return np.concatenate([np.zeros(direct), tail])


def _db(p_signal: float, p_noise: float) -> float:
    return float(10.0 * np.log10(p_signal / p_noise))


def _one_line(text: str) -> str:
    lines = [x for x in text.splitlines() if x.strip()]
    assert len(lines) == 1, text
    return lines[0]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, demo_dir) -> dict:
    """The list (2 utterances of 5 speakers), labels, a MUSAN tree and a RIR tree."""
    root = tmp_path_factory.mktemp("augment-corpus")
    files = sorted(demo_dir.glob("*/*.flac"))
    speakers = sorted({f.parent.name for f in files})[:5]
    rel = [str(f.relative_to(demo_dir)) for s in speakers for f in sorted((demo_dir / s).glob("*.flac"))[:2]]
    (root / "audio.lst").write_text("".join(r + "\n" for r in rel))
    (root / "labels.txt").write_text("".join(f"{r[:-5]} spk{r.split('/')[0]}\n" for r in rel))
    rng = np.random.default_rng(3)
    musan = root / "musan"
    _wav(musan / "noise" / "white.wav", 0.1 * rng.normal(size=4 * RATE))
    brown = np.cumsum(rng.normal(size=RATE))
    _wav(musan / "noise" / "brown.wav", 0.5 * brown / np.abs(brown).max())
    t = np.arange(8 * RATE) / RATE
    _wav(musan / "music" / "chords.wav", 0.1 * sum(np.sin(2 * np.pi * f * t) for f in (220, 277, 330)))
    rirs = root / "rirs" / "simulated_rirs" / "smallroom" / "Room001"
    _wav(rirs / "Room001-00001.wav", _rir(0.3, 0.6, 1))
    _wav(rirs / "Room001-00002.wav", _rir(0.5, 1.0, 2, direct=40))
    return {"root": root, "list": root / "audio.lst", "labels": root / "labels.txt", "audio": demo_dir,
            "musan": musan, "rirs": root / "rirs", "keys": [r[:-5] for r in rel]}


def _options(corpus: dict, spec: str = SPEC, **over) -> AugmentOptions:
    return AugmentOptions(spec, rir_dir=over.pop("rir_dir", corpus["rirs"]),
                          musan_dir=over.pop("musan_dir", corpus["musan"]), **over)


def _run(corpus: dict, out: Path, spec: str = SPEC, **kw):
    options = kw.pop("augment", None) or _options(corpus, spec)
    return featurize(corpus["list"], out, audio_dir=corpus["audio"], jobs=kw.pop("jobs", 1), progress=False,
                     augment=options, **kw)


def _contents(directory: Path) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    with FeatureStore(directory) as store:
        return {k: (store[k], *store.stats(k)) for k in store.keys()}


def _assert_same(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        for x, y in zip(a[key], b[key]):
            assert np.array_equal(x, y), key


@pytest.fixture(scope="module")
def straight(corpus, tmp_path_factory) -> Path:
    """One uninterrupted run, one job: the reference every other way of filling a store must match."""
    out = tmp_path_factory.mktemp("straight") / "feats"
    result = _run(corpus, out)
    assert result.exit_code == 0 and result.stored == 10 and result.copies == 10 * sum(COPIES.values())
    return out


def test_copies_are_counted_per_kind_and_spelled_as_derived_keys(straight, corpus):
    keys = set(_contents(straight))
    expected = set(corpus["keys"])
    for key in corpus["keys"]:
        for kind, n in COPIES.items():
            expected |= {f"{key}#{kind}" + (f"-{c}" if c > 1 else "") for c in range(1, n + 1)}
    assert keys == expected
    for shard in list_shards(straight):
        with h5py.File(shard, "r") as f:
            info = json.loads(f.attrs[ATTR])
        assert info["spec"] == COPIES and info["seed"] == 0
        assert info["sources"]["noise"]["files"] == 2 and info["sources"]["babble"]["files"] == 10


def test_copies_option_and_spec():
    assert AugmentOptions("reverb,noise:3,speed", copies=2).spec() == (
        ("reverb", 2), ("noise", 3), ("speed0.9", 1), ("speed1.1", 1))
    assert AugmentOptions("all").spec() == (("reverb", 1), ("noise", 1), ("music", 1), ("babble", 1))
    with pytest.raises(UsageError, match="unknown augmentation"):
        AugmentOptions("echo").spec()
    with pytest.raises(UsageError, match="--copies"):
        AugmentOptions("noise", copies=0).spec()


def test_stored_copies_are_the_mixes_at_snrs_in_kaldis_ranges(straight, corpus):
    """Each stored noise/music/babble copy is the log-mel of a mix whose SNR, measured on the mixed
    waveform against the clean one, is the planned one and within Kaldi's range."""
    entries = read_audio_list(corpus["list"], corpus["audio"])
    aug = Augmenter(["noise", "music", "babble"], musan_dir=corpus["musan"],
                    babble_pool=[(e.key, str(e.path)) for e in entries], rate=RATE)
    store = _contents(straight)
    cfg = LogMelConfig()
    seen = {k: [] for k in SNR_RANGES}
    for e in entries:
        clean = read_audio(e.path, RATE).wave.astype(np.float64)
        for kind, count in (("noise", 2), ("music", 1), ("babble", 1)):
            for copy in range(1, count + 1):
                key = f"{e.key}#{kind}" + (f"-{copy}" if copy > 1 else "")
                mixed = aug.apply(e.key, clean.astype(np.float32), kind, copy)
                assert np.array_equal(store[key][0], features_of(mixed, RATE, cfg).feats), key
                plan = aug.plan(e.key, kind, copy)
                segs = [fit_length(read_audio(path, RATE).wave.astype(np.float64), clean.size, offset)
                        for path, offset in zip(aug.source_paths(plan), plan.offsets)]
                basis = np.stack([clean, *segs], axis=1)
                m = mixed.astype(np.float64)
                coef, *_ = np.linalg.lstsq(basis, m, rcond=None)
                assert np.mean((m - basis @ coef) ** 2) < 1e-8 * np.mean(m ** 2)  # speech + the sources, nothing else
                gain = coef[0]  # 1 unless the copy was scaled down to stay in [-1, 1]
                lo, hi = SNR_RANGES[kind]
                for b, seg, planned in zip(coef[1:], segs, plan.snrs):
                    snr = _db(np.mean(clean ** 2), (b / gain) ** 2 * np.mean(seg ** 2))
                    assert lo <= planned <= hi and abs(snr - planned) < 0.05, (key, snr, planned)
                snr = _db(np.mean(clean ** 2), np.mean((m / gain - clean) ** 2))  # all sources together
                if kind == "babble":
                    assert 3 <= len(segs) <= 7 and 13.0 - 10 * np.log10(7) - 1.0 <= snr <= 20.0, (key, snr)
                else:
                    assert abs(snr - plan.snrs[0]) < 0.05
                seen[kind].append(snr)
    assert len(seen["noise"]) == 20 and len(set(np.round(seen["noise"], 3))) == 20  # drawn per key and copy


def test_a_reverb_copy_decays_at_the_rooms_rt60(tmp_path):
    """A noise burst then silence: the clean features drop to the floor at once, the reverberant copy's
    fall at 60 dB per RT60 of its room impulse response."""
    rt60 = 0.5
    _wav(tmp_path / "rirs" / "room.wav", _rir(rt60, 1.2, 4))
    burst = np.concatenate([np.random.default_rng(0).normal(size=RATE) * 0.1, np.zeros(int(1.5 * RATE))])
    _wav(tmp_path / "audio" / "burst.wav", burst)
    (tmp_path / "a.lst").write_text("burst.wav\n")
    result = featurize(tmp_path / "a.lst", tmp_path / "f", audio_dir=tmp_path / "audio", progress=False,
                       augment=AugmentOptions("reverb", rir_dir=tmp_path / "rirs"))
    assert result.copies == 1
    with FeatureStore(tmp_path / "f") as store:
        clean, wet = store["burst"].mean(axis=1), store["burst#reverb"].mean(axis=1)
    end = RATE // 160  # the first frame after the burst (10 ms hop)
    assert np.all(clean[end + 1:] == 0.0)  # log(max(1, x)): silence is the floor
    level = wet[end - 10:end - 2].mean()
    frames = np.arange(end + 3, wet.size)
    fit = frames[(wet[frames] < level - 0.3) & (wet[frames] > level - 4.6)]  # from -3 dB to -40 dB
    assert fit.size > 15
    slope = np.polyfit(fit * 0.01, wet[fit], 1)[0]  # natural log of magnitude per second
    assert -6.9078 / slope == pytest.approx(rt60, rel=0.15)
    assert np.all(wet[end + 3:end + 30] > 0.0)  # the tail is there where the clean copy is silent


def test_two_jobs_parts_and_a_rerun_store_the_same_numbers(straight, corpus, tmp_path):
    ref = _contents(straight)
    r = run_inprocess("features", corpus["list"], "-a", corpus["audio"], "-o", tmp_path / "two", "-q", "--jobs", "2",
                      "--augment", "reverb,noise,music,babble,speed",
                      "--rir-dir", corpus["rirs"], "--musan-dir", corpus["musan"])
    assert r.code == 0, r.stderr
    r = run_inprocess("features", corpus["list"], "-a", corpus["audio"], "-o", tmp_path / "two", "-q", "--jobs", "2",
                      "--augment", SPEC, "--rir-dir", corpus["rirs"], "--musan-dir", corpus["musan"], "--json")
    assert r.code == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["jobs"] == 2 and summary["copies"] == 10 and summary["stored"] == 0  # noise-2 only
    _assert_same(_contents(tmp_path / "two"), ref)
    for i in (2, 1):  # parts, the second first: babble draws from the whole list in every part
        result = _run(corpus, tmp_path / "parts", part=Part(i, 2))
        assert result.listed == 5 and result.copies == 5 * 7
    _assert_same(_contents(tmp_path / "parts"), ref)
    again = _run(corpus, straight)
    assert (again.stored, again.copies, again.skipped) == (0, 0, 10)


def test_a_resume_mid_augmentation_stores_what_a_straight_run_does(straight, corpus, tmp_path):
    out = tmp_path / "feats"
    first = read_audio_list(corpus["list"], corpus["audio"])[:6]
    assert featurize(first, out, progress=False).stored == 6  # clean only, part of the list
    grown = _run(corpus, out, "reverb")
    assert (grown.stored, grown.copies) == (4, 10)  # the 4 clean files not stored yet, every reverb copy
    cut = _run(corpus, out, shard_frames=2000)
    assert (cut.stored, cut.copies) == (0, 60)
    # as if killed while writing its last shard: that shard never got its final name
    last = cut.shards[-1]
    lost = set(_contents(out))
    last.rename(last.parent / f".{last.name}.x1y2z3.tmp")
    lost -= set(_contents(out))
    assert lost and all(parse_key(k) is not None for k in lost)
    partial = {parse_key(k).clean for k in lost}
    assert all(k in _contents(out) for k in partial)  # clean stored, some copies missing
    resumed = _run(corpus, out)
    assert (resumed.stored, resumed.copies, resumed.skipped) == (0, len(lost), 10 - len(partial))
    assert not any(p.name.endswith(".tmp") for p in out.iterdir())
    _assert_same(_contents(out), _contents(straight))


@pytest.mark.parametrize("case", ["no musan", "no noise files", "no music dir", "corrupt noise", "empty noise",
                                  "no rir dir", "empty rir dir", "derived key in list"])
def test_bad_sources_are_one_line_errors_and_nothing_is_written(corpus, tmp_path, case):
    musan, rirs = tmp_path / "musan", tmp_path / "rirs"
    shutil.copytree(corpus["musan"], musan)
    shutil.copytree(corpus["rirs"], rirs)
    listed = corpus["list"]
    kinds, expect = "noise,reverb", ""
    if case == "no musan":
        shutil.rmtree(musan)
        expect = f"{musan}: no such directory (MUSAN directory)"
    elif case == "no noise files":
        for p in (musan / "noise").iterdir():
            p.unlink()
        expect = f"{musan / 'noise'}: no audio files (MUSAN noise)"
    elif case == "no music dir":
        shutil.rmtree(musan / "music")
        kinds, expect = "music", f"{musan}: no music/ directory"
    elif case == "corrupt noise":
        (musan / "noise" / "bad.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt not audio at all")
        expect = f"{musan / 'noise' / 'bad.wav'}: not readable audio"
    elif case == "empty noise":
        _wav(musan / "noise" / "empty.wav", np.zeros(0))
        expect = f"{musan / 'noise' / 'empty.wav'}: empty, no samples (MUSAN noise)"
    elif case == "no rir dir":
        shutil.rmtree(rirs)
        expect = f"{rirs}: no such directory (RIR directory)"
    elif case == "empty rir dir":
        shutil.rmtree(rirs / "simulated_rirs" / "smallroom")
        expect = f"{rirs}: no audio files (room impulse response)"
    else:
        listed = tmp_path / "a.lst"
        listed.write_text(corpus["list"].read_text() + "x/clip#reverb.flac\n")
        expect = f"{listed}:11: key 'x/clip#reverb' reads as an augmented copy"
    r = run_inprocess("features", listed, "-a", corpus["audio"], "-o", tmp_path / "out", "--augment", kinds,
                      "--musan-dir", musan, "--rir-dir", rirs)
    assert r.code == 1, r.stderr
    assert expect in _one_line(r.stderr)
    assert not (tmp_path / "out").exists()


def test_missing_options_are_usage_errors(corpus, tmp_path):
    base = ("features", corpus["list"], "-a", corpus["audio"], "-o", tmp_path / "out")
    for args, expect in ((("--augment", "reverb"), "reverb needs a directory of room impulse responses"),
                         (("--augment", "noise"), "noise needs the MUSAN directory"),
                         (("--augment", "echo"), "unknown augmentation 'echo'"),
                         (("--rir-dir", corpus["rirs"]), "go with --augment"),
                         (("--augment", "speed:2"), "one is all there is")):
        r = run_inprocess(*base, *args)
        assert r.code == 2 and expect in _one_line(r.stderr), (args, r.stderr)
    assert not (tmp_path / "out").exists()


def test_a_source_that_fails_mid_run_fails_only_the_copies_that_drew_it(corpus, tmp_path):
    musan = tmp_path / "musan"
    _wav(musan / "noise" / "a-good.wav", 0.1 * np.random.default_rng(1).normal(size=2 * RATE))
    silent = _wav(musan / "noise" / "b-silent.wav", np.zeros(RATE))  # a header like any other: found late
    args = ("features", corpus["list"], "-a", corpus["audio"], "-o", tmp_path / "f", "-q",
            "--augment", "noise:3", "--musan-dir", musan)
    r = run_inprocess(*args)
    assert r.code == 3, r.stderr
    entries = read_audio_list(corpus["list"], corpus["audio"])
    aug = Augmenter(["noise"], musan_dir=musan, rate=RATE)
    bad = {f"{e.key}#noise" + (f"-{c}" if c > 1 else "") for e in entries for c in (1, 2, 3)
           if aug.plan(e.key, "noise", c).sources == (1,)}
    assert 0 < len(bad) < 30
    rows = [line.split("\t") for line in (tmp_path / "f" / "failed.tsv").read_text().splitlines()[1:]]
    assert {row[1].split(":")[0].removeprefix("copy ") for row in rows} == bad
    assert all(f"{silent}: silent" in reason for _, reason in rows)
    assert {row[0] for row in rows} <= {str(e.path) for e in entries}
    assert set(_contents(tmp_path / "f")) == ({e.key for e in entries}
                                              | {f"{e.key}#noise" + (f"-{c}" if c > 1 else "")
                                                 for e in entries for c in (1, 2, 3)}) - bad
    again = run_inprocess(*args, "--json")
    assert again.code == 3 and json.loads(again.stdout)["copies"] == 0 and json.loads(again.stdout)["failed"] == len(bad)


def test_seeds_and_corpora_of_stored_copies_are_kept(corpus, tmp_path):
    out = tmp_path / "f"
    _run(corpus, out, "noise")
    moved = tmp_path / "same-noise-elsewhere"
    shutil.copytree(corpus["musan"], moved)
    assert _run(corpus, out, augment=_options(corpus, "noise:2", musan_dir=moved)).copies == 10
    other = tmp_path / "other"
    _wav(other / "noise" / "pink.wav", 0.1 * np.random.default_rng(9).normal(size=RATE))
    with pytest.raises(UsageError, match=r"holds noise copies made from .*musan/noise \(2 files\)"):
        _run(corpus, out, augment=_options(corpus, "noise:3", musan_dir=other))
    with pytest.raises(UsageError, match="augmentation seed 0, this run's is 5"):
        _run(corpus, out, augment=_options(corpus, "noise:3", seed=5))
    assert _run(corpus, out, augment=_options(corpus, "reverb", seed=5)).copies == 10  # other kinds: free
    with pytest.raises(UsageError, match="another feature recipe"):  # the recipe check is the same with copies
        _run(corpus, out, "reverb", cfg=LogMelConfig(n_mels=40))


def test_inspect_counts_clean_and_augmented_copies(straight):
    r = run_inprocess("inspect", straight, "--json")
    assert r.code == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["utterances"] == 80 and info["clean"] == 10 and info["augmented"] == 70
    assert info["augmented_kinds"] == {k: 10 * n for k, n in COPIES.items()}
    assert [spec["spec"] for spec in info["augment"]] == [COPIES]
    text = run_inprocess("inspect", straight).stdout
    assert "utterances  80 (10 clean, 70 augmented copies)" in text
    assert "augmented   reverb 10, noise 20, music 10, babble 10, speed0.9 10, speed1.1 10" in text
    assert "babble the list (10 files)" in text


def test_train_augmented_draws_the_stored_copies(straight, corpus, tmp_path):
    r = run_inprocess("train", "--train-labels", corpus["labels"], "--features", straight, *TINY_FLAGS,
                      "--augmented", "--max-steps", "3", "-o", tmp_path / "run")
    assert r.code == 0, r.stderr
    said = " ".join(r.stderr.split())
    assert "--augmented: 70 stored copies (babble, music, noise, reverb, speed0.9, speed1.1) join 10 clean" in said
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert ckpt["step"] == 3
    assert ckpt["model"]["am_softmax.weight"].shape[0] == 15  # 5 speakers, and each speed a new one
