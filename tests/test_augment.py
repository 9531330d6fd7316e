"""The augmentation engine measured on its output: SNRs on the mixed waveform, reverb alignment and
level, babble from other utterances, speed by the factor, seeded plans, derived keys, bad sources.

MUSAN and RIRS_NOISES trees are built here from the bundled speech and generated noise."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from dasv_cli.augment import keys
from dasv_cli.augment.augmenter import Augmenter
from dasv_cli.augment.mix import add_at_snrs, fit_length
from dasv_cli.augment.plan import SNR_RANGES, make_plan
from dasv_cli.augment.sources import musan, rirs
from dasv_cli.errors import AugmentError, InputError, UsageError
from dasv_cli.io.audio import AudioError, read_audio
from dasv_cli.io.lists import read_audio_list, read_train_labels, read_trials

RATE = 16000


def _db(p_signal: float, p_noise: float) -> float:
    return 10.0 * np.log10(p_signal / p_noise)


def _p(x: np.ndarray) -> float:
    x = np.asarray(x, dtype=np.float64)
    return float(np.mean(x * x))


def _wav(path: Path, data: np.ndarray, rate: int = RATE, subtype: str = "PCM_16") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data, rate, subtype=subtype)
    return path


def _rir(direct: int, length: int, rt60: float, seed: int) -> np.ndarray:
    """A synthetic RIR: silence, the direct path at `direct`, then an exponentially decaying tail."""
    rng = np.random.default_rng(seed)
    t = np.arange(length - direct) / RATE
    tail = rng.normal(size=t.size) * np.exp(-6.9 * t / rt60) * 0.1
    h = np.zeros(length)
    h[direct:] = tail
    h[direct] = 1.0
    return h


@pytest.fixture(scope="module")
def pool(demo_dir: Path) -> list[tuple[str, Path]]:
    files = sorted(demo_dir.glob("*/*.flac"))
    return [(str(f.relative_to(demo_dir).with_suffix("")), f) for f in files]


@pytest.fixture(scope="module")
def speech(pool) -> tuple[str, np.ndarray]:
    key, path = pool[3]  # 1688-142285-0003, 5 s
    return key, read_audio(path, RATE).wave


@pytest.fixture(scope="module")
def musan_dir(tmp_path_factory, pool) -> Path:
    """musan/{noise,music,speech}/... as the tarball unpacks (under one `musan` folder)."""
    root = tmp_path_factory.mktemp("corpora")
    rng = np.random.default_rng(7)
    m = root / "musan"
    _wav(m / "noise" / "free-sound" / "noise-free-sound-0000.wav", 0.1 * rng.normal(size=3 * RATE))
    brown = np.cumsum(rng.normal(size=RATE // 2))  # 0.5 s: shorter than any utterance, so repeated
    _wav(m / "noise" / "sound-bible" / "noise-sound-bible-0000.wav", 0.5 * brown / np.abs(brown).max())
    t = np.arange(9 * RATE) / RATE
    music = sum(np.sin(2 * np.pi * f * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 0.5 * t + f)) for f in (220, 277, 330))
    _wav(m / "music" / "fma" / "music-fma-0000.wav", 0.2 * music)
    for key, path in pool[:3]:
        _wav(m / "speech" / "librivox" / (Path(key).name + ".wav"), read_audio(path).wave)
    (m / "noise" / "free-sound" / "ANNOTATIONS").write_text("not audio\n")
    return root


@pytest.fixture(scope="module")
def rir_dir(tmp_path_factory) -> Path:
    """RIRS_NOISES with simulated_rirs/ and real_rirs_isotropic_noises/ (a rir_list and a noise)."""
    root = tmp_path_factory.mktemp("rirs") / "RIRS_NOISES"
    sim = root / "simulated_rirs" / "smallroom" / "Room001"
    _wav(sim / "Room001-00001.wav", _rir(300, 6000, 0.3, 1), subtype="FLOAT")
    _wav(sim / "Room001-00002.wav", _rir(40, 4000, 0.2, 2), subtype="FLOAT")
    (sim / ".Room001-00003.wav.abc.tmp").write_bytes(b"partial")  # a killed writer's temporary
    real = root / "real_rirs_isotropic_noises"
    two = np.stack([_rir(100, 5000, 0.4, 3), _rir(160, 5000, 0.4, 4)], axis=1)  # two microphones
    _wav(real / "air_type1_air_binaural_booth_0_1_1.wav", two, subtype="FLOAT")
    _wav(real / "RVB2014_type1_noise_largeroom1_1.wav", np.random.default_rng(5).normal(size=RATE) * 0.1)
    (real / "rir_list").write_text("--rir-id air1 --room-id air_booth "
                                   "RIRS_NOISES/real_rirs_isotropic_noises/air_type1_air_binaural_booth_0_1_1.wav\n")
    return root


@pytest.fixture(scope="module")
def aug(musan_dir, rir_dir, pool) -> Augmenter:
    a = Augmenter(keys.KINDS, rir_dir=rir_dir, musan_dir=musan_dir, babble_pool=pool, seed=11, rate=RATE)
    assert a.check() == {"reverb": 3, "noise": 2, "music": 1, "babble": len(pool)}
    return a


# ---- keys -------------------------------------------------------------------------------------

def test_derived_keys_round_trip_and_refuse_lookalikes():
    k = "id10270/x6uYqmx31kE/00001"
    assert keys.derive_key(k, "reverb") == k + "#reverb"
    assert keys.derive_key(k, "music", 2) == k + "#music-2"
    for kind in keys.KINDS:
        for copy in (1, 2, 13):
            parsed = keys.parse_key(keys.derive_key(k, kind, copy))
            assert parsed == keys.AugKey(k, kind, copy)
            assert parsed.key == keys.derive_key(k, kind, copy)
    for clean in (k, "a#b", "a#reverb-1", "#reverb", "a#reverbs", "a#noise-0", "a#speed1.0", "dir#music/x"):
        assert keys.parse_key(clean) is None, clean
        assert keys.clean_key(clean) == clean
    assert keys.clean_key("a#b#noise-3") == "a#b"
    keys.check_clean_key("a#b")
    with pytest.raises(InputError, match=r"list.txt:4: key 'take#reverb' reads as an augmented copy"):
        keys.check_clean_key("take#reverb", "list.txt:4")
    with pytest.raises(UsageError):
        keys.derive_key(k, "echo")


def test_derived_keys_survive_every_list_syntax(tmp_path):
    """`#` inside a key is no comment: labels, trials and audio lists keep derived keys whole."""
    a, b = "spk1/utt1#reverb", "spk2/utt9#music-2"
    (tmp_path / "labels.txt").write_text(f"{a} 0\n# a comment\n{b} 1\n")
    assert read_train_labels(tmp_path / "labels.txt").keys == [a, b]
    (tmp_path / "trials.txt").write_text(f"1 {a} {b}\n")
    t = read_trials(tmp_path / "trials.txt")
    assert (t.key1, t.key2) == ([a], [b])
    (tmp_path / "audio.lst").write_text(f"{a}.wav\n")
    assert read_audio_list(tmp_path / "audio.lst")[0].key == a


def test_spec_and_speaker_classes():
    assert keys.parse_spec("all") == (("reverb", 1), ("noise", 1), ("music", 1), ("babble", 1))
    assert keys.parse_spec("speed,music:2, reverb") == (("reverb", 1), ("music", 2), ("speed0.9", 1), ("speed1.1", 1))
    assert [a.key for a in keys.derived_keys("u", (("music", 2),))] == ["u#music", "u#music-2"]
    for bad in ("echo", "music:0", "music:x", "", "speed:2"):
        with pytest.raises(UsageError):
            keys.parse_spec(bad)
    speeds = keys.speeds_in(["reverb", "speed1.1", "speed0.9"])
    assert speeds == ("speed0.9", "speed1.1") and keys.num_classes(5, speeds) == 15
    assert [keys.augmented_label(3, kind, 5, speeds) for kind in ("reverb", "speed0.9", "speed1.1")] == [3, 8, 13]
    assert keys.augmented_label(3, "speed1.1", 5, ("speed1.1",)) == 8
    labels = {keys.augmented_label(lab, kind, 5, speeds) for lab in range(5) for kind in ("noise",) + speeds}
    assert labels == set(range(15))  # every class used once per (speaker, factor): 0..N-1 as training needs
    assert keys.augmented_speaker("alice", "speed0.9") == "alice#speed0.9"
    assert keys.augmented_speaker("alice", "babble") == "alice"


# ---- SNR, babble, level -------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["noise", "music"])
def test_noise_and_music_land_at_the_planned_snr(aug, speech, kind):
    key, wave = speech
    lo, hi = SNR_RANGES[kind]
    for copy in (1, 2, 3):
        plan = aug.plan(key, kind, copy)
        out = aug.apply(key, wave, kind, copy)
        assert out.dtype == np.float32 and out.shape == wave.shape
        assert np.abs(out).max() <= 1.0
        snr = _db(_p(wave), _p(out.astype(np.float64) - wave))
        assert lo <= plan.snrs[0] <= hi
        assert abs(snr - plan.snrs[0]) < 0.1, (snr, plan)


def test_snr_draws_cover_kaldi_ranges():
    for kind, (lo, hi) in SNR_RANGES.items():
        snrs = np.concatenate([make_plan(1, f"k{i}", kind, 1, 50, own=0).snrs for i in range(400)])
        assert snrs.min() >= lo and snrs.max() <= hi
        assert snrs.min() < lo + 0.5 and snrs.max() > hi - 0.5  # the whole range is used


def test_babble_is_other_utterances_each_at_its_snr(aug, speech, pool):
    key, wave = speech
    own = [k for k, _ in pool].index(key)
    for copy in (1, 2):
        plan = aug.plan(key, "babble", copy)
        assert 3 <= len(plan.sources) <= 7 and own not in plan.sources
        assert len(set(plan.sources)) == len(plan.sources)
        out = aug.apply(key, wave, "babble", copy).astype(np.float64)
        residual = out - wave
        # the residual is exactly a weighted sum of the planned talkers (least squares leaves nothing)
        segs = np.stack([fit_length(read_audio(pool[i][1]).wave, wave.size, o).astype(np.float64)
                         for i, o in zip(plan.sources, plan.offsets)], axis=1)
        gains, *_ = np.linalg.lstsq(segs, residual, rcond=None)
        assert _p(residual - segs @ gains) < 1e-6 * _p(residual)
        for g, seg, snr in zip(gains, segs.T, plan.snrs):
            assert 13.0 <= snr <= 20.0
            assert abs(_db(_p(wave), g * g * _p(seg)) - snr) < 0.1
        # and not the utterance itself: it is uncorrelated with the residual beyond chance
        assert abs(np.corrcoef(residual, wave)[0, 1]) < 0.1
    for k, _ in pool:  # over the whole list, a key never babbles with itself
        idx = [kk for kk, _ in pool].index(k)
        assert idx not in aug.plan(k, "babble").sources


def test_babble_needs_three_other_utterances(pool):
    small = Augmenter(["babble"], babble_pool=pool[:3], rate=RATE)
    with pytest.raises(AugmentError, match="at least 3 other utterances"):
        small.check()
    Augmenter(["babble"], babble_pool=pool[:4], rate=RATE).check()


def test_loud_copies_are_scaled_not_clipped(aug, speech):
    key, wave = speech
    loud = (wave / np.abs(wave).max()).astype(np.float32)
    copy = min(range(1, 40), key=lambda c: aug.plan(key, "noise", c).snrs[0])  # the noisiest copy
    plan = aug.plan(key, "noise", copy)
    out = aug.apply(key, loud, "noise", copy).astype(np.float64)
    noise = fit_length(read_audio(aug.source_paths(plan)[0]).wave, loud.size, plan.offsets[0])
    unlimited = add_at_snrs(loud, [noise], plan.snrs)
    assert np.abs(unlimited).max() > 1.0 and np.abs(out).max() == pytest.approx(1.0, abs=1e-6)
    ratio = unlimited / np.abs(unlimited).max()
    np.testing.assert_allclose(out, ratio, atol=1e-6)  # one gain for the whole copy: SNR kept


# ---- reverb ----------------------------------------------------------------------------------

def test_reverb_keeps_length_alignment_and_level(aug, speech, rir_dir):
    key, wave = speech
    clicks = np.zeros(5 * RATE, dtype=np.float32)
    where = np.arange(1000, clicks.size - 2000, 8000)
    clicks[where] = 0.5
    seen = set()
    for copy in range(1, 12):
        plan = aug.plan(key, "reverb", copy)
        path = aug.source_paths(plan)[0]
        seen.add(path.name)
        out = aug.apply(key, wave, "reverb", copy).astype(np.float64)
        assert out.shape == wave.shape
        assert _p(out) == pytest.approx(_p(wave), rel=1e-3)
        assert np.corrcoef(out, wave)[0, 1] < 0.9  # it did reverberate
        echo = np.abs(aug.apply(key, clicks, "reverb", copy))  # the same plan: plans follow the key
        assert echo.shape == clicks.shape
        for w in where:  # each click's direct sound is where the click was, nothing before it
            window = echo[w - 500: w + 4000]
            assert int(np.argmax(window)) == 500, path
            assert window[:500].max() < 1e-6 * window.max()
    assert "RVB2014_type1_noise_largeroom1_1.wav" not in seen  # isotropic noise is not an RIR
    assert len(seen) == 3


def test_a_pure_delay_rir_gives_the_clean_utterance_back(tmp_path, speech):
    key, wave = speech
    h = np.zeros(2000)
    h[777] = 0.5
    _wav(tmp_path / "r" / "delay.wav", h, subtype="FLOAT")
    out = Augmenter(["reverb"], rir_dir=tmp_path / "r", rate=RATE).apply(key, wave, "reverb")
    np.testing.assert_allclose(out, wave, atol=1e-6)


# ---- speed -----------------------------------------------------------------------------------

@pytest.mark.parametrize("kind,factor", [("speed0.9", 0.9), ("speed1.1", 1.1)])
def test_speed_changes_duration_and_pitch_by_the_factor(aug, speech, kind, factor):
    key, wave = speech
    out = aug.apply(key, wave, kind)
    assert abs(out.size - wave.size / factor) <= 1
    t = np.arange(2 * RATE) / RATE
    tone = (0.5 * np.sin(2 * np.pi * 1000.0 * t)).astype(np.float32)
    shifted = aug.apply("tone", tone, kind)
    spectrum = np.abs(np.fft.rfft(shifted * np.hanning(shifted.size)))
    peak_hz = np.argmax(spectrum) * RATE / shifted.size
    assert abs(peak_hz - 1000.0 * factor) < 2.0


# ---- determinism -----------------------------------------------------------------------------

def test_same_key_same_copy_different_keys_differ(aug, musan_dir, rir_dir, pool, speech):
    key, wave = speech
    again = Augmenter(keys.KINDS, rir_dir=rir_dir, musan_dir=musan_dir, babble_pool=pool, seed=11, rate=RATE)
    other_seed = Augmenter(["noise"], musan_dir=musan_dir, seed=12, rate=RATE)
    for kind in ("reverb", "noise", "music", "babble"):
        a = aug.apply(key, wave, kind)
        np.testing.assert_array_equal(a, again.apply(key, wave, kind))
        assert not np.array_equal(a, aug.apply(key, wave, kind, 2))
        assert aug.plan(key, kind) != aug.plan(pool[0][0], kind)
    assert aug.plan(key, "noise").snrs != other_seed.plan(key, "noise").snrs
    plans = {aug.plan(f"utt{i}", "noise").snrs for i in range(50)}
    assert len(plans) == 50


def test_plans_do_not_depend_on_the_process(aug, speech):
    """A fresh interpreter with another hash seed draws the same numbers (no Python hash())."""
    key, _ = speech
    code = ("from dasv_cli.augment.plan import make_plan; "
            f"p = make_plan(11, {key!r}, 'babble', 2, 40, own=3); print(repr((p.sources, p.snrs, p.offsets)))")
    env = dict(os.environ, PYTHONHASHSEED="4242")
    got = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    p = make_plan(11, key, "babble", 2, 40, own=3)
    assert got.strip() == repr((p.sources, p.snrs, p.offsets))


def test_the_engine_pickles_for_worker_processes(aug, speech):
    key, wave = speech
    clone = pickle.loads(pickle.dumps(aug))
    for kind in ("reverb", "music", "babble"):
        np.testing.assert_array_equal(clone.apply(key, wave, kind), aug.apply(key, wave, kind))
    got = dict(aug.copies(key, wave, keys.parse_spec("reverb,music:2")))
    assert list(got) == [f"{key}#reverb", f"{key}#music", f"{key}#music-2"]
    np.testing.assert_array_equal(got[f"{key}#music-2"], aug.apply(key, wave, "music", 2))


# ---- sources and bad inputs ------------------------------------------------------------------

def test_layouts_are_read_as_they_come(musan_dir, rir_dir):
    names = [p.name for p in rirs(rir_dir.parent, RATE).files()]  # the folder above RIRS_NOISES works too
    assert names == ["Room001-00001.wav", "Room001-00002.wav", "air_type1_air_binaural_booth_0_1_1.wav"]
    assert [p.parent.name for p in musan(musan_dir, "noise", RATE).files()] == ["free-sound", "sound-bible"]
    assert len(musan(musan_dir / "musan", "speech", RATE)) == 3
    path, first = rirs(rir_dir, RATE).load(2)
    np.testing.assert_allclose(first, sf.read(str(path), dtype="float32")[0][:, 0])  # an array RIR: channel 1
    _, mixed = musan(musan_dir, "noise", RATE).load(0)
    assert mixed.ndim == 1


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_bad_sources_are_one_line_errors_naming_the_file(tmp_path, speech):
    key, wave = speech
    noise_dir = tmp_path / "m" / "noise"
    noise_dir.mkdir(parents=True)
    (tmp_path / "m" / "music").mkdir()
    with pytest.raises(AugmentError) as e:
        Augmenter(["noise"], musan_dir=tmp_path / "m", rate=RATE).check()
    assert str(noise_dir) in _one_line(e) and "no audio files" in str(e.value)
    with pytest.raises(AugmentError) as e:
        Augmenter(["noise"], musan_dir=tmp_path / "nowhere", rate=RATE)
    assert "nowhere: no such directory" in _one_line(e)
    with pytest.raises(AugmentError, match="no speech/ directory|no noise/ directory"):
        musan(tmp_path / "m", "speech", RATE)
    cases = {
        "corrupt.wav": b"RIFF\x24\x00\x00\x00WAVEfmt garbage that is not audio",
        "empty.wav": None,
        "silent.wav": np.zeros(RATE),
    }
    for name, content in cases.items():
        for old in noise_dir.iterdir():
            old.unlink()
        path = noise_dir / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            _wav(path, np.zeros(0) if content is None else content)
        a = Augmenter(["noise"], musan_dir=tmp_path / "m", rate=RATE)
        with pytest.raises(AugmentError) as e:
            a.apply(key, wave, "noise")
        assert not isinstance(e.value, AudioError)  # the corpus is at fault, not the utterance
        assert _one_line(e).startswith(str(path)), str(e.value)
    empty = tmp_path / "E" / "simulated_rirs"
    empty.mkdir(parents=True)
    with pytest.raises(AugmentError) as e:
        Augmenter(["reverb"], rir_dir=tmp_path / "E", rate=RATE).check()
    assert _one_line(e).startswith(f"{tmp_path / 'E'}: no audio files")
    _wav(empty / "Room001-00001.wav", np.zeros(800), subtype="FLOAT")
    with pytest.raises(AugmentError) as e:
        Augmenter(["reverb"], rir_dir=tmp_path / "E", rate=RATE).apply(key, wave, "reverb")
    assert _one_line(e).startswith(f"{empty / 'Room001-00001.wav'}: silent")
    real = tmp_path / "R" / "real_rirs_isotropic_noises"
    real.mkdir(parents=True)
    (real / "rir_list").write_text("\n--rir-id x --room-id y RIRS_NOISES/real_rirs_isotropic_noises/gone.wav\n")
    with pytest.raises(AugmentError) as e:
        Augmenter(["reverb"], rir_dir=tmp_path / "R", rate=RATE).check()
    assert _one_line(e).startswith(f"{real / 'rir_list'}:2: ") and "gone.wav: no such file" in str(e.value)


def test_missing_sources_are_usage_errors(pool):
    with pytest.raises(UsageError, match="reverb needs"):
        Augmenter(["reverb"])
    with pytest.raises(UsageError, match="music needs the MUSAN"):
        Augmenter(["music"])
    with pytest.raises(UsageError, match="babble needs"):
        Augmenter(["babble"], babble_pool=[])
    with pytest.raises(UsageError, match="was not set up"):
        Augmenter(["babble"], babble_pool=pool).apply("k", np.zeros(10, np.float32), "noise")
