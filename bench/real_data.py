"""Data for bench/train_real.py: features of ../shared/data, trials on unseen speakers, augmented copies.

Training: all 28 speakers of librispeech-train-clean-5-lite (688 utterances). Verification: the 10
unseen speakers of librispeech-test-other-10x10 (100 utterances, every pair: 4,950 trials, 450 of them
same-speaker). Both sets go into one feature store.

Augmented copies are made by `dasv features --augment` (featurize with AugmentOptions) on the
training list alone, into a store of their own per augmentation (the clean features, the copies
under `KEY#KIND`, and the verification set clean), from sources that never touch the verification
speakers:
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
    (work / "train.lst").write_text("".join(x for x in lines if x.startswith("train/")))
    (work / "test.lst").write_text("".join(x for x in lines if x.startswith("test/")))
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
            "train": [(k, paths[k]) for k in train_keys], "train_list": work / "train.lst",
            "test_list": work / "test.lst"}


def augment_tag(kinds: str, copies: int) -> str:
    """`reverb+noise+music+babble-c1`: names the store (and the results) of one augmentation."""
    return kinds.replace(",", "+").replace(":", "x") + f"-c{copies}"


def augment(data: dict, work: Path, kinds: str = ",".join(KINDS), copies: int = 1, jobs: int = 1,
            rirs: int = 200, seed: int = 3) -> Path:
    """A store of its own for one augmentation (`dasv features --augment KINDS --copies K` on the
    training list, then the verification list clean): cached, a rerun computes only what is missing."""
    from dasv_cli.augment.keys import parse_spec
    from dasv_cli.augment.rirset import write_rirs
    from dasv_cli.features.augmented import AugmentOptions
    from dasv_cli.features.run import featurize

    t0 = time.time()
    wanted = {kind for kind, _ in parse_spec(kinds)}
    rir_dir = work / "rirs"
    if "reverb" in wanted:
        write_rirs(rir_dir, rirs, seed=seed)
    musan = write_sources(work / "musan") if wanted & {"noise", "music"} else None
    out = work / f"feats-{augment_tag(kinds, copies)}"
    options = AugmentOptions(kinds, copies, rir_dir if "reverb" in wanted else None, musan, seed)
    result = featurize(data["train_list"], out, jobs=jobs, progress=False, augment=options)
    featurize(data["test_list"], out, jobs=jobs, progress=False)
    print(f"augmented copies ({kinds}, --copies {copies}): {result.copies} written, {result.skipped} files "
          f"complete already, in {out} ({time.time() - t0:.1f} s)")
    return out
