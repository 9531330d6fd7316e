"""Text lists -> typed records: audio lists, train labels, trial lists, key lists.

Every reader accepts a path or `-` (stdin), tolerates a UTF-8 BOM, Windows line endings, blank lines
and `#` comments, and reports malformed content as `file:line: what is wrong`.

Fields: a line with a TAB is split on TABs only, so a key may hold spaces (`my file with spaces`);
a line without one is split on whitespace (the classic forms). Every text file dasv writes follows
the same rule (`join_fields`), so any key it stored reads back. A key never holds a TAB or a newline:
the audio list, where keys are made, cannot express one.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from dasv_cli.errors import InputError, where
from dasv_cli.io.audio import AUDIO_EXTENSIONS  # what names audio (libsndfile's and FFmpeg's)
from dasv_cli.io.paths import require_file


def key_of(path: str) -> str:
    """The utterance key for a path as written in a list: audio extension stripped, `/` separators."""
    p = path.replace("\\", "/")
    while p.startswith("./"):
        p = p[2:]
    lower = p.lower()
    for ext in AUDIO_EXTENSIONS:
        if lower.endswith(ext):
            return p[: -len(ext)]
    return p


def _open_text(src: str | Path) -> tuple[str, list[str]]:
    """(display name, lines) for a path or `-`; decoding and missing files become InputError."""
    if str(src) == "-":
        data = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read().encode()
        name = "<stdin>"
    else:
        name = str(src)
        path = require_file(src, "a list file")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise InputError(f"{name}: cannot read ({exc.strerror or exc})") from exc
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputError(f"{where(name, line)}: not UTF-8 text (is this a binary file?)") from exc
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        raise InputError(f"{where(name, line)}: contains NUL bytes (is this a binary file?)")
    return name, text.splitlines()


def iter_lines(src: str | Path, comments: list[str] | None = None) -> Iterator[tuple[str, int, str]]:
    """(file name, 1-based line number, stripped line) for each content line (not blank, not `#`);
    the `#` lines are appended to `comments` when it is given."""
    name, lines = _open_text(src)
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            if line and comments is not None:
                comments.append(line)
            continue
        yield name, number, line


def split_fields(line: str) -> list[str]:
    """A line's fields: TAB-separated (each stripped) when it has a TAB, else whitespace-separated."""
    return [f.strip() for f in line.split("\t")] if "\t" in line else line.split()


def join_fields(fields: Sequence[str]) -> str:
    """One line (no newline) that split_fields reads back as `fields`: spaces between them, or TABs
    when a field holds whitespace (a key with spaces)."""
    return ("\t" if any(any(c.isspace() for c in f) for f in fields) else " ").join(fields)


def iter_fields(src: str | Path, comments: list[str] | None = None) -> Iterator[tuple[str, int, list[str]]]:
    """(file name, 1-based line number, fields as split_fields splits them) for each content line."""
    for name, number, line in iter_lines(src, comments):
        yield name, number, split_fields(line)


@dataclass(frozen=True)
class AudioEntry:
    """One line of an audio list: where the file is, the key it is stored under, where it was listed."""

    key: str
    path: Path
    line: int


def read_audio_list(src: str | Path, audio_dir: str | Path | None = None) -> list[AudioEntry]:
    """Parse an audio list; duplicate keys are refused before any work, naming both lines.

    A line is one path (spaces inside a path are kept: the whole stripped line is the path), keyed
    by `key_of`; or `key<TAB>path`, for utterances whose ids are not their paths (Kaldi's utt ids,
    `dasv prepare`'s lists). A path whose final component has no suffix gets `.wav` (the original
    tool's convention: `id10270/x6uYqmx31kE/00001`, `spk.1/utt`); one with any suffix is opened
    as written (`a.m4a`, `x.sph`, `utt.v2`), so an unknown format is tried, never renamed.
    """
    name, lines = _open_text(src)
    base = Path(audio_dir) if audio_dir is not None else None
    entries: list[AudioEntry] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(lines, start=1):
        text = raw.strip()
        if not text or text.startswith("#"):
            continue
        key, text = _key_and_path(text, name, number)
        if key in seen:
            raise InputError(
                f"{where(name, number)}: duplicate key {key!r} (first at line {seen[key]})"
            )
        seen[key] = number
        path = Path(text if has_suffix(text) else text + ".wav")
        if base is not None and not path.is_absolute():
            path = base / path
        entries.append(AudioEntry(key=key, path=path, line=number))
    if not entries:
        raise InputError(f"{name}: the list is empty (no audio paths)")
    return entries


