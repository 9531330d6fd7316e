"""`dasv inspect` (being written)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Placeholder until the command lands: registers nothing."""
    return None
