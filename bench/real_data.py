"""Data for bench/train_real.py: features of ../shared/data, trials on unseen speakers, augmented copies.

Training: all 28 speakers of librispeech-train-clean-5-lite (688 utterances). Verification: the 10
unseen speakers of librispeech-test-other-10x10 (100 utterances, every pair: 4,950 trials, 450 of them
same-speaker). Both sets go into one feature store.

Augmented copies (what `dasv features --augment` stores: the derived keys `KEY#KIND`) are made here
with dasv_cli.augment.augmenter.Augmenter from sources that never touch the verification speakers:
- reverb: RIRs simulated by the image method (dasv_cli.augment.rirset.write_rirs, Kaldi's room draws);
- noise: generated coloured noise (white, pink, brown, band-limited), a MUSAN-like `noise/` tree;
- music: generated tone mixtures (random chords with harmonics and note changes), as `music/`;
- babble: 3-7 other *training* utterances (the Augmenter never uses the utterance itself).
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import numpy as np

RATE = 16000
KINDS = ("reverb", "noise", "music", "babble")


def coloured_noise(rng: np.random.Generator, seconds: float, exponent: float) -> np.ndarray:
    """Noise with a 1/f^exponent power spectrum (0 white, 1 pink, 2 brown), peak 0.5."""
    n = int(seconds * RATE)
    spec = rng.standard_normal(n // 2 + 1) + 1j * rng.standard_normal(n // 2 + 1)
    f = np.fft.rfftfreq(n, 1.0 / RATE)
    f[0] = f[1]
    x = np.fft.irfft(spec / f ** (exponent / 2.0), n)
    return (0.5 * x / np.max(np.abs(x))).astype(np.float32)


def band_noise(rng: np.random.Generator, seconds: float) -> np.ndarray:
    """White noise kept between two random frequencies (fans, engines, hiss)."""
    n = int(seconds * RATE)
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / RATE)
    lo = rng.uniform(50, 2000)
    hi = lo + rng.uniform(200, 5000)
    spec[(f < lo) | (f > hi)] = 0
    x = np.fft.irfft(spec, n)
    return (0.5 * x / np.max(np.abs(x))).astype(np.float32)


def tones(rng: np.random.Generator, seconds: float) -> np.ndarray:
    """'Music': a sequence of chords (2-4 notes with harmonics), each 0.2-1 s, with a decay envelope."""
    n = int(seconds * RATE)
    out = np.zeros(n, dtype=np.float64)
    pos = 0
    while pos < n:
        length = min(int(rng.uniform(0.2, 1.0) * RATE), n - pos)
        t = np.arange(length) / RATE
        env = np.exp(-t * rng.uniform(0.5, 4.0))
        for _ in range(rng.integers(2, 5)):
            f0 = 110.0 * 2 ** (rng.integers(0, 36) / 12.0)
            for h in range(1, 5):
                out[pos:pos + length] += env * np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 6.3)) / h ** 1.5
        pos += length
    return (0.5 * out / np.max(np.abs(out))).astype(np.float32)


def write_sources(root: Path, count: int = 40, seed: int = 7) -> Path:
    """A MUSAN-like tree root/{noise,music}/ of generated 10 s files (cached)."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    for part in ("noise", "music"):
        (root / part).mkdir(parents=True, exist_ok=True)
    for i in range(count):
        path = root / "noise" / f"noise-{i:03d}.wav"
        if not path.exists():
            kind = i % 4
            x = band_noise(rng, 10.0) if kind == 3 else coloured_noise(rng, 10.0, float(kind))
            sf.write(path, x, RATE, subtype="PCM_16")
        path = root / "music" / f"music-{i:03d}.wav"
        if not path.exists():
            sf.write(path, tones(rng, 10.0), RATE, subtype="PCM_16")
    return root


def prepare(src_train: Path, src_test: Path, work: Path, jobs: int) -> dict:
    """Features of both sets (cached), labels of the 28 training speakers, all-pairs test trials."""
    from dasv_cli.features.run import featurize

    work.mkdir(parents=True, exist_ok=True)
    lines, train_keys, test_keys = [], [], []
    for prefix, src, keys in (("train", src_train, train_keys), ("test", src_test, test_keys)):
        for p in sorted(src.glob("*/*.flac")):
            rel = p.relative_to(src)
            key = f"{prefix}/{rel.with_suffix('').as_posix()}"
            keys.append(key)
            lines.append(f"{key}\t{p}\n")
    (work / "audio.lst").write_text("".join(lines))
    t0 = time.time()
    featurize(work / "audio.lst", work / "feats", jobs=jobs, progress=False)
    print(f"features: {len(lines)} files in {work / 'feats'} ({time.time() - t0:.1f} s; cached after the first run)")
    (work / "labels.txt").write_text("".join(f"{k} spk{k.split('/')[1]}\n" for k in train_keys))
    trials = [f"{int(a.split('/')[1] == b.split('/')[1])} {a} {b}\n" for a, b in itertools.combinations(test_keys, 2)]
    (work / "trials.txt").write_text("".join(trials))
    targets = sum(t.startswith("1") for t in trials)
    speakers = len({k.split("/")[1] for k in train_keys}), len({k.split("/")[1] for k in test_keys})
    print(f"train: {len(train_keys)} utterances of {speakers[0]} speakers; verify: {len(test_keys)} utterances of "
          f"{speakers[1]} unseen speakers, {len(trials)} trials ({targets} same-speaker)")
    paths = dict(line.rstrip("\n").split("\t") for line in lines)
    return {"feats": work / "feats", "labels": work / "labels.txt", "trials": work / "trials.txt",
            "train": [(k, paths[k]) for k in train_keys]}


def augment(data: dict, work: Path, rirs: int = 200, seed: int = 3) -> int:
    """Store the reverb/noise/music/babble copy of every training utterance (skips those stored)."""
    from dasv_cli.augment.augmenter import Augmenter
    from dasv_cli.augment.keys import derive_key
    from dasv_cli.augment.rirset import write_rirs
    from dasv_cli.dsp.logmel import LogMelConfig, logmel, utterance_stats
    from dasv_cli.io.audio import read_audio
    from dasv_cli.io.store.lock import StoreLock
    from dasv_cli.io.store.reader import FeatureStore
    from dasv_cli.io.store.writer import ShardWriter

    t0 = time.time()
    write_rirs(work / "rirs", rirs, seed=seed)
    musan = write_sources(work / "musan")
    aug = Augmenter(KINDS, rir_dir=work / "rirs", musan_dir=musan, babble_pool=data["train"], seed=seed, rate=RATE)
    print(f"augmentation sources: {aug.check()} ({time.time() - t0:.1f} s)")
    store = FeatureStore(data["feats"])
    stored = set(store.keys())
    store.close()
    cfg = LogMelConfig()
    todo = [(k, p) for k, p in data["train"] if any(derive_key(k, kind) not in stored for kind in KINDS)]
    lock = StoreLock(data["feats"]).acquire()
    written = 0
    try:
        with ShardWriter(data["feats"], cfg.to_dict()) as writer:
            for key, path in todo:
                wave = read_audio(path, RATE).wave
                for kind in KINDS:
                    dkey = derive_key(key, kind)
                    if dkey in stored:
                        continue
                    feats = logmel(aug.apply(key, wave, kind), cfg)
                    mean, std = utterance_stats(feats)
                    writer.add(dkey, feats, mean, std, len(wave))
                    written += 1
    finally:
        lock.release()
    print(f"augmented copies: {written} written ({len(KINDS)} per training utterance) in {time.time() - t0:.1f} s")
    return written
