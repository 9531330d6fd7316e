"""What a newcomer meets first: `dasv --help` points to the demo, an empty file and a silent one are
called what they are, and the README shows `dasv export` before it uses model.onnx."""

from __future__ import annotations

import re

import numpy as np
import pytest
import soundfile as sf

from conftest import REPO, run_inprocess
from dasv_cli.io.audio import AudioError, read_audio
from test_compare import ckpt  # noqa: F401 - the module's checkpoint fixture


def test_help_points_to_the_demo() -> None:
    r = run_inprocess("--help", env={"COLUMNS": "200"})
    assert r.code == 0 and "New here? `dasv demo`" in r.stdout


def test_a_zero_byte_file_reads_as_empty(tmp_path, ckpt) -> None:  # noqa: F811
    for name in ("x.wav", "x.flac", "x.m4a"):
        (tmp_path / name).write_bytes(b"")
        with pytest.raises(AudioError, match="empty file"):
            read_audio(tmp_path / name)
    r = run_inprocess("compare", tmp_path / "x.wav", tmp_path / "x.wav", "--model", ckpt)
    assert r.code == 1 and "x.wav: empty file (0 bytes)" in r.stderr


def test_silence_is_an_error_and_near_silence_a_warning(tmp_path, demo_files, ckpt) -> None:  # noqa: F811
    """Digital silence has no speaker: an error naming the file, never a cosine; a file at or below
    -60 dBFS (hiss) is embedded with a warning naming it and its level."""
    sf.write(tmp_path / "silence.wav", np.zeros(16000, np.float32), 16000)
    sf.write(tmp_path / "hiss.wav", np.random.default_rng(0).normal(0, 1e-4, 16000).astype(np.float32), 16000)
    speech = str(demo_files[0])
    r = run_inprocess("compare", tmp_path / "silence.wav", speech, "--model", ckpt)
    assert r.code != 0 and r.stdout == "" and "silence.wav" in r.stderr and "digital silence" in r.stderr
    r = run_inprocess("compare", speech, str(demo_files[1]), "--model", ckpt)
    assert r.code == 0 and "silent" not in r.stderr
    r = run_inprocess("compare", tmp_path / "hiss.wav", speech, "--model", ckpt)
    assert r.code == 0 and r.stdout.count("\n") == 1
    assert "warning" in r.stderr and "hiss.wav (-80 dBFS)" in r.stderr and "silent" in r.stderr
    r = run_inprocess("enroll", "nobody", tmp_path / "hiss.wav", "--model", ckpt, "-o", tmp_path / "spk.h5")
    assert r.code == 0 and "hiss.wav (-80 dBFS)" in r.stderr
    (tmp_path / "a.lst").write_text(f"{tmp_path / 'hiss.wav'}\n{speech}\n")
    r = run_inprocess("embed", "--model", ckpt, "--audio", tmp_path / "a.lst", "-o", tmp_path / "e.h5", "-q")
    assert r.code == 0 and "1 input(s) (near) silent" in r.stderr


def test_readme_exports_before_it_uses_model_onnx_and_never_writes_into_the_package() -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    first_use = text.index("--model model.onnx")
    assert re.search(r"dasv export \S+ -o model\.onnx", text[:first_use]), "model.onnx used before `dasv export`"
    assert "Replace them with your own files" not in text
    assert re.search(r"`audio/`[^.]*never write", text), "the README must say audio/ is the package's, read-only"
