"""The inputs a run could not use: DIR/failed.tsv, or DIR/failed-pIIIIofNNNN.tsv for a part
(path<TAB>reason, with a header line); each describes the last run of its writer."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TextIO

from dasv_cli.io.atomic import write_text_atomic
from dasv_cli.io.store.layout import Part, failed_name, list_failed
from dasv_cli.io.store.writer import remove_file


def write_failed(out: Path, failed: list[tuple[str, str]], part: Part | None = None) -> Path | None:
    """The failed list of this run (or part), written atomically; removed when nothing failed."""
    target = out / failed_name(part)
    if not failed:
        remove_file(target)
        return None

    def write(fh: TextIO) -> None:
        fh.write("path\treason\n")
        for path, reason in failed:  # one line each: no tabs or newlines inside a field
            fh.write(f"{path.replace(chr(9), ' ')}\t{' '.join(str(reason).split())}\n")
        fh.flush()
        os.fsync(fh.fileno())

    write_text_atomic(target, "the list of failed inputs", write)
    return target


def failed_counts(out: Path) -> list[tuple[Path, int]]:
    """(failed list, inputs it lists) for every failed list in DIR: the run's and each part's."""
    counts = []
    for path in list_failed(out):
        with open(path, encoding="utf-8", errors="replace") as fh:
            n = max(0, sum(1 for line in fh if line.strip()) - 1)  # minus the header
        if n:
            counts.append((path, n))
    return counts
