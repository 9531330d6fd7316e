"""DIR/failed.tsv: the inputs a run could not use (path<TAB>reason, with a header line)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TextIO

from dasv_cli.io.atomic import write_text_atomic
from dasv_cli.io.store.layout import FAILED_NAME
from dasv_cli.io.store.writer import remove_file


def write_failed(out: Path, failed: list[tuple[str, str]]) -> Path | None:
    """DIR/failed.tsv, written atomically; removed when nothing failed (it always describes the last run)."""
    target = out / FAILED_NAME
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


def count_failed(out: Path) -> int:
    """Inputs listed in DIR/failed.tsv (0 when there is none)."""
    path = out / FAILED_NAME
    if not path.is_file():
        return 0
    with open(path, encoding="utf-8", errors="replace") as fh:
        return max(0, sum(1 for line in fh if line.strip()) - 1)  # minus the header
