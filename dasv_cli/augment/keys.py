"""Keys of augmented copies and the speaker classes they belong to: the one place both rules live.

An augmented copy of the utterance `KEY` is stored under `KEY#KIND` (copy 1) or `KEY#KIND-N` (copy N,
N >= 2), KIND one of `KINDS`, e.g. `id10270/x6uYqmx31kE/00001#reverb`, `...#music-2`, `...#speed0.9`.

Why `#`: it never needs quoting in a list, a label file, a trial list or a shell word (only a `#` at
the start of a line or word starts a comment, and no key starts with `#`: such a list line is a
comment); whitespace, `|` and `,` are field separators somewhere, `/` is a path separator, `.`
starts an extension. A path may still contain `#`, so the suffix is a closed grammar (`parse_key`)
and `check_clean_key` refuses a clean key that reads as a derived one (`a#reverb.wav`): no derived
key can be the key of a real file that is being augmented.

Speed-perturbed copies are new speakers (WeSpeaker): class `label + n * i`, where n is the number
of clean classes and i the position (1, 2) of the factor among the speed kinds in use.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Sequence

from dasv_cli.errors import InputError, UsageError

SEPARATOR = "#"
ADDITIVE = ("noise", "music", "babble")
SPEEDS = ("speed0.9", "speed1.1")
KINDS = ("reverb",) + ADDITIVE + SPEEDS
SPEED_FACTORS = {"speed0.9": 0.9, "speed1.1": 1.1}

_SUFFIX = re.compile(r"(?P<kind>" + "|".join(re.escape(k) for k in KINDS) + r")(?:-(?P<copy>[1-9][0-9]*))?")


@dataclass(frozen=True)
class AugKey:
    """A parsed derived key: the clean utterance, the augmentation, the copy number (1-based)."""

    clean: str
    kind: str
    copy: int = 1

    @property
    def key(self) -> str:
        return derive_key(self.clean, self.kind, self.copy)


def derive_key(key: str, kind: str, copy: int = 1) -> str:
    """`KEY#KIND` for copy 1, `KEY#KIND-N` for copy N >= 2."""
    if kind not in KINDS:
        raise UsageError(f"unknown augmentation {kind!r} (choose from {', '.join(KINDS)})")
    if copy < 1:
        raise UsageError(f"augmentation copies are numbered from 1, got {copy}")
    return f"{key}{SEPARATOR}{kind}" + (f"-{copy}" if copy > 1 else "")


def parse_key(key: str) -> AugKey | None:
    """The AugKey a derived key names, or None for a clean key (anything not in the grammar)."""
    clean, sep, suffix = key.rpartition(SEPARATOR)
    if not sep or not clean:
        return None
    m = _SUFFIX.fullmatch(suffix)
    if m is None:
        return None
    copy = int(m.group("copy") or 1)
    if m.group("copy") == "1":  # one spelling per copy: copy 1 has no suffix
        return None
    return AugKey(clean, m.group("kind"), copy)


def clean_key(key: str) -> str:
    """The clean utterance a key belongs to (itself for a clean key)."""
    parsed = parse_key(key)
    return parsed.clean if parsed else key


def check_clean_key(key: str, where: str = "") -> None:
    """Refuse a clean key that reads as a derived one: its copies' keys could collide with real files."""
    if parse_key(key) is not None:
        prefix = f"{where}: " if where else ""
        raise InputError(f"{prefix}key {key!r} reads as an augmented copy (KEY{SEPARATOR}KIND); "
                         f"rename the file so that its name does not end in {SEPARATOR}KIND")


def parse_spec(spec: str | Iterable[str]) -> tuple[tuple[str, int], ...]:
    """`reverb,noise,music:2,speed` -> ((kind, copies), ...) in KINDS order; `speed` = both factors.

    `all` is reverb, noise, music and babble (Kaldi's four copies); `KIND:N` asks for N copies.
    """
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out: dict[str, int] = {}
    for raw in items:
        item = raw.strip()
        if not item:
            continue
        name, _, count = item.partition(":")
        try:
            copies = int(count) if count else 1
        except ValueError:
            raise UsageError(f"augmentation {item!r}: copies must be a whole number (KIND:N)") from None
        if copies < 1:
            raise UsageError(f"augmentation {item!r}: copies must be at least 1")
        names = {"all": ("reverb",) + ADDITIVE, "speed": SPEEDS}.get(name, (name,))
        for kind in names:
            if kind not in KINDS:
                raise UsageError(f"unknown augmentation {name!r} (choose from all, speed, {', '.join(KINDS)})")
            if kind in SPEED_FACTORS and copies > 1:
                raise UsageError(f"augmentation {item!r}: a speed copy has no random draw, so one is all there is")
            out[kind] = copies
    if not out:
        raise UsageError("no augmentation named (e.g. --augment reverb,noise,music,babble)")
    return tuple((k, out[k]) for k in KINDS if k in out)


def derived_keys(key: str, spec: Sequence[tuple[str, int]]) -> list[AugKey]:
    """Every copy `spec` asks for of the clean utterance `key`, in a fixed order."""
    return [AugKey(key, kind, c) for kind, copies in spec for c in range(1, copies + 1)]


def speeds_in(kinds: Iterable[str]) -> tuple[str, ...]:
    """The speed kinds among `kinds`, in SPEEDS order: the order their classes are numbered in."""
    present = set(kinds)
    return tuple(s for s in SPEEDS if s in present)


def num_classes(clean_classes: int, speeds: Sequence[str]) -> int:
    """Speaker classes of a training set whose speed-perturbed copies are new speakers."""
    return clean_classes * (1 + len(speeds))


def augmented_label(label: int, kind: str, clean_classes: int, speeds: Sequence[str]) -> int:
    """The class of a copy: the clean speaker's, or for a speed kind `label + clean_classes * i`
    (i = 1 + its position in `speeds`), as WeSpeaker numbers its speed-perturbed speakers."""
    if kind not in SPEED_FACTORS:
        return label
    if kind not in speeds:
        raise UsageError(f"{kind} copies in the data but not among the speed kinds in use ({', '.join(speeds) or 'none'})")
    return label + clean_classes * (1 + list(speeds).index(kind))


def augmented_speaker(name: str, kind: str) -> str:
    """The speaker name of a copy (label files with names): `NAME#speed0.9` for speed, else NAME."""
    return f"{name}{SEPARATOR}{kind}" if kind in SPEED_FACTORS else name
