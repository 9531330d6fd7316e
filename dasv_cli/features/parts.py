"""`--part I/N`: one of N writers that fill one store directory at once (N cluster jobs, one list).

Part I (1-based, I = 1..N) takes entries I, I+N, I+2N, ... of the list, in list order, so the N
parts cover the list exactly once whatever its order, and each part's files carry the part in their
names (io.store.layout), so parts never collide. A SLURM array of N tasks numbered 1..N runs
`dasv features LIST -o DIR --part $SLURM_ARRAY_TASK_ID/N`.
"""

from __future__ import annotations

import re
from typing import Sequence, TypeVar

from dasv_cli.errors import UsageError
from dasv_cli.io.store.layout import Part

T = TypeVar("T")

_PART_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def parse_part(text: str) -> Part:
    """`3/8` -> Part(3, 8); anything else is a one-line UsageError saying what is expected."""
    m = _PART_RE.match(text)
    if not m:
        raise UsageError(f"--part must be I/N with whole numbers, 1 <= I <= N (e.g. --part 3/8), got {text!r}")
    index, count = int(m.group(1)), int(m.group(2))
    if count < 1:
        raise UsageError(f"--part {text}: N must be at least 1")
    if index == 0:
        raise UsageError(f"--part {text}: parts are numbered from 1 to {count} (for a SLURM array "
                         f"numbered from 0, use --part $((SLURM_ARRAY_TASK_ID + 1))/{count})")
    if index > count:
        raise UsageError(f"--part {text}: there are only {count} parts (I must be 1..{count})")
    return Part(index, count)


def select_part(entries: Sequence[T], part: Part | None) -> list[T]:
    """The entries of `part` (every count-th, from the index-th on), or all of them without a part."""
    if part is None:
        return list(entries)
    return list(entries[part.index - 1::part.count])
