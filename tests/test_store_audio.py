"""Waveforms in the store: `dasv features --keep-audio` (PCM beside the features) and `--audio-only`
(a waveform store of a noise / RIR corpus): the PCM read back, resume, parts, failed inputs,
inspect's storage figures, and the batched waveform-window reader."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from dasv_cli.dsp.logmel_torch import logmel_batch
from dasv_cli.io.store.reader import FeatureStore, tile_rows
from tests.conftest import run_dasv, same_store_content

TOL = 1e-3


@pytest.fixture(scope="module")
def listed(demo_dir: Path, tmp_path_factory) -> tuple[Path, list[Path]]:
    root = tmp_path_factory.mktemp("audio-store")
    files = sorted(demo_dir.glob("*/*.flac"))[:6]
    (root / "list.txt").write_text("".join(f"{p.relative_to(demo_dir)}\n" for p in files))
    return root, files


def test_keep_audio_stores_the_files_pcm_and_unchanged_features(listed, demo_dir: Path):
    root, files = listed
    r = run_dasv("features", root / "list.txt", "-a", demo_dir, "-o", root / "both", "--keep-audio", "-j", "2", "-q")
    assert r.code == 0, r.stderr
    r = run_dasv("features", root / "list.txt", "-a", demo_dir, "-o", root / "plain", "-j", "1", "-q")
    assert r.code == 0, r.stderr
    same_store_content(root / "both", root / "plain")  # 16-bit sources: the features do not change
    with FeatureStore(root / "both") as store:
        assert store.has_audio and store.has_features
        for path in files:
            key = str(path.relative_to(demo_dir))[:-5]
            pcm, _ = sf.read(str(path), dtype="int16")
            np.testing.assert_array_equal(store.audio(key), pcm)
            assert store.samples(key) == len(pcm)
    with FeatureStore(root / "plain") as store:
        assert not store.has_audio
        with pytest.raises(Exception, match="--keep-audio"):
            store.read_audio_windows(np.array([0]), np.array([0]), 1000)
    # a rerun with the same option skips everything; another content is refused (usage, nothing written)
    again = run_dasv("features", root / "list.txt", "-a", demo_dir, "-o", root / "both", "--keep-audio", "-q", "--json")
    assert again.code == 0 and json.loads(again.stdout)["skipped"] == len(files)
    other = run_dasv("features", root / "list.txt", "-a", demo_dir, "-o", root / "both", "-q")
    assert other.code == 2 and "--keep-audio" in other.stderr and len(other.stderr.strip().splitlines()) == 1


def test_waveform_windows_give_the_stored_feature_windows(listed):
    """The log-mel of a window of 160 F + 352 samples from sample 160 s is stored frames [s, s + F)."""
    root, _ = listed
    with FeatureStore(root / "both") as store:
        rows = np.arange(len(store))
        frames = 200
        lengths = store.row_lengths(rows)
        starts = (np.array([0, 17, 101, 3, 250, 40])[:rows.size] % np.maximum(lengths - frames, 1)).astype(np.int64)
        feats = store.read_windows(rows, starts, frames)
        pcm = store.read_audio_windows(rows, starts * 160, 160 * frames + 352)
        ours = logmel_batch(torch.from_numpy(pcm.astype(np.float32) / 32768))
        assert ours.shape == feats.shape
        assert float((ours - torch.from_numpy(feats)).abs().max()) <= TOL


def test_audio_windows_fill_short_utterances_and_read_through_hdf5_alike(listed):
    root, _ = listed
    with FeatureStore(root / "both") as store:
        rows = np.arange(len(store))
        n = store.row_samples(rows)
        long = int(n.max()) + 5000
        zeros = store.read_audio_windows(rows, np.zeros(rows.size, np.int64), long)
        tiled = store.read_audio_windows(rows, np.zeros(rows.size, np.int64), long, fill="tile")
        for i, row in enumerate(rows):
            whole = store.audio(store.keys()[row])
            np.testing.assert_array_equal(zeros[i, :n[i]], whole)
            assert not zeros[i, n[i]:].any()
            expect = np.empty(long, np.int16)
            expect[:n[i]] = whole
            tile_rows(expect, int(n[i]))
            np.testing.assert_array_equal(tiled[i], expect)
        starts = np.array([5, 20000, 70001, 1, 3, 99999])[:rows.size]
        direct = store.read_audio_windows(rows, starts, 33000)
    slow = FeatureStore(root / "both")
    slow.index.audio.chunk_rows[:] = 0  # the same windows through h5py
    np.testing.assert_array_equal(slow.read_audio_windows(rows, starts, 33000), direct)
    slow.close()


def test_audio_only_store_with_parts_resume_failed_and_inspect(tmp_path: Path, shared_data: Path):
    """A noise corpus as a waveform store: parts fill one directory, a rerun resumes, a bad file is listed."""
    files = sorted((shared_data / "fsdd-8khz-sample").glob("*.wav"))[:5]
    src = tmp_path / "src"
    src.mkdir()
    for p in files:
        (src / p.name).symlink_to(p)
    (src / "bad.wav").write_bytes(b"not audio")
    (tmp_path / "noise.txt").write_text("".join(f"{p.name}\n" for p in files) + "bad.wav\n")
    out = tmp_path / "noise"
    codes = [run_dasv("features", tmp_path / "noise.txt", "-a", src, "-o", out, "--audio-only", "--part", f"{i}/2",
                      "-q").code for i in (1, 2)]
    assert sorted(codes) == [0, 3]  # the part holding the bad file: done, some inputs failed
    failed = "".join(p.read_text() for p in out.glob("failed*.tsv"))
    assert "bad.wav" in failed
    again = run_dasv("features", tmp_path / "noise.txt", "-a", src, "-o", out, "--audio-only", "-q", "--json")
    assert again.code == 3 and json.loads(again.stdout)["skipped"] == len(files)
    with FeatureStore(out) as store:
        assert store.has_audio and not store.has_features and len(store) == len(files)
        for p in files:
            import dasv_cli.io.audio as audio

            wave = audio.load_audio(p)  # resampled to 16 kHz as dasv decodes it
            got = store.audio(p.stem)
            assert got.size == wave.size and np.abs(got / 32768 - wave).max() <= 1 / 32768
    shown = run_dasv("inspect", out)
    assert shown.code == 0 and "16-bit PCM only" in shown.stdout and "VoxCeleb2   2,300 h: PCM 265 GB" in shown.stdout
    info = json.loads(run_dasv("inspect", out, "--json").stdout)
    per_hour = info["storage_per_hour"]
    assert info["content"] == "audio" and per_hour["pcm"] == 16000 * 2 * 3600
    assert per_hour["features"] == 100 * 80 * 4 * 3600 and round(per_hour["voxceleb2"]["copies_float16"] / 1e9) == 662
    both = run_dasv("features", tmp_path / "noise.txt", "-o", tmp_path / "x", "--audio-only", "--keep-audio")
    assert both.code == 2
    copies = run_dasv("features", tmp_path / "noise.txt", "-o", tmp_path / "x", "--keep-audio", "--augment", "babble")
    assert copies.code == 2 and "online" in copies.stderr


def test_verify_covers_the_stored_pcm(listed):
    """A shard's checksums cover its PCM too: a flipped sample in the audio column is named by
    `dasv inspect --verify` (a keep-audio store written by the test above verifies clean)."""
    import h5py

    from dasv_cli.io.store.layout import list_shards

    root, _ = listed
    clean = run_dasv("inspect", root / "both", "--verify")
    assert clean.code == 0, clean.stderr
    shard = list_shards(root / "both")[0]
    copy = root / "both-damaged"
    copy.mkdir()
    for p in list_shards(root / "both"):
        (copy / p.name).write_bytes(p.read_bytes())
    with h5py.File(copy / shard.name, "a") as f:
        audio = f["audio"]
        middle = audio.shape[0] // 2
        audio[middle] = np.int16(audio[middle] ^ 0x0100)
    res = run_dasv("inspect", copy, "--verify")
    assert res.code == 3, res.stderr
    assert f"damaged     {shard.name}: checksum of audio differs" in res.stdout
