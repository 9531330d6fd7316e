"""A Kaldi data dir -> dasv lists: `wav.scp` (`utt path`), `utt2spk` (`utt speaker`), optional `trials`.

The utterance id is the key (`dasv features` stores it under that id through audio.lst's
`key<TAB>path` lines, whatever the file is called). Relative paths in wav.scp are taken from the
current directory, as Kaldi takes them (run from the recipe directory). dasv never runs a command
found in a data file: an entry that is a pipe (`sox x.flac -t wav - |`), stdin (`-`) or an offset
into an archive (`raw.ark:123`) is refused with its file and line; write the audio to files and list
those. A `segments` file (utterances cut from longer recordings) is refused the same way.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence

from dasv_cli.errors import InputError, where
from dasv_cli.io.lists import iter_lines, key_of
from dasv_cli.prepare.corpus import Summary, Utterance, finish

_ARCHIVE = re.compile(r"\.ark:\d+(\[[^\]]*\])?$")


def read_wav_scp(path: str | Path) -> dict[str, tuple[str, int]]:
    """utt -> (absolute file path, line) from a wav.scp; pipes, stdin and archives are refused."""
    entries: dict[str, tuple[str, int]] = {}
    for name, number, line in iter_lines(path):
        parts = line.split(None, 1)
        if len(parts) != 2:
            raise InputError(f"{where(name, number)}: expected 'utt path', got only {parts[0]!r}")
        utt, target = parts[0], parts[1].strip()
        if target.endswith("|") or target.startswith("|"):
            raise InputError(f"{where(name, number)}: {utt} is a command pipe ({target[:60]!r}); dasv never "
                             f"runs commands from a data file: write the audio to files and list their paths")
        if target == "-":
            raise InputError(f"{where(name, number)}: {utt} reads stdin ('-'); list an audio file instead")
        if _ARCHIVE.search(target):
            raise InputError(f"{where(name, number)}: {utt} points into a Kaldi archive ({target!r}); "
                             f"dasv reads audio files: extract them and list their paths")
        if utt in entries:
            raise InputError(f"{where(name, number)}: duplicate utterance {utt!r} (first at line {entries[utt][1]})")
        entries[utt] = (os.path.abspath(target), number)
    return entries


def read_utt2spk(path: str | Path, wavs: dict[str, tuple[str, int]]) -> dict[str, str]:
    """utt -> speaker; every utterance must be in wav.scp."""
    speakers: dict[str, str] = {}
    lines: dict[str, int] = {}
    for name, number, line in iter_lines(path):
        fields = line.split()
        if len(fields) != 2:
            raise InputError(f"{where(name, number)}: expected 'utt speaker', got {len(fields)} fields")
        utt, spk = fields
        if utt in speakers:
            raise InputError(f"{where(name, number)}: duplicate utterance {utt!r} (first at line {lines[utt]})")
        if utt not in wavs:
            raise InputError(f"{where(name, number)}: utterance {utt!r} is not in wav.scp")
        speakers[utt] = spk
        lines[utt] = number
    return speakers


def read_data_dir(data_dir: str | Path) -> list[Utterance]:
    """The utterances of a Kaldi data dir, in wav.scp's order."""
    from dasv_cli.io.paths import require_dir, require_file

    d = require_dir(data_dir, "a Kaldi data directory (wav.scp, utt2spk)")
    if (d / "segments").exists():
        raise InputError(f"{d / 'segments'}: segments (utterances cut from longer recordings) are not supported: "
                         f"cut them into files (e.g. with sox) and list those in wav.scp")
    wav_scp = require_file(d / "wav.scp", "a wav.scp file", "no such file (a Kaldi data dir has wav.scp)")
    utt2spk = require_file(d / "utt2spk", "a utt2spk file", "no such file (a Kaldi data dir has utt2spk)")
    wavs = read_wav_scp(wav_scp)
    if not wavs:
        raise InputError(f"{wav_scp}: no utterances")
    speakers = read_utt2spk(utt2spk, wavs)
    utts: list[Utterance] = []
    seen: dict[str, str] = {}
    for utt, (path, number) in wavs.items():
        if utt not in speakers:
            raise InputError(f"{where(wav_scp, number)}: utterance {utt!r} has no speaker in {utt2spk}")
        key = key_of(utt)
        if key in seen:
            raise InputError(f"{where(wav_scp, number)}: utterance {utt!r} has the same dasv key {key!r} as "
                             f"{seen[key]!r} (an audio extension is stripped from keys)")
        seen[key] = utt
        utts.append(Utterance(key=key, path=path, speaker=speakers[utt]))
    return utts


def prepare_kaldi(data_dir: str | Path, out_dir: str | Path, trials: Sequence[str | Path] = (),
                  drop_missing: bool = False, keep_trial_speakers: bool = False,
                  show_progress: bool = True) -> Summary:
    """Convert a Kaldi data dir: DIR/audio.lst (`utt<TAB>path`), train_labels.txt and trial lists
    (DATA_DIR/trials when present, then `trials`)."""
    utts = read_data_dir(data_dir)
    own = Path(data_dir) / "trials"
    files = ([own] if own.is_file() else []) + list(trials)
    summary = Summary(layout="kaldi", source=str(data_dir), out_dir=str(out_dir))
    return finish(summary, utts, out_dir, files, drop_missing, keep_trial_speakers, show_progress)
