"""`dasv inspect`: what a feature store holds (utterances, hours, frames, recipe, failed inputs)."""

from __future__ import annotations

from pathlib import Path

import typer

EPILOG = """\
[bold]Examples[/bold]

  dasv inspect feats/

  dasv inspect feats/ --json | python -c 'import json,sys; print(json.load(sys.stdin)["hours"])'

  dasv inspect feats/      [dim]# while `dasv features --part` jobs run: what they have finished[/dim]

  dasv inspect feats/ --verify   [dim]# read every shard whole and check it against its checksum[/dim]
"""


def register(app: typer.Typer) -> None:
    app.command("inspect", epilog=EPILOG)(inspect)


def inspect(
    store: Path = typer.Argument(..., metavar="DIR", help="A feature store made by `dasv features`.",
                                 show_default=False),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON (machine-readable)."),
    verify: bool = typer.Option(False, "--verify",
                                help="Read every shard whole and check its data against the checksum written with it; "
                                     "damaged shards are named and the exit code is 3."),
) -> None:
    """Summarise a feature store on stdout: utterances, hours of audio, frames, shards, size, recipe, failed
    inputs, and what an hour of speech costs: its 16-bit PCM (online augmentation), its features, each
    offline copy, this store; and those at VoxCeleb2's 2,300 h.

    Augmented copies (`dasv features --augment`, keys KEY#KIND) are counted apart from the clean
    utterances, per kind.

    A store filled by `dasv features --part I/N` runs is read whole: every part's shards and failed lists.
    """
    import json
    import sys

    from dasv_cli.errors import EXIT_PARTIAL, DasvError
    from dasv_cli.features.summary import summarise_store, verify_store

    checked, damaged = verify_store(store) if verify else (None, [])
    try:
        info = summarise_store(store)
    except DasvError:
        if not damaged:
            raise
        info = None  # a damaged shard can make the store unreadable: the verdicts are the report
    if json_out:
        out = dict(info or {"path": str(store)})
        if checked is not None:
            out["verify"] = checked
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
    else:
        sys.stdout.write("".join(line + "\n" for line in
                                 (_summary_lines(info) if info else []) + _verify_lines(checked)))
    if damaged:
        from dasv_cli.io.store.integrity import damaged_message
        from dasv_cli.progress import warn

        warn(damaged_message(store, damaged))
        raise typer.Exit(EXIT_PARTIAL)


def _verify_lines(checked: dict | None) -> list[str]:
    """`verified    3 shards: 2 ok, 1 damaged, 0 without checksum`, then a line per shard not ok."""
    if checked is None:
        return []
    lines = [f"verified    {checked['shards']} shards: {checked['ok']} ok, {len(checked['damaged'])} damaged, "
             f"{len(checked['no_checksum'])} without checksum"]
    lines += [f"damaged     {name}" for name in checked["damaged"]]
    lines += [f"no checksum {name}" for name in checked["no_checksum"]]
    return lines


def _summary_lines(info: dict) -> list[str]:
    failed_lists = ", ".join(f"{path} ({n})" if len(info["failed_lists"]) > 1 else path
                             for path, n in info["failed_lists"].items())
    lines = [
        f"store       {info['path']}",
        f"utterances  {info['utterances']}" + (f" ({info['clean']} clean, {info['augmented']} augmented copies)"
                                               if info["augmented"] else ""),
        *([f"augmented   " + ", ".join(f"{k} {n}" for k, n in info["augmented_kinds"].items())]
          if info["augmented"] else []),
        *([f"made from   {_sources_line(info['augment'])}"] if info["augment"] else []),
        f"hours       {info['hours']:.3f}",
        f"frames      {info['frames']}",
        f"shards      {info['shards']} ({info['bytes'] / 1e6:.1f} MB, {_content(info)})",
        *([f"parts       {_parts_line(info['parts'])}"] if info["parts"] else []),
        f"failed      {info['failed']}" + (f" (see {failed_lists})" if info["failed"] else ""),
        "recipe      " + ", ".join(f"{k}={v}" for k, v in info["recipe"].items()),
        *_storage_lines(info["storage_per_hour"], info["dtype"]),
    ]
    return lines


def _content(info: dict) -> str:
    """`float32`, `float32 features + 16-bit PCM`, `16-bit PCM only`."""
    return {"features": info["dtype"], "features+audio": f"{info['dtype']} features + 16-bit PCM",
            "audio": "16-bit PCM only"}.get(info["content"], info["content"])


def _storage_lines(s: dict, dtype: str) -> list[str]:
    """Storage per hour of speech (PCM vs features vs offline copies), and at VoxCeleb2's scale."""
    mb, gb, vox = 1e6, 1e9, s["voxceleb2"]
    return [
        f"per hour    PCM {s['pcm'] / mb:.0f} MB; features {s['features'] / mb:.0f} MB ({dtype}); each offline "
        f"copy {s['offline_copy'] / mb:.0f} MB; this store {s['this_store'] / mb:.0f} MB",
        f"VoxCeleb2   {s['voxceleb2_hours']:,} h: PCM {vox['pcm'] / gb:.0f} GB; features {vox['features'] / gb:.0f} GB; "
        f"{vox['offline_copies']} offline copies {vox['copies'] / gb:.0f} GB ({vox['copies_float16'] / gb:.0f} GB "
        f"in float16)",
    ]


def _sources_line(specs: list[dict]) -> str:
    """What the copies were made from: `seed 0: reverb rirs (6 files), babble the list (40 files)`."""
    out = []
    for spec in specs:
        sources = ", ".join(f"{kind} {src.get('root')} ({src.get('files')} files)"
                            for kind, src in spec.get("sources", {}).items())
        line = f"seed {spec.get('seed')}: {sources}" if sources else f"seed {spec.get('seed')}"
        if line not in out:
            out.append(line)
    return "; ".join(out)


def _parts_line(parts: list[str]) -> str:
    """["1/4", "2/4", "4/4"] -> "3 of 4 (1, 2, 4)"; all of them -> "4 of 4"."""
    by_count: dict[int, list[int]] = {}
    for text in parts:
        index, count = map(int, text.split("/"))
        by_count.setdefault(count, []).append(index)
    out = []
    for count, indices in sorted(by_count.items()):
        line = f"{len(indices)} of {count}"
        if len(indices) < count:
            line += f" ({', '.join(map(str, sorted(indices)))})"
        out.append(line)
    return "; ".join(out)
