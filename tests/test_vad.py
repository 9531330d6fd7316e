"""--vad: Silero VAD drops non-speech before embedding; the speech share is reported; silence is refused."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import run_dasv
from test_export import demo_waves, save_tiny_checkpoint, tiny_net

pytest.importorskip("silero_vad", reason="the 'vad' extra (silero-vad) is not installed")
RATE = 16000


def quiet(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Room-quiet noise (-80 dBFS), not digital silence."""
    return (1e-4 * rng.standard_normal(int(RATE * seconds))).astype(np.float32)


@pytest.fixture(scope="module")
def lab(demo_files, tmp_path_factory) -> dict[str, Path]:
    from dasv_cli.io.audio import read_audio

    root = tmp_path_factory.mktemp("vad")
    ckpt = root / "tiny.pt"
    save_tiny_checkpoint(ckpt, tiny_net(demo_waves(demo_files, 3), "cmn", seed=3), "cmn")
    same = sorted(f for f in demo_files if f.parent == demo_files[0].parent)
    a, b, ref = (read_audio(f).wave for f in same[:3])
    rng = np.random.default_rng(0)
    speech = np.concatenate([a, b])
    gappy = np.concatenate([quiet(3, rng), a, quiet(2.5, rng), b, quiet(4, rng)])
    files = {"speech": speech, "gappy": gappy, "ref": ref, "silence": quiet(5, rng), "zeros": np.zeros(RATE)}
    out = {"ckpt": ckpt}
    for name, wave in files.items():
        out[name] = root / f"{name}.wav"
        sf.write(out[name], wave, RATE, subtype="FLOAT")
    out["share"] = speech.size / gappy.size  # of the gappy recording, what is the speech recording
    return out


def compare(lab, a: str, b: str, *extra: str) -> dict:
    got = run_dasv("compare", lab[a], lab[b], "--model", lab["ckpt"], "--json", *extra)
    assert got.code == 0, got.stderr
    return json.loads(got.stdout)


def test_inserted_silences_change_neither_decision_nor_speech_share(lab) -> None:
    alone = compare(lab, "speech", "ref", "--vad")
    gappy = compare(lab, "gappy", "ref", "--vad")
    # the truth: the gappy file is the speech file plus quiet; of the speech file, VAD keeps what it
    # keeps alone (read speech has pauses), so of the gappy file that share times the speech's part
    truth = alone["speech"][str(lab["speech"])] * lab["share"]
    assert abs(gappy["speech"][str(lab["gappy"])] - truth) < 0.05, (gappy["speech"], truth)
    assert gappy["speech"][str(lab["gappy"])] < alone["speech"][str(lab["speech"])] - 0.1  # the quiet is seen
    c_alone, c_gappy = alone["pairs"][0]["cosine"], gappy["pairs"][0]["cosine"]
    assert abs(c_alone - c_gappy) < 0.02, (c_alone, c_gappy)  # the same decision at any threshold not between


def test_silence_is_an_error_not_a_cosine(lab) -> None:
    got = run_dasv("compare", lab["silence"], lab["ref"], "--model", lab["ckpt"], "--vad")
    assert got.code == 1 and "no speech" in got.stderr and str(lab["silence"]) in got.stderr and not got.stdout
    got = run_dasv("compare", lab["zeros"], lab["ref"], "--model", lab["ckpt"])
    assert got.code == 1 and "digital silence" in got.stderr and not got.stdout


def test_vad_imports_no_torchaudio(lab) -> None:
    from dasv_cli.dsp.vad import speech_only

    import torch

    threads = torch.get_num_threads()
    wave = np.concatenate([np.zeros(RATE, np.float32), demo_waves([Path(lab["ref"])], 1)[0]])
    speech, share = speech_only(wave, RATE)
    assert 0 < share < 1 and speech.size < wave.size
    assert "torchaudio" not in sys.modules and torch.get_num_threads() == threads
