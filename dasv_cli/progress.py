"""Progress and log lines for people, always on stderr, so stdout carries data only."""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

_console: Console | None = None
_quiet = False


def console() -> Console:
    """The shared stderr console (created on first use, never at import)."""
    global _console
    if _console is None:
        _console = Console(stderr=True, highlight=False, soft_wrap=True)
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


def make_progress(*extra_columns: Any, transient: bool = False) -> Progress:
    """A rich Progress on stderr with the usual columns; disabled under --quiet or when not wanted."""
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