def _key_and_path(text: str, name: str, number: int) -> tuple[str, str]:
    """(key, path as written) of one stripped audio-list line: `path` or `key<TAB>path`."""
    if "\t" in text:
        fields = [f.strip() for f in text.split("\t")]
        if len(fields) != 2:  # the line is stripped: neither field is empty
            raise InputError(f"{where(name, number)}: expected 'key<TAB>path' (one TAB), "
                             f"got {len(fields)} TAB-separated fields")
        key, text = key_of(fields[0]), fields[1]
        if not key or key.endswith("/"):
            raise InputError(f"{where(name, number)}: not a key: {fields[0]!r}")
        if text.endswith(("/", "\\")):
            raise InputError(f"{where(name, number)}: not a file path: {text!r}")
        return key, text
    key = key_of(text)
    if not key or key.endswith("/"):
        raise InputError(f"{where(name, number)}: not a file path: {text!r}")
    return key, text


def has_suffix(path: str) -> bool:
    """Whether the final component of `path` has a suffix (`a.m4a`, `u.v2`; not `spk.1/utt`, `.x`)."""
    last = path.replace("\\", "/").rsplit("/", 1)[-1]
    dot = last.rfind(".")
    return 0 < dot < len(last) - 1


@dataclass
class Labels:
    """Train labels: keys, integer labels 0..N-1, and speaker names when the file gave names."""

    keys: list[str]
    labels: np.ndarray  # int64 [n]
    names: list[str] | None = None  # names[label] when the file used speaker names
    num_classes: int = 0
    lines: list[int] = field(default_factory=list)


def _is_int(text: str) -> bool:
    try:
        int(text)
        return True
    except ValueError:
        return False


def read_train_labels(src: str | Path) -> Labels:
    """`key label [None|-1]` (labels must be 0..N-1, every one present) or `key speaker_name`."""
    keys: list[str] = []
    raw_labels: list[str] = []
    lines: list[int] = []
    seen: dict[str, int] = {}
    name = str(src)
    for name, number, fields in iter_fields(src):
        if len(fields) not in (2, 3):
            raise InputError(
                f"{where(name, number)}: expected 'key label [x]', got {len(fields)} fields"
            )
        key = key_of(fields[0])
        if key in seen:
            raise InputError(f"{where(name, number)}: duplicate key {key!r} (first at line {seen[key]})")
        seen[key] = number
        keys.append(key)
        if len(fields[1].split()) != 1:
            raise InputError(f"{where(name, number)}: label {fields[1]!r} holds spaces (a TAB-separated line "
                             f"is 'key<TAB>label[<TAB>x]')")
        raw_labels.append(fields[1])
        lines.append(number)
    if not keys:
        raise InputError(f"{name}: the label file is empty")
    numeric = all(_is_int(v) for v in raw_labels)
    if numeric:
        labels = np.array([int(v) for v in raw_labels], dtype=np.int64)
        bad = np.flatnonzero(labels < 0)
        if bad.size:
            i = int(bad[0])
            raise InputError(f"{where(name, lines[i])}: label {labels[i]} is negative (labels must be 0..N-1)")
        n = int(labels.max()) + 1
        present = np.zeros(n, dtype=bool)
        present[labels] = True
        if not present.all():
            missing = np.flatnonzero(~present)
            shown = ", ".join(str(int(m)) for m in missing[:5])
            raise InputError(
                f"{name}: labels must be 0..N-1 with every label used; {missing.size} of 0..{n - 1} "
                f"never appear ({shown}{', ...' if missing.size > 5 else ''})"
            )
        return Labels(keys=keys, labels=labels, names=None, num_classes=n, lines=lines)
    names = sorted(set(raw_labels))
    index = {s: i for i, s in enumerate(names)}
    labels = np.array([index[v] for v in raw_labels], dtype=np.int64)
    return Labels(keys=keys, labels=labels, names=names, num_classes=len(names), lines=lines)


