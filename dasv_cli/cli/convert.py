"""`dasv convert`: an original research-tool `.chkpt` -> a dasv checkpoint (numerics="original")."""

from __future__ import annotations

from pathlib import Path

import typer

EPILOG = """\b
Example:
  dasv convert models/exampleModel/model.chkpt -o original.pt
  dasv validate --model original.pt --features feats/ --trials veri_test.txt

The file is read with a restricted unpickler (tensors, plain values and argparse.Namespace only): anything else is refused and nothing in it runs.
"""


def register(app: typer.Typer) -> None:
    @app.command("convert", epilog=EPILOG)
    def convert(
        original: Path = typer.Argument(..., help="The original tool's checkpoint (.chkpt).", show_default=False),
        output: Path = typer.Option(..., "-o", "--output", help="Where to write the dasv checkpoint (.pt).", show_default=False),
        force: bool = typer.Option(False, "--force", help="Overwrite OUTPUT if it exists."),
        json_out: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
    ) -> None:
        """Convert an original DoubleAttentionSpeakerVerification checkpoint into a dasv checkpoint.

        The network keeps the original code's arithmetic (numerics "original"), so embeddings match
        the original tool's getEmbedding on the same (mean-normalised) features.
        """
        import json

        from dasv_cli.progress import log
        from dasv_cli.train.network import convert_checkpoint

        summary = convert_checkpoint(original, output, force)
        cfg = summary["model"]
        log(
            f"converted {original} -> {output}: {cfg['front_end']} K={cfg['kernel_size']}, {cfg['pooling']}"
            + (f" ({cfg['heads']} heads)" if cfg["pooling"] in ("DoubleMHA", "MHA") else "")
            + f", embedding {cfg['embedding_size']}, {cfg['num_speakers']} speakers, "
            f"{summary['parameters']:,} parameters, step {summary['step']}, numerics original, features {summary['norm']}"
        )
        if json_out:
            typer.echo(json.dumps(summary, indent=2))
