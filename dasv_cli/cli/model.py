"""`dasv model`: parameter counts per part and output sizes of a network configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

EPILOG = """\b
Examples:
  dasv model                      # the paper's network, 21.5 M parameters
  dasv model --pooling MHA --heads 16 --num-speakers 1211
  dasv model --front-end VGG3L --kernel-size 256 --json
  dasv model --from original.pt   # the network inside a checkpoint
"""


def register(app: typer.Typer) -> None:
    @app.command("model", epilog=EPILOG)
    def model(
        front_end: Optional[str] = typer.Option(None, "--front-end", help="VGG3L or VGG4L [paper: VGG4L]."),
        kernel_size: Optional[int] = typer.Option(None, "--kernel-size", help="Channels K of the last conv block [paper: 1024]."),
        pooling: Optional[str] = typer.Option(None, "--pooling", help="DoubleMHA, MHA, Attention or Statistical [paper: DoubleMHA]."),
        heads: Optional[int] = typer.Option(None, "--heads", help="Attention heads [paper: 32]."),
        embedding_size: Optional[int] = typer.Option(None, "--embedding-size", help="Embedding size [paper: 400]."),
        num_speakers: Optional[int] = typer.Option(None, "--num-speakers", help="Training speakers [paper: 5994]."),
        n_mels: Optional[int] = typer.Option(None, "--n-mels", help="Log-mel bands [paper: 80]."),
        numerics: Optional[str] = typer.Option(None, "--numerics", help="paper or original [default: original]."),
        source: Optional[Path] = typer.Option(
            None, "--from", help="Start from the config in a dasv checkpoint or an original .chkpt.", show_default=False
        ),
        frames: int = typer.Option(350, "--frames", help="Input length in frames for the output sizes (10 ms each)."),
        json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
    ) -> None:
        """Show a network's parameter counts (per part) and output sizes.

        Without options: the paper's Double MHA network. Options override single settings.
        """
        import json

        from dasv_cli.errors import UsageError
        from dasv_cli.model.network import ModelConfig, describe

        base = ModelConfig().to_dict()
        if source is not None:
            base = _config_from(source)
        overrides = {
            "front_end": front_end,
            "kernel_size": kernel_size,
            "pooling": pooling,
            "heads": heads,
            "embedding_size": embedding_size,
            "num_speakers": num_speakers,
            "n_mels": n_mels,
            "numerics": numerics,
        }
        base.update({k: v for k, v in overrides.items() if v is not None})
        try:
            summary = describe(ModelConfig.from_dict(base), frames=frames)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        if json_out:
            typer.echo(json.dumps(summary, indent=2))
        else:
            _print_table(summary)


def _config_from(path: Path) -> dict:
    from dasv_cli.io.checkpoint import load_checkpoint
    from dasv_cli.io.original import convert_original, is_original_checkpoint

    checkpoint = convert_original(path) if is_original_checkpoint(path) else load_checkpoint(path)
    return dict(checkpoint["config"]["model"])


def _print_table(summary: dict) -> None:
    from rich.table import Table

    from dasv_cli.progress import console

    cfg = summary["config"]
    title = f"{cfg['front_end']} K={cfg['kernel_size']} -> {cfg['pooling']}"
    if summary["head_size"]:
        title += f" ({cfg['heads']} heads of {summary['head_size']})"
    title += f" -> {cfg['embedding_size']}-d embedding, numerics {cfg['numerics']}"
    table = Table(title=title, title_justify="left")
    table.add_column("part")
    table.add_column("parameters", justify="right")
    table.add_column(f"output for {summary['sizes']['input'][0]} frames", justify="right")
    p, s = summary["parameters"], summary["sizes"]
    rows = [
        ("input", None, s["input"]),
        ("front_end", p["front_end"], s["front_end"]),
        ("pooling", p["pooling"], s["pooling"]),
        ("embedding_block", p["embedding_block"], s["embedding"]),
        ("classifier (AM-Softmax)", p["classifier"], s["logits"]),
    ]
    for name, count, size in rows:
        table.add_row(name, "" if count is None else f"{count:,}", " x ".join(map(str, size)))
    table.add_row("total", f"{p['total']:,} ({p['total'] / 1e6:.2f} M)", "", end_section=True)
    table.add_row("embedding extractor", f"{p['embedding_extractor']:,}", "")
    console().print(table)
    console().print(f"shortest input: {summary['min_frames']} frames")
