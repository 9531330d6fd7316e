"""`dasv model`: parameter counts per part and output sizes of a network configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

EPILOG = """\b
Examples:
  dasv model                      # the paper's network, 21.5 M parameters
  dasv model --pooling MHA --heads 16 --num-speakers 1211
  dasv model --front-end VGG3L --kernel-size 256 --json
  dasv model --front-end ResNet34 --pooling Statistical --head linear --embedding-size 256
  dasv model --front-end ECAPA --kernel-size 1024 --pooling ASTP --head bn-linear --embedding-size 192
  dasv model --from original.pt   # the network inside a checkpoint
"""


def register(app: typer.Typer) -> None:
    from dasv_cli.cli.network_options import network_options

    @app.command("model", epilog=EPILOG)
    @network_options("shape", "data")
    def model(
        source: Optional[Path] = typer.Option(
            None, "--from", metavar="CKPT", help="Start from the config in a dasv checkpoint or an original .chkpt.", show_default=False
        ),
        frames: int = typer.Option(350, "--frames", help="Input length in frames for the output sizes (10 ms each)."),
        json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
        **network: Any,
    ) -> None:
        """Show a network's parameter counts (per part), output sizes and multiply-accumulates.

        Without options: the paper's Double MHA network. Options override single settings. The table
        goes to stderr; stdout gets the network's options as TOML, which `dasv train --config` reads.
        """
        import json

        from dasv_cli.train.network import network_summary

        summary = network_summary(network, source, frames)
        if json_out:
            typer.echo(json.dumps(summary, indent=2))
        else:
            from dasv_cli.progress import stdout_write
            from dasv_cli.train.config_text import network_toml

            _print_table(summary)
            stdout_write(network_toml(summary["config"]))


def _print_table(summary: dict) -> None:
    from rich.table import Table

    from dasv_cli.progress import console

    cfg = summary["config"]
    title = f"{cfg['front_end']} K={cfg['kernel_size']} -> {cfg['pooling']}"
    if summary["head_size"]:
        title += f" ({cfg['heads']} heads of {summary['head_size']})"
    title += f" -> {cfg['head']} head, {cfg['embedding_size']}-d embedding, numerics {cfg['numerics']}"
    table = Table(title=title, title_justify="left")
    table.add_column("part")
    table.add_column("parameters", justify="right")
    table.add_column(f"output for {summary['sizes']['input'][0]} frames", justify="right")
    p, s = summary["parameters"], summary["sizes"]
    rows = [
        ("input", None, s["input"]),
        ("front_end", p["front_end"], s["front_end"]),
        ("pooling", p["pooling"], s["pooling"]),
        ("embedding head", p["embedding_block"], s["embedding"]),
        ("classifier (AM-Softmax)", p["classifier"], s["logits"]),
    ]
    for name, count, size in rows:
        table.add_row(name, "" if count is None else f"{count:,}", " x ".join(map(str, size)))
    table.add_row("total", f"{p['total']:,} ({p['total'] / 1e6:.2f} M)", "", end_section=True)
    table.add_row("embedding extractor", f"{p['embedding_extractor']:,}", "")
    console().print(table)
    macs, time = summary["macs"], summary["time"]
    console().print(f"compute: {macs['per_second'] / 1e9:.3g} G multiply-accumulates (MACs) per second of input "
                    f"(FLOPs = 2 x MACs; WeSpeaker's tables give MACs); {macs['input'] / 1e9:.3g} G for "
                    f"{s['input'][0]} frames")
    console().print(f"shortest input: {summary['min_frames']} frames; time stride {time['stride']}, receptive "
                    f"field {time['receptive_field']} frames" + (", time-global (SE)" if time["global"] else ""))
