"""The scores TSV, `key1<TAB>key2<TAB>score[<TAB>label]` per line: written by `dasv score` (to a stream, or
to a file atomically) and read back (`dasv calibrate`).

Keys go through `key_of` as in every list (an audio extension is stripped). Labels are 1 (same
speaker) and 0 (different speakers); a file has them on every line or on none. A scores file written
with the model known starts with `# dasv-scores checkpoint_sha256=HEX checkpoint=PATH`, which `dasv
calibrate` reads to tie its calibration to that model (stdout carries no such line).
Blank lines and `#` comments are skipped; malformed lines are reported as `file:line: what is wrong`.
"""

from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator

import numpy as np

from dasv_cli.errors import InputError, where
from dasv_cli.io.atomic import write_text_atomic
from dasv_cli.io.lists import Trials, iter_fields, key_of

HEADER = "# dasv-scores"
_HEADER_RE = re.compile(r"^# dasv-scores checkpoint_sha256=([0-9a-f]{64})(?: checkpoint=(.*))?$")


@dataclass
class ScoreList:
    """Scored trials: both keys, the score (float64) and, when the file had them, the labels (bool)."""

    key1: list[str]
    key2: list[str]
    scores: np.ndarray
    labels: np.ndarray | None
    model: dict[str, str] | None = None  # the header's model (io.embeddings.model_identity), if any

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
    comments: list[str] = []
    for name, number, fields in iter_fields(src, comments):
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
    model = None
    for comment in comments[:1]:
        m = _HEADER_RE.match(comment)
        if m:
            model = {"checkpoint_sha256": m.group(1), "checkpoint": m.group(2) or "?"}
    return ScoreList(k1, k2, np.asarray(scores, dtype=np.float64),
                     np.asarray(labels, dtype=bool) if width == 4 else None, model)


def _tsv_chunks(trials: Trials, scores: np.ndarray, chunk: int = 100_000) -> Iterator[str]:
    labels = trials.labels
    for start in range(0, len(trials), chunk):
        stop = min(start + chunk, len(trials))
        yield "".join(
            f"{a}\t{b}\t{s:.6f}\t{int(y)}\n"
            for a, b, s, y in zip(trials.key1[start:stop], trials.key2[start:stop],
                                  scores[start:stop].tolist(), labels[start:stop].tolist())
        )


def write_scores(stream: IO[str] | None, trials: Trials, scores: np.ndarray) -> None:
    """TSV `key1 key2 score label` to a stream (stdout when None), in chunks (millions of trials)."""
    out = stream or sys.stdout
    for text in _tsv_chunks(trials, scores):
        out.write(text)
    out.flush()


def write_scores_file(path: str | Path, trials: Trials, scores: np.ndarray,
                      model: dict[str, str] | None = None) -> None:
    """The scores TSV written to a temporary file beside `path`, then renamed (never half a file);
    with `model` (io.embeddings.model_identity) its header line first."""
    def write(fh: IO[str]) -> None:
        if model and model.get("checkpoint_sha256"):
            fh.write(f"{HEADER} checkpoint_sha256={model['checkpoint_sha256']} checkpoint={model.get('checkpoint', '?')}\n")
        write_scores(fh, trials, scores)

    write_text_atomic(path, "scores", write)
