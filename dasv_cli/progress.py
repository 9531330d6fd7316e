"""Progress and log lines for people, always on stderr, so stdout carries data only."""

from __future__ import annotations

import os
import sys
from typing import Any

from typing import TYPE_CHECKING

from rich.console import Console

if TYPE_CHECKING:  # pragma: no cover
    from rich.progress import Progress

LOG_WIDTH = 200  # the width of a progress line when stderr is no terminal
_console: Console | None = None
_quiet = False


def console() -> Console:
    """The shared stderr console (created on first use, never at import)."""
    global _console
    if _console is None:
        _console = Console(stderr=True, highlight=False, soft_wrap=True)
        if not _console.is_terminal and "COLUMNS" not in os.environ:
            # A log file or pipe: rich would crop each progress line at 80 columns (the times read
            # `0:00:…`); such a line is printed once, at the end, so give it the room it takes.
            _console.width = LOG_WIDTH
    return _console


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = quiet


def is_quiet() -> bool:
    return _quiet


def log(message: str, *, force: bool = False) -> None:
    """One line for people on stderr (rich markup allowed); silent under --quiet unless forced."""
    if _quiet and not force:
        return
    console().print(message)


def warn(message: str) -> None:
    """A warning line on stderr; shown even under --quiet."""
    console().print(f"[yellow]dasv: warning:[/yellow] {message}")


def make_progress(*extra_columns: Any, transient: bool = False) -> "Progress":
    """A rich Progress on stderr with the usual columns; disabled under --quiet or when not wanted."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        *extra_columns,
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console(),
        transient=transient,
        disable=_quiet,
        refresh_per_second=4,
    )


def stdout_write(text: str) -> None:
    """Data to stdout (used by commands whose output feeds pipelines)."""
    sys.stdout.write(text)
