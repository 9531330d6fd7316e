"""VoxCeleb2's m4a through dasv: features of an m4a equal the recipe applied to PyAV's own decoding,
and a VoxCeleb-shaped tree of real speech (m4a and wav) goes prepare -> features -> train -> validate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf

from conftest import TINY_FLAGS, run_dasv, run_inprocess
from dasv_cli.io.store.reader import FeatureStore
from test_logmel import TOL, reference_logmel  # the float64 reference written from DESIGN.md


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
    res = run_inprocess("features", tmp_path / "l.lst", "-o", tmp_path / "feats", "-a", audio, "-j", "1")
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


def make_voxceleb_tree(root: Path, demo_dir: Path) -> dict[str, list[str]]:
    """The 8 demo speakers as idNNNNN/VIDEO/NNNNN: even utterances as m4a (VoxCeleb2), odd as wav
    (VoxCeleb1), two videos per speaker. Returns speaker -> keys."""
    speakers: dict[str, list[str]] = {}
    for s, spk_dir in enumerate(sorted(p for p in demo_dir.iterdir() if p.is_dir())):
        spk = f"id{10001 + s}"
        for u, f in enumerate(sorted(spk_dir.glob("*.flac"))):
            video = root / spk / ("vidA-x_1" if u < 3 else "vidB.2")
            video.mkdir(parents=True, exist_ok=True)
            wave = sf.read(str(f), dtype="float32")[0]
            if u % 2 == 0:
                encode(video / f"{u + 1:05d}.m4a", wave, 16000)
            else:
                sf.write(video / f"{u + 1:05d}.wav", wave, 16000, subtype="PCM_16")
            speakers.setdefault(spk, []).append(f"{spk}/{video.name}/{u + 1:05d}")
    return speakers


def test_voxceleb_tree_prepare_features_train_validate(tmp_path, demo_dir):
    import itertools

    speakers = make_voxceleb_tree(tmp_path / "vox" / "dev" / "aac", demo_dir)
    held_out = sorted(speakers)[-3:]
    keys = [k for s in held_out for k in speakers[s]]
    # the official form: `label path1 path2`, paths named .wav even where the file is an m4a
    rows = [f"{int(a.split('/')[0] == b.split('/')[0])} {a}.wav {b}.wav\n" for a, b in itertools.combinations(keys, 2)]
    (tmp_path / "veri_test.txt").write_text("".join(rows))

    prep = tmp_path / "prep"
    res = run_inprocess("prepare", "voxceleb", tmp_path / "vox", "-o", prep, "--trials", tmp_path / "veri_test.txt",
                        "--json")
    assert res.code == 0, res.stderr
    info = json.loads(res.stdout)
    assert (info["speakers"], info["utterances"]) == (8, 40)
    assert (info["train_speakers"], info["train_utterances"]) == (5, 25)  # trial speakers never train
    assert 0.07 < info["hours"] < 0.09 and info["missing"] == 0 and info["skipped"] == 0
    assert info["trials"] == [{"source": str(tmp_path / "veri_test.txt"), "file": "trials/veri_test.txt",
                               "trials": 105, "targets": 30, "dropped_missing": 0}]
    assert "speakers      8 (5 in train_labels.txt)" in res.stderr

    feats = tmp_path / "feats"
    res = run_dasv("features", prep / "audio.lst", "-o", feats, "-j", "2")  # worker processes decode the m4a
    assert res.code == 0, res.stderr
    with FeatureStore(feats) as store:
        assert sorted(store.keys()) == sorted(k for ks in speakers.values() for k in ks)

    run = tmp_path / "run"
    res = run_inprocess("train", "--train-labels", prep / "train_labels.txt", "--features", feats, "-o", run,
                        *TINY_FLAGS, "--workers", "0", "--max-steps", "3", "-q")
    assert res.code == 0, res.stderr
    res = run_inprocess("validate", "--model", run / "last.pt", "--features", feats,
                        "--trials", prep / "trials" / "veri_test.txt", "--json", "-q")
    assert res.code == 0, res.stderr
    result = json.loads(res.stdout)
    assert result["trials"] == 105 and result["skipped"] == 0 and 0.0 <= result["eer"] <= 100.0
