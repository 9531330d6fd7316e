"""A VoxCeleb tree -> dasv lists: `idNNNNN/VIDEO/NNNNN.{wav,m4a}` (VoxCeleb1 or 2, dev or test).

ROOT is the directory holding the `idNNNNN` speaker directories, or one above it: the standard
unpacked layouts `wav/` (VoxCeleb1), `dev/aac/`, `test/aac/` (VoxCeleb2) are found up to three levels
down, each a data dir. A key is the path relative to its data dir with the audio extension stripped
(`id10270/x6uYqmx31kE/00001`), so it is the key of the official trial lists (`1 id10270/.../00001.wav
...`), whether the file is a .wav or VoxCeleb2's .m4a. The speaker is the `idNNNNN` directory.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence

from dasv_cli.errors import InputError
from dasv_cli.io.audio import AUDIO_EXTENSIONS, SNDFILE_EXTENSIONS
from dasv_cli.io.lists import key_of
from dasv_cli.prepare.corpus import Summary, Utterance, finish

_SPEAKER = re.compile(r"^id\d+$")
_SEARCH_DEPTH = 3


def _subdirs(path: str) -> list[os.DirEntry]:
    try:
        with os.scandir(path) as it:
            return sorted((e for e in it if not e.name.startswith(".") and e.is_dir()), key=lambda e: e.name)
    except OSError as exc:
        raise InputError(f"{path}: cannot list ({exc.strerror or exc})") from exc


def _is_data_dir(path: str) -> bool:
    return any(_SPEAKER.match(e.name) for e in _subdirs(path))


def find_data_dirs(root: str | Path) -> list[str]:
    """The directories under `root` (itself included) that hold `idNNNNN` speaker directories."""
    found: list[str] = []
    level = [os.path.abspath(root)]
    for _ in range(_SEARCH_DEPTH + 1):
        nxt: list[str] = []
        for d in level:
            if _is_data_dir(d):
                found.append(d)
            else:
                nxt.extend(e.path for e in _subdirs(d))
        level = nxt
    return found


def _audio_files(path: str) -> list[str]:
    try:
        with os.scandir(path) as it:
            return sorted(e.name for e in it if not e.name.startswith(".")
                          and e.name.lower().endswith(AUDIO_EXTENSIONS) and e.is_file())
    except OSError as exc:
        raise InputError(f"{path}: cannot list ({exc.strerror or exc})") from exc


def _rank(name: str) -> tuple[int, str]:
    """Which of two files with one key to keep: libsndfile's formats (faster to decode) first."""
    ext = name[name.rfind("."):].lower()
    return (0 if ext in SNDFILE_EXTENSIONS else 1, ext)


def walk(root: str | Path) -> tuple[list[Utterance], int, list[str]]:
    """(utterances sorted by key, duplicate keys skipped, data dirs) of a VoxCeleb tree."""
    from dasv_cli.io.paths import require_dir

    require_dir(root, "a VoxCeleb directory (idNNNNN/VIDEO/NNNNN.wav|m4a under it)")
    data_dirs = find_data_dirs(root)
    if not data_dirs:
        raise InputError(f"{root}: no VoxCeleb layout here (expected idNNNNN/VIDEO/NNNNN.wav or .m4a "
                         f"in it or up to {_SEARCH_DEPTH} levels below, e.g. wav/ or dev/aac/)")
    chosen: dict[str, tuple[str, Utterance]] = {}
    duplicates = 0
    for data_dir in data_dirs:
        for spk in _subdirs(data_dir):
            if not _SPEAKER.match(spk.name):
                continue
            for video in _subdirs(spk.path):
                for name in _audio_files(video.path):
                    key = f"{spk.name}/{video.name}/{key_of(name)}"
                    utt = Utterance(key=key, path=os.path.join(video.path, name), speaker=spk.name)
                    if key in chosen:
                        duplicates += 1
                        if _rank(name) >= _rank(chosen[key][0]):
                            continue
                    chosen[key] = (name, utt)
    if not chosen:
        raise InputError(f"{root}: speaker directories but no audio files (idNNNNN/VIDEO/NNNNN.wav|m4a)")
    return [chosen[k][1] for k in sorted(chosen)], duplicates, data_dirs


def prepare_voxceleb(root: str | Path, out_dir: str | Path, trials: Sequence[str | Path] = (),
                     drop_missing: bool = False, keep_trial_speakers: bool = False,
                     show_progress: bool = True) -> Summary:
    """Walk a VoxCeleb tree and write DIR/audio.lst, train_labels.txt and the checked trial lists."""
    utts, duplicates, data_dirs = walk(root)
    summary = Summary(layout="voxceleb", source=str(root), out_dir=str(out_dir), duplicates=duplicates,
                      data_dirs=data_dirs)
    return finish(summary, utts, out_dir, trials, drop_missing, keep_trial_speakers, show_progress)
