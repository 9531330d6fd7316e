"""The scores TSV (`key1<TAB>key2<TAB>score<TAB>label`): to a stream, or to a file written atomically."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import IO, Iterator

import numpy as np

from dasv_cli.io.atomic import write_text_atomic
from dasv_cli.io.lists import Trials


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


def write_scores_file(path: str | Path, trials: Trials, scores: np.ndarray) -> None:
    """The scores TSV written to a temporary file beside `path`, then renamed (never half a file)."""
    write_text_atomic(path, "scores", lambda fh: write_scores(fh, trials, scores))
