"""`dasv prepare`: VoxCeleb trees, Kaldi data dirs and drawn trials -> the lists the other commands read,
with every bad input one line naming its file (and line)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from dasv_cli.errors import InputError, UsageError
from dasv_cli.io import lists
from dasv_cli.prepare import trials as drawing
from dasv_cli.prepare.kaldi import prepare_kaldi
from dasv_cli.prepare.voxceleb import prepare_voxceleb

ENV = {"OMP_NUM_THREADS": "1"}


def _wav(path: Path, seconds: float = 0.5, rate: int = 16000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(rate * seconds)) / rate
    sf.write(path, (0.1 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), rate, subtype="PCM_16")
    return path


def _tree(root: Path, speakers=("id10001", "id10002", "id10003"), per_video=2) -> list[str]:
    keys = []
    for spk in speakers:
        for video in ("vidA", "vid-B_2"):
            for u in range(1, per_video + 1):
                _wav(root / spk / video / f"{u:05d}.wav")
                keys.append(f"{spk}/{video}/{u:05d}")
    return keys


def _read(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_voxceleb_lists_keys_labels_and_trials(tmp_path):
    keys = _tree(tmp_path / "vox1" / "wav")
    (tmp_path / "vox1" / "wav" / "id10001" / "vidA" / "notes.txt").write_text("not audio")
    trials = tmp_path / "veri.txt"
    trials.write_text("1 id10003/vidA/00001.wav id10003/vid-B_2/00002.wav\n"
                      "0 id10003/vidA/00001.wav id10002/vidA/00001.wav\n")
    out = tmp_path / "out"
    s = prepare_voxceleb(tmp_path / "vox1", out, [trials], show_progress=False)
    audio = _read(out / "audio.lst")
    assert audio[0].startswith("# ") and len(audio) == 1 + len(keys)
    assert [line.split("\t")[0] for line in audio[1:]] == sorted(keys)
    assert all(Path(line.split("\t")[1]).is_absolute() for line in audio[1:])
    entries = lists.read_audio_list(out / "audio.lst")
    assert [e.key for e in entries] == sorted(keys) and all(e.path.is_file() for e in entries)
    # speakers named in a trial list never train
    labels = lists.read_train_labels(out / "train_labels.txt")
    assert labels.names == ["id10001"] and len(labels.keys) == 4
    assert _read(out / "trials" / "veri.txt") == ["1 id10003/vidA/00001 id10003/vid-B_2/00002",
                                                  "0 id10003/vidA/00001 id10002/vidA/00001"]
    read = lists.read_trials(out / "trials" / "veri.txt")
    assert set(read.unique_keys()) <= {e.key for e in entries}
    assert (s.speakers, s.utterances, s.train_speakers, s.train_utterances) == (3, 12, 1, 4)
    assert abs(s.seconds - 12 * 0.5) < 1e-9 and s.exit_code == 0
    assert not list(out.rglob(".*.tmp"))
    s2 = prepare_voxceleb(tmp_path / "vox1", out, [trials], keep_trial_speakers=True, show_progress=False)
    assert s2.train_speakers == 3 and len(lists.read_train_labels(out / "train_labels.txt").keys) == 12


def test_voxceleb_finds_data_dirs_and_keeps_wav_over_m4a(tmp_path):
    from test_m4a import encode

    _tree(tmp_path / "vox2" / "dev" / "aac", speakers=("id00012",), per_video=1)
    _tree(tmp_path / "vox2" / "test" / "aac", speakers=("id00017",), per_video=1)
    wave = sf.read(str(tmp_path / "vox2/dev/aac/id00012/vidA/00001.wav"), dtype="float32")[0]
    encode(tmp_path / "vox2/dev/aac/id00012/vidA/00001.m4a", wave, 16000)  # a converted copy beside it
    encode(tmp_path / "vox2/dev/aac/id00012/vidA/00002.m4a", wave, 16000)
    s = prepare_voxceleb(tmp_path / "vox2", tmp_path / "out", show_progress=False)
    entries = {e.key: e.path for e in lists.read_audio_list(tmp_path / "out" / "audio.lst")}
    assert sorted(entries) == ["id00012/vid-B_2/00001", "id00012/vidA/00001", "id00012/vidA/00002",
                               "id00017/vid-B_2/00001", "id00017/vidA/00001"]
    assert entries["id00012/vidA/00001"].suffix == ".wav" and entries["id00012/vidA/00002"].suffix == ".m4a"
    assert s.duplicates == 1 and s.speakers == 2
    assert s.data_dirs == [str(tmp_path / "vox2/dev/aac"), str(tmp_path / "vox2/test/aac")]
    assert any(line.startswith("data dirs ") for line in s.lines())
    assert 4 * 0.5 + 0.45 < s.seconds < 4 * 0.5 + 0.6  # the m4a's header duration, not decoded


@pytest.mark.parametrize("trial_text, pattern", [
    ("1 id10001/vidA/00001.wav id10001/vidA/00002.wav\n0 id10001/vidA/00001.wav id19999/x/00001.wav\n",
     r"veri\.txt:2: 'id19999/x/00001' is not an utterance of the corpus \(1 of 2 trials"),
    ("# header\n0 id10001/vidA/00001.wav id10001/vidA/00002.wav\n",
     r"veri\.txt:2: labelled different-speaker but 'id10001/vidA/00001' is speaker 'id10001'"),
    ("1 a b c\n", r"veri\.txt:1: expected '1\|0 key1 key2'"),
    ("", r"veri\.txt: the trial list is empty"),
])
def test_voxceleb_trial_errors_name_file_and_line(tmp_path, trial_text, pattern):
    _tree(tmp_path / "wav", speakers=("id10001", "id10002"))
    (tmp_path / "veri.txt").write_text(trial_text)
    with pytest.raises(InputError, match=pattern):
        prepare_voxceleb(tmp_path / "wav", tmp_path / "out", [tmp_path / "veri.txt"], show_progress=False)
    assert not (tmp_path / "out").exists()  # nothing written before every check passed


def test_voxceleb_drop_missing_and_unreadable_files(tmp_path, dasv):
    _tree(tmp_path / "wav", speakers=("id10001", "id10002"))
    bad = tmp_path / "wav" / "id10002" / "vidA" / "00003.wav"
    bad.write_bytes(b"RIFF not really")
    (tmp_path / "veri.txt").write_text("1 id10001/vidA/00001.wav id10001/vidA/00002.wav\n"
                                       "0 id10001/vidA/00001.wav id10002/vidA/00003.wav\n"
                                       "0 id10001/vidA/00001.wav id10002/vidA/00001.wav\n")
    res = dasv("prepare", "voxceleb", tmp_path / "wav", "-o", tmp_path / "out", "-t", tmp_path / "veri.txt", "-q")
    assert res.code == 1 and len(res.stderr.strip().splitlines()) == 1
    assert "veri.txt:2: 'id10002/vidA/00003' is unreadable (not readable audio" in res.stderr
    res = dasv("prepare", "voxceleb", tmp_path / "wav", "-o", tmp_path / "out", "-t", tmp_path / "veri.txt",
               "--drop-missing", "--json", "-q")
    assert res.code == 3, res.stderr  # done, but a file was left out
    info = json.loads(res.stdout)
    assert info["skipped"] == 1 and info["missing"] == 1 and info["utterances"] == 8
    assert info["trials"][0]["trials"] == 2 and info["trials"][0]["dropped_missing"] == 1
    skipped = _read(tmp_path / "out" / "skipped.tsv")
    assert skipped[0] == "path\treason" and skipped[1].startswith(f"{bad}\tnot readable audio")
    assert "1 unreadable files left out" in res.stderr


def test_voxceleb_layout_errors(tmp_path, dasv):
    (tmp_path / "empty").mkdir()
    (tmp_path / "f.txt").write_text("x")
    (tmp_path / "spk" / "id10001" / "v").mkdir(parents=True)
    for root, pattern in [("nothing", "nothing: no such directory"), ("empty", "empty: no VoxCeleb layout here"),
                          ("f.txt", "f.txt: is a file, expected a VoxCeleb directory"),
                          ("spk", "spk: speaker directories but no audio files")]:
        with pytest.raises(InputError, match=pattern):
            prepare_voxceleb(tmp_path / root, tmp_path / "out", show_progress=False)
    res = dasv("prepare", "voxceleb", tmp_path / "empty", "-o", tmp_path / "out")
    assert res.code == 1 and res.stderr.startswith("dasv: error: ") and len(res.stderr.strip().splitlines()) == 1


def _kaldi_dir(tmp_path: Path, wav_scp: str, utt2spk: str, trials: str | None = None) -> Path:
    d = tmp_path / "data" / "train"
    d.mkdir(parents=True, exist_ok=True)
    (d / "wav.scp").write_text(wav_scp)
    (d / "utt2spk").write_text(utt2spk)
    if trials is not None:
        (d / "trials").write_text(trials)
    return d


def test_kaldi_data_dir_keys_are_utt_ids_and_features_store_them(tmp_path, monkeypatch, dasv):
    for name in ("a 1.wav", "b.flac", "c.wav"):
        _wav(tmp_path / "audio" / name, seconds=0.3)
    monkeypatch.chdir(tmp_path)  # relative wav.scp paths are the recipe directory's, as in Kaldi
    d = _kaldi_dir(tmp_path, f"spkA-u1 audio/a 1.wav\nspkA-u2 {tmp_path}/audio/b.flac\nspkB-u1 audio/c.wav\n",
                   "spkA-u1 spkA\nspkA-u2 spkA\nspkB-u1 spkB\n",
                   "spkA-u1 spkA-u2 target\nspkA-u1 spkB-u1 nontarget\n")
    s = prepare_kaldi(d, tmp_path / "out", show_progress=False)
    entries = lists.read_audio_list(tmp_path / "out" / "audio.lst")
    assert [(e.key, e.path) for e in entries] == [("spkA-u1", tmp_path / "audio/a 1.wav"),
                                                  ("spkA-u2", tmp_path / "audio/b.flac"),
                                                  ("spkB-u1", tmp_path / "audio/c.wav")]
    assert _read(tmp_path / "out" / "trials" / "trials.txt") == ["1 spkA-u1 spkA-u2", "0 spkA-u1 spkB-u1"]
    assert s.train_utterances == 0 and not (tmp_path / "out" / "train_labels.txt").exists()
    s = prepare_kaldi(d, tmp_path / "out", keep_trial_speakers=True, show_progress=False)
    assert _read(tmp_path / "out" / "train_labels.txt") == ["spkA-u1 spkA", "spkA-u2 spkA", "spkB-u1 spkB"]
    res = dasv("features", tmp_path / "out" / "audio.lst", "-o", tmp_path / "feats", "-j", "1", "-q", env=ENV)
    assert res.code == 0, res.stderr
    from dasv_cli.io.store.reader import FeatureStore

    with FeatureStore(tmp_path / "feats") as store:
        assert sorted(store.keys()) == ["spkA-u1", "spkA-u2", "spkB-u1"]


@pytest.mark.parametrize("wav_scp, utt2spk, pattern", [
    ("u1 a.wav\nu2 sox b.flac -t wav - |\n", "u1 s\nu2 s\n", r"wav\.scp:2: u2 is a command pipe .* never runs commands"),
    ("u1 a.wav\nu2 -\n", "u1 s\nu2 s\n", r"wav\.scp:2: u2 reads stdin"),
    ("u1 raw.ark:1234\n", "u1 s\n", r"wav\.scp:1: u1 points into a Kaldi archive"),
    ("u1\n", "u1 s\n", r"wav\.scp:1: expected 'utt path'"),
    ("u1 a.wav\nu1 b.wav\n", "u1 s\n", r"wav\.scp:2: duplicate utterance 'u1' \(first at line 1\)"),
    ("u1 a.wav\nu2 b.wav\n", "u1 s\n", r"wav\.scp:2: utterance 'u2' has no speaker in .*utt2spk"),
    ("u1 a.wav\n", "u1 s\nu9 s\n", r"utt2spk:2: utterance 'u9' is not in wav\.scp"),
    ("u1 a.wav\n", "u1 s x\n", r"utt2spk:1: expected 'utt speaker', got 3 fields"),
    ("u1 a.wav\nu1.wav b.wav\n", "u1 s\nu1.wav s\n", r"wav\.scp:2: utterance 'u1\.wav' has the same dasv key 'u1'"),
])
def test_kaldi_errors_name_file_and_line(tmp_path, wav_scp, utt2spk, pattern):
    d = _kaldi_dir(tmp_path, wav_scp, utt2spk)
    with pytest.raises(InputError, match=pattern) as info:
        prepare_kaldi(d, tmp_path / "out", show_progress=False)
    assert "\n" not in info.value.message
    assert not (tmp_path / "out").exists()


def test_kaldi_pipe_refused_through_the_cli(tmp_path, dasv):
    d = _kaldi_dir(tmp_path, "u1 a.wav\nu2 sox b.flac -t wav - |\n", "u1 s\nu2 s\n")
    res = dasv("prepare", "kaldi", d, "-o", tmp_path / "out")
    assert res.code == 1 and res.stdout == ""
    assert res.stderr.strip().splitlines() == [
        f"dasv: error: {d / 'wav.scp'}:2: u2 is a command pipe ('sox b.flac -t wav - |'); dasv never runs "
        "commands from a data file: write the audio to files and list their paths"]


def test_kaldi_segments_and_missing_files_refused(tmp_path):
    d = _kaldi_dir(tmp_path, "u1 a.wav\n", "u1 s\n")
    (d / "segments").write_text("u1 rec1 0.0 1.5\n")
    with pytest.raises(InputError, match="segments: segments .* are not supported"):
        prepare_kaldi(d, tmp_path / "out", show_progress=False)
    (d / "segments").unlink()
    with pytest.raises(InputError, match=r"none of the 1 audio files can be read \(first: .*a\.wav: no such file\)"):
        prepare_kaldi(d, tmp_path / "out", show_progress=False)
    (d / "utt2spk").unlink()
    with pytest.raises(InputError, match=r"utt2spk: no such file \(a Kaldi data dir has utt2spk\)"):
        prepare_kaldi(d, tmp_path / "out", show_progress=False)


def _labels(path: Path, counts: dict[str, int]) -> Path:
    path.write_text("".join(f"{spk}/u{i} {spk}\n" for spk, n in counts.items() for i in range(n)))
    return path


def _check_drawn(rows: list[str], speaker_of) -> Counter:
    pairs = set()
    kinds: Counter = Counter()
    for row in rows:
        label, a, b = row.split()
        assert a != b
        assert frozenset((a, b)) not in pairs
        pairs.add(frozenset((a, b)))
        assert int(label) == int(speaker_of(a) == speaker_of(b))
        kinds[label] += 1
    return kinds


def test_prepare_trials_balanced_seeded_no_self_or_repeated_pairs(tmp_path, dasv):
    labels = _labels(tmp_path / "labels.txt", {"s1": 5, "s2": 4, "s3": 1, "s4": 3})
    res = dasv("prepare", "trials", labels, "-n", "31", "--seed", "7", "-o", tmp_path / "a", "--json")
    assert res.code == 0, res.stderr
    info = json.loads(res.stdout)
    assert (info["trials"], info["targets"], info["nontargets"]) == (31, 15, 16) and info["speakers"] == 4
    rows = _read(tmp_path / "a" / "trials.txt")
    assert _check_drawn(rows, lambda k: k.split("/")[0]) == {"1": 15, "0": 16}
    assert lists.read_trials(tmp_path / "a" / "trials.txt").labels.sum() == 15
    again = dasv("prepare", "trials", labels, "-n", "31", "--seed", "7", "-o", tmp_path / "b")
    other = dasv("prepare", "trials", labels, "-n", "31", "--seed", "8", "-o", tmp_path / "c")
    assert again.code == other.code == 0
    assert _read(tmp_path / "b" / "trials.txt") == rows != _read(tmp_path / "c" / "trials.txt")
    # every same-speaker pair there is (10 + 6 + 3 = 19): asking for more is one line
    res = dasv("prepare", "trials", labels, "-n", "40", "-o", tmp_path / "d")
    assert res.code == 1 and "labels.txt: only 19 same-speaker pairs among its 13 utterances (4 speakers); 20 asked for" \
        in res.stderr
    assert dasv("prepare", "trials", labels, "-n", "1").code == 2


def test_drawn_trials_sampled_paths_are_uniform(monkeypatch):
    """The rejection sampler (used for big pools) gives every same-speaker pair the same chance:
    a speaker with 3 of the 4 pairs gets 3/4 of the draws."""
    monkeypatch.setattr(drawing, "_ENUMERATE", 0)
    labels = np.array([0, 0, 0, 1, 1, 2])
    picks = Counter()
    for seed in range(600):
        i, j, t = drawing.draw_trials(labels, 2, seed)
        (a, b), = [(x, y) for x, y, z in zip(i, j, t) if z == 1]
        assert labels[a] == labels[b] and a < b
        picks[int(labels[a])] += 1
    assert 0.68 < picks[0] / 600 < 0.82
    i, j, t = drawing.draw_trials(np.repeat(np.arange(30), 4), 300, seed=3)
    assert len(set(zip(i.tolist(), j.tolist()))) == 300 and (i < j).all() and t.sum() == 150
    with pytest.raises(UsageError):
        drawing.draw_trials(labels, 1, 0)


def test_numeric_speaker_ids_are_written_as_names(tmp_path):
    """utt2spk with numbers for speakers (LibriSpeech-style): `key 19` would be read as class 19."""
    for name in ("a", "b", "c"):
        _wav(tmp_path / "audio" / f"{name}.wav", seconds=0.2)
    d = _kaldi_dir(tmp_path, "".join(f"u{n} {tmp_path}/audio/{n}.wav\n" for n in "abc"), "ua 19\nub 19\nuc 7\n")
    s = prepare_kaldi(d, tmp_path / "out", show_progress=False)
    labels = lists.read_train_labels(tmp_path / "out" / "train_labels.txt")
    assert labels.names == ["spk19", "spk7"] and labels.labels.tolist() == [0, 0, 1]
    assert any("speaker ids are numbers" in n for n in s.notes)
