"""`dasv inspect`: what a feature store holds (utterances, hours, frames, recipe, failed inputs)."""

from __future__ import annotations

from pathlib import Path

import typer

EPILOG = """\
[bold]Examples[/bold]

  dasv inspect feats/

  dasv inspect feats/ --json | python -c 'import json,sys; print(json.load(sys.stdin)["hours"])'
"""


def register(app: typer.Typer) -> None:
    app.command("inspect", epilog=EPILOG)(inspect)


def inspect(
    store: Path = typer.Argument(..., metavar="DIR", help="A feature store made by `dasv features`.",
                                 show_default=False),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON (machine-readable)."),
) -> None:
    """Summarise a feature store on stdout: utterances, hours of audio, frames, shards, size, recipe, failed inputs."""
    import json
    import sys

    from dasv_cli.features.summary import summarise_store

    info = summarise_store(store)
    if json_out:
        sys.stdout.write(json.dumps(info, indent=2) + "\n")
        return
    lines = [
        f"store       {info['path']}",
        f"utterances  {info['utterances']}",
        f"hours       {info['hours']:.3f}",
        f"frames      {info['frames']}",
        f"shards      {info['shards']} ({info['bytes'] / 1e6:.1f} MB, {info['dtype']})",
        f"failed      {info['failed']}" + (f" (see {info['failed_list']})" if info["failed"] else ""),
        "recipe      " + ", ".join(f"{k}={v}" for k, v in info["recipe"].items()),
    ]
    sys.stdout.write("\n".join(lines) + "\n")
