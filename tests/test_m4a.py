"""VoxCeleb2's m4a through dasv: features of an m4a equal the recipe applied to PyAV's own decoding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from conftest import run_dasv
from dasv_cli.io.shards import FeatureStore
from test_logmel import TOL, reference_logmel  # the float64 reference written from DESIGN.md

ENV = {"OMP_NUM_THREADS": "1"}


def encode(path: Path, wave: np.ndarray, rate: int, codec: str = "aac", video: bool = False) -> Path:
    """Encode float samples ([n] mono or [channels, n]) with PyAV; `video` adds a small video stream first."""
    import av

    planes = np.ascontiguousarray(wave[None] if wave.ndim == 1 else wave, dtype=np.float32)
    layout = "mono" if planes.shape[0] == 1 else "stereo"
    with av.open(str(path), "w") as out:
        vs = out.add_stream("mpeg4", rate=10) if video else None
        st = out.add_stream(codec, rate=rate, layout=layout)
        if vs is not None:
            vs.width, vs.height, vs.pix_fmt = 32, 32, "yuv420p"
            for k in range(5):
                vf = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 40 * k, np.uint8), format="rgb24")
                vf.pts = k
                for p in vs.encode(vf):
                    out.mux(p)
            for p in vs.encode(None):
                out.mux(p)
        frame = av.AudioFrame.from_ndarray(planes, format="fltp", layout=layout)
        frame.sample_rate, frame.pts = rate, 0
        for p in st.encode(frame):
            out.mux(p)
        for p in st.encode(None):
            out.mux(p)
    return path


def pyav_decode(path: Path) -> tuple[np.ndarray, int, int]:
    """PyAV's own decoding, written independently of dasv: (planar float64 [channels, n], rate, channels)."""
    import av

    with av.open(str(path)) as c:
        frames = list(c.decode(audio=0))
    assert all(f.format.name == "fltp" for f in frames)  # what FFmpeg's AAC decoder gives
    return np.concatenate([f.to_ndarray() for f in frames], axis=1).astype(np.float64), frames[0].sample_rate, \
        len(frames[0].layout.channels)


def test_m4a_features_equal_the_recipe_on_pyav_decoding(tmp_path, demo_files):
    import librosa
    import soxr

    wave = sf.read(str(demo_files[0]), dtype="float32")[0]
    audio = tmp_path / "audio"
    audio.mkdir()
    encode(audio / "mono16k.m4a", wave, 16000)
    hi = librosa.resample(wave, orig_sr=16000, target_sr=44100, res_type="soxr_hq")
    encode(audio / "stereo44k.m4a", np.stack([hi, 0.5 * hi[::-1]]), 44100)
    (tmp_path / "l.lst").write_text("mono16k.m4a\nstereo44k.m4a\n")
    res = run_dasv("features", tmp_path / "l.lst", "-o", tmp_path / "feats", "-a", audio, "-j", "1", env=ENV)
    assert res.code == 0, res.stderr
    assert "resampled to 16000 Hz: 1 of 2" in res.stderr
    store = FeatureStore(tmp_path / "feats")
    assert sorted(store.keys()) == ["mono16k", "stereo44k"]
    for key in store.keys():
        planes, rate, channels = pyav_decode(audio / f"{key}.m4a")
        assert (rate, channels) == ((16000, 1) if key == "mono16k" else (44100, 2))
        mono = planes.mean(axis=0).astype(np.float32)
        if rate != 16000:  # soxr HQ, the resampler io/audio documents (librosa's default)
            mono = soxr.resample(mono, rate, 16000, quality="HQ")
        ref = reference_logmel(mono)
        got = store[key]
        assert got.shape == ref.shape
        assert float(np.abs(got - ref).max()) <= TOL
        assert store.samples(key) == len(mono)
    # the decoded speech is the speech that was encoded (AAC is lossy, so compare log-mel coarsely)
    frames = min(len(store["mono16k"]), len(reference_logmel(wave)))
    assert np.corrcoef(store["mono16k"][5:frames - 5].ravel(),
                       reference_logmel(wave)[5:frames - 5].ravel())[0, 1] > 0.99
    store.close()
