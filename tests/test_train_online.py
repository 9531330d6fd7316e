"""`dasv train --online-augment`: batches from waveform windows, augmented and featurised in the
training process; with nothing drawn they are the feature path's batches; resume is exact; bad
noise/RIR stores are one error line before any update."""

from __future__ import annotations

import signal
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from tests.conftest import TINY_FLAGS, read_metrics, run_dasv, run_inprocess, signal_when


@pytest.fixture(scope="module")
def online_data(data: Path, demo_dir: Path, tmp_path_factory) -> Path:
    """The demo training data with waveforms kept (--keep-audio), a noise store and an RIR store."""
    root = tmp_path_factory.mktemp("online")
    r = run_dasv("features", data / "audio.lst", "-a", demo_dir, "-o", root / "feats", "--keep-audio", "-q")
    assert r.code == 0, r.stderr
    rng = np.random.default_rng(0)
    src = root / "src"
    for part in ("noise", "music", "rirs"):
        (src / part).mkdir(parents=True)
    for i in range(3):
        sf.write(src / "noise" / f"n{i}.wav", rng.standard_normal(24000) * 0.1, 16000, subtype="PCM_16")
        t = np.arange(40000) / 16000
        sf.write(src / "music" / f"m{i}.wav", 0.3 * np.sin(2 * np.pi * (220 + 110 * i) * t), 16000, subtype="PCM_16")
        h = rng.standard_normal(3000) * np.exp(-np.arange(3000) / 800.0)
        h[0] = 4
        sf.write(src / "rirs" / f"r{i}.wav", h / np.abs(h).max(), 16000, subtype="PCM_16")
    (root / "noise.lst").write_text("".join(f"{p}/{n}{i}.wav\n" for p, n in (("noise", "n"), ("music", "m"))
                                            for i in range(3)))
    (root / "rirs.lst").write_text("".join(f"rirs/r{i}.wav\n" for i in range(3)))
    for name in ("noise", "rirs"):
        r = run_dasv("features", root / f"{name}.lst", "-a", src, "-o", root / f"{name}-store", "--audio-only", "-q")
        assert r.code == 0, r.stderr
    (root / "labels.txt").write_text((data / "labels.txt").read_text())
    return root


def online_flags(root: Path, kinds: str = "reverb,noise,music,babble", prob: str = "0.6") -> list[str]:
    return ["--train-labels", str(root / "labels.txt"), "--features", str(root / "feats"), *TINY_FLAGS,
            "--online-augment", kinds, "--augment-prob", prob, "--noise-store", str(root / "noise-store"),
            "--rir-store", str(root / "rirs-store"), "-q"]


def test_nothing_drawn_trains_as_the_feature_path(online_data: Path, tmp_path: Path, one_thread):
    """--augment-prob 0: every batch is the log-mel of its waveform windows, the feature path's
    windows within 1e-3: the losses of the first updates agree to a few decimals."""
    common = ["--max-steps", "4", "--workers", "0", "--print-every", "1"]
    a = run_inprocess("train", *online_flags(online_data, prob="0"), *common, "-o", str(tmp_path / "wave"))
    assert a.code == 0, a.stderr
    b = run_inprocess("train", "--train-labels", str(online_data / "labels.txt"), "--features",
                      str(online_data / "feats"), *TINY_FLAGS, "-q", *common, "-o", str(tmp_path / "feats"))
    assert b.code == 0, b.stderr
    la = [r["loss"] for r in read_metrics(tmp_path / "wave") if "loss" in r]
    lb = [r["loss"] for r in read_metrics(tmp_path / "feats") if "loss" in r]
    assert len(la) == len(lb) == 4
    np.testing.assert_allclose(la, lb, rtol=0, atol=2e-3)


def test_resume_with_online_augmentation_is_exact(online_data: Path, tmp_path: Path):
    common = [*online_flags(online_data), "--max-steps", "8", "--save-every", "2"]
    ref = run_inprocess("train", *common, "--workers", "0", "-o", str(tmp_path / "ref"))
    assert ref.code == 0, ref.stderr
    out = tmp_path / "killed"
    killed = signal_when("train", *common, "--workers", "1", "-o", out, sig=signal.SIGKILL,
                         ready=lambda _: (out / "last.pt").exists())
    assert killed.code == -signal.SIGKILL
    assert 0 < torch.load(out / "last.pt", weights_only=True)["step"] < 8
    res = run_dasv("train", "-o", str(out), "--resume", "-q")
    assert res.code == 0, res.stderr
    a = torch.load(tmp_path / "ref" / "last.pt", weights_only=True)
    b = torch.load(out / "last.pt", weights_only=True)
    assert a["step"] == b["step"] == 8
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name


def test_bad_noise_and_rir_stores_are_one_line_before_any_update(online_data: Path, data: Path, tmp_path: Path):
    empty = tmp_path / "empty"
    empty.mkdir()
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "shard-00000.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"garbage" * 50)
    base = ["--train-labels", str(online_data / "labels.txt"), "--features", str(online_data / "feats"),
            *TINY_FLAGS, "--max-steps", "2", "--workers", "0", "-q", "--online-augment", "noise,reverb"]
    cases = {
        "missing": ["--noise-store", str(tmp_path / "nope"), "--rir-store", str(online_data / "rirs-store")],
        "empty": ["--noise-store", str(empty), "--rir-store", str(online_data / "rirs-store")],
        "corrupt": ["--noise-store", str(online_data / "noise-store"), "--rir-store", str(corrupt)],
        "features only": ["--noise-store", str(data / "feats"), "--rir-store", str(online_data / "rirs-store")],
        "no rir store": ["--noise-store", str(online_data / "noise-store")],
    }
    for what, flags in cases.items():
        out = tmp_path / what.replace(" ", "-")
        r = run_dasv("train", *base, *flags, "-o", str(out))
        assert r.code == 1, (what, r.code, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, (what, r.stderr)
        assert not (out / "last.pt").exists() and not list(out.glob("metrics.jsonl")), what
    # a training store without waveforms: one clear line
    r = run_dasv("train", "--train-labels", str(data / "labels.txt"), "--features", str(data / "feats"), *TINY_FLAGS,
                 "--max-steps", "2", "-q", "--online-augment", "babble", "-o", str(tmp_path / "nowave"))
    assert r.code == 1 and "--keep-audio" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
