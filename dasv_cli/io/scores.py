"""The scores TSV that `dasv score` writes, read back: `key1<TAB>key2<TAB>score[<TAB>label]` per line.

Keys go through `key_of` as in every list (an audio extension is stripped). Labels are 1 (same
speaker) and 0 (different speakers); a file has them on every line or on none.
Blank lines and `#` comments are skipped; malformed lines are reported as `file:line: what is wrong`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dasv_cli.errors import InputError, where
from dasv_cli.io.lists import iter_fields, key_of


@dataclass
class ScoreList:
    """Scored trials: both keys, the score (float64) and, when the file had them, the labels (bool)."""

    key1: list[str]
    key2: list[str]
    scores: np.ndarray
    labels: np.ndarray | None

    def __len__(self) -> int:
        return len(self.key1)


def read_scores(src: str | Path) -> ScoreList:
    """Parse a scores TSV (a path or `-`); every score must be a finite number."""
    k1: list[str] = []
    k2: list[str] = []
    scores: list[float] = []
    labels: list[int] = []
    width = None
    name = str(src)
    for name, number, fields in iter_fields(src):
        if len(fields) not in (3, 4):
            raise InputError(f"{where(name, number)}: expected 'key1 key2 score [label]', got {len(fields)} fields")
        if width is None:
            width = len(fields)
        elif len(fields) != width:
            raise InputError(f"{where(name, number)}: {len(fields)} fields, but earlier lines have {width} "
                             f"(labels must be on every line or on none)")
        try:
            value = float(fields[2])
        except ValueError:
            raise InputError(f"{where(name, number)}: score {fields[2]!r} is not a number") from None
        if not math.isfinite(value):
            raise InputError(f"{where(name, number)}: score {fields[2]!r} is not finite")
        if width == 4:
            if fields[3] not in ("0", "1"):
                raise InputError(f"{where(name, number)}: label {fields[3]!r} must be 1 (target) or 0 (non-target)")
            labels.append(int(fields[3]))
        k1.append(key_of(fields[0]))
        k2.append(key_of(fields[1]))
        scores.append(value)
    if not k1:
        raise InputError(f"{name}: the scores file is empty")
    return ScoreList(k1, k2, np.asarray(scores, dtype=np.float64),
                     np.asarray(labels, dtype=bool) if width == 4 else None)