@dataclass
class Trials:
    """Verification trials: pairs of keys and 1 (same speaker) / 0 (different speakers)."""

    key1: list[str]
    key2: list[str]
    labels: np.ndarray  # int8 [n], 1 target, 0 non-target
    # where each trial was read, for errors that name a key: its line, and (first trial, file) per file
    lines: np.ndarray | None = None
    files: tuple[tuple[int, str], ...] = ()

    def __len__(self) -> int:
        return len(self.key1)

    def where(self, i: int) -> str | None:
        """'FILE:LINE' of trial `i` when the trials were read from files, else None."""
        if self.lines is None or not self.files:
            return None
        return f"{[name for first, name in self.files if first <= i][-1]}:{int(self.lines[i])}"

    def unique_keys(self) -> list[str]:
        """Each utterance once, in first-seen order (so each is embedded once)."""
        return list(dict.fromkeys(k for pair in zip(self.key1, self.key2) for k in pair))


_TARGET_WORDS = {"target": 1, "nontarget": 0, "non-target": 0}


def read_trials(src: str | Path) -> Trials:
    """A trial list in VoxCeleb (`1|0 key1 key2`) or Kaldi (`key1 key2 target|nontarget`) form."""
    k1: list[str] = []
    k2: list[str] = []
    labels: list[int] = []
    lines: list[int] = []
    name = str(src)
    for name, number, fields in iter_fields(src):
        lines.append(number)
        if len(fields) != 3:
            raise InputError(
                f"{where(name, number)}: expected '1|0 key1 key2' or 'key1 key2 target|nontarget', "
                f"got {len(fields)} fields"
            )
        if fields[0] in ("0", "1"):
            labels.append(int(fields[0]))
            k1.append(key_of(fields[1]))
            k2.append(key_of(fields[2]))
        elif fields[2].lower() in _TARGET_WORDS:
            labels.append(_TARGET_WORDS[fields[2].lower()])
            k1.append(key_of(fields[0]))
            k2.append(key_of(fields[1]))
        else:
            raise InputError(
                f"{where(name, number)}: cannot tell the trial label: first field must be 1 or 0 "
                f"(VoxCeleb) or last field target/nontarget (Kaldi)"
            )
    if not k1:
        raise InputError(f"{name}: the trial list is empty")
    return Trials(k1, k2, np.asarray(labels, dtype=np.int8), np.asarray(lines, dtype=np.int64), ((0, name),))


def _read_pairs(src: str | Path) -> tuple[list[str], list[str], str, list[int]]:
    k1: list[str] = []
    k2: list[str] = []
    lines: list[int] = []
    name = str(src)
    for name, number, fields in iter_fields(src):
        if len(fields) != 2:
            raise InputError(f"{where(name, number)}: expected 'key1 key2', got {len(fields)} fields")
        k1.append(key_of(fields[0]))
        k2.append(key_of(fields[1]))
        lines.append(number)
    return k1, k2, name, lines


def read_trial_pair(clients: str | Path, impostors: str | Path) -> Trials:
    """The original tool's pair of trial files: clients (same speaker) and impostors (different)."""
    c1, c2, cname, clines = _read_pairs(clients)
    i1, i2, iname, ilines = _read_pairs(impostors)
    if not c1:
        raise InputError(f"{cname}: the client (same-speaker) trial list is empty")
    if not i1:
        raise InputError(f"{iname}: the impostor (different-speaker) trial list is empty")
    labels = np.concatenate([np.ones(len(c1), dtype=np.int8), np.zeros(len(i1), dtype=np.int8)])
    return Trials(c1 + i1, c2 + i2, labels, np.asarray(clines + ilines, dtype=np.int64), ((0, cname), (len(c1), iname)))


def read_key_list(src: str | Path) -> list[str]:
    """One key (or audio path) per line, first field; duplicates dropped, order kept."""
    keys = [key_of(fields[0]) for _, _, fields in iter_fields(src)]
    if not keys:
        raise InputError(f"{src}: the key list is empty")
    return list(dict.fromkeys(keys))
